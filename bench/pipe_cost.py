"""The pipe's cost on the sending worker (sfu/pipe.py Pipe.rtp): one 1.1 kB packet of a simulcast layer handed to a
pipe connected to a loopback socket, timed over 2000 packets, 5 runs (the send syscall and the kernel's loopback
delivery dominate).

    PYTHONPATH=$PWD .venv/bin/python -m bench.pipe_cost
"""

import asyncio
import socket
import struct
import time

from sfu.codecs import CodecInfo
from sfu.ice import IceConfig
from sfu.producer import Producer
from sfu.router import Router
from sfu.rtp import parse_rtp


async def _no_rtcp(data: bytes) -> bool:
    return True


def _vp8(seq: int, ts: int, ssrc: int) -> bytes:
    """A VP8 inter frame's packet with a 1100-byte payload (a camera layer's typical size)."""
    return (struct.pack("!BBHII", 0x80, 0x80 | 96, seq, ts, ssrc) + bytes([0x90, 0x80, 0x80, seq & 0xFF])
            + bytes([0x01, 0, 0]) + bytes(1100))


async def main() -> None:
    near = Router("RM_c", IceConfig())
    producer = Producer("TR_cam", "teacher-key", "teacher", "camera", "0", CodecInfo("video/VP8", 90000, 96), None,
                        None, None, 7, _no_rtcp, rids=["q", "h", "f"])
    for i, stream in enumerate(producer.streams):
        stream.ssrc = 0x1000 * (i + 1)
    await near.add_producer(producer)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    pipe = near.open_pipe(1)
    pipe.connect(sink.getsockname()[1])
    stream = producer.streams[2]
    packets = [_vp8(i & 0xFFFF, 3000 * i, 0x3000) for i in range(2000)]
    headers = [parse_rtp(p) for p in packets]
    best: list[float] = []
    for run in range(5):
        t0 = time.perf_counter()
        for p, h in zip(packets, headers, strict=True):
            pipe.rtp(stream, p, h, 1.0 + run)
        best.append((time.perf_counter() - t0) / len(packets) * 1e6)
        sink.setblocking(False)
        try:
            while True:
                sink.recv(2048)
        except BlockingIOError:
            pass
    print("pipe.rtp us/packet (5 runs of 2000):", [round(x, 2) for x in best], "sent", pipe.rtp_sent,
          "errors", pipe.send_errors)
    await near.close()

if __name__ == "__main__":
    asyncio.run(main())
