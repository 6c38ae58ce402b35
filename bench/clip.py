"""The benchmark's pre-encoded lesson clip: generated once with PyAV, packetized, cached.

Camera: 3 s of 720p30 H.264 (constrained baseline, Annex B, SPS/PPS with every IDR) or VP8 (realtime, for targets
and comparisons run in VP8), one keyframe at the start (so one keyframe every 3 s when looped), as three simulcast
layers q/h/f (320x180 @150 kbit/s, 640x360 @500 kbit/s,
1280x720 @1.5 Mbit/s). Microphone: 3 s of Opus at 32 kbit/s in 20 ms frames. Screen: 3 s of 1080p at 5 fps, one
layer. Each frame is stored already split into RTP payloads (aiortc's own packetizers), so the publisher only
adds headers and paces them (and, for VP8, writes a running picture id: see vp8_picture_id).
"""

from __future__ import annotations

import fractions
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

VERSION = 3
CODECS = ("h264", "vp8")
SECONDS = 3
LAYERS = (("q", 320, 180, 150_000), ("h", 640, 360, 500_000), ("f", 1280, 720, 1_500_000))


@dataclass
class Track:
    fps: float  # frames (or audio packets) per second
    clock_rate: int
    frames: list[tuple[bool, list[bytes]]]  # (keyframe, RTP payloads)
    codec: str = "h264"  # h264, vp8 or opus

    @property
    def bitrate(self) -> float:
        return sum(len(p) for _, ps in self.frames for p in ps) * 8 * self.fps / len(self.frames)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "classcast" / "bench"


def _picture(width: int, height: int, i: int, rng: np.random.Generator) -> np.ndarray:
    """A teacher-like picture: a still background with texture, and a moving block (the teacher's hand)."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(1, width - 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(1, height - 1)).astype(np.uint8)
    img[..., 2] = ((x // 16 + y // 16) % 2 * 80 + 60).astype(np.uint8)
    bw, bh = width // 5, height // 4
    bx = int((width - bw) * (0.5 + 0.5 * np.sin(i / 15)))
    by = int((height - bh) * (0.5 + 0.5 * np.cos(i / 20)))
    img[by:by + bh, bx:bx + bw] = rng.integers(0, 255, (bh, bw, 3), np.uint8)  # noise: real bits to send
    return img


def _video(name: str, width: int, height: int, fps: int, bitrate: int) -> av.video.codeccontext.VideoCodecContext:
    codec = av.CodecContext.create(name, "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.bit_rate = bitrate
    return codec


def _encode(codec: Any, frames: int, packetize: Any) -> list[tuple[bool, list[bytes]]]:
    """frames pictures through the encoder, each encoded frame split into RTP payloads by packetize(data, index)."""
    rng = np.random.default_rng(codec.width)
    out: list[tuple[bool, list[bytes]]] = []
    for i in range(frames + 1):
        frame = None
        if i < frames:
            frame = av.VideoFrame.from_ndarray(_picture(codec.width, codec.height, i, rng), format="rgb24").reformat(
                format="yuv420p")
            frame.pts = i
        for packet in codec.encode(frame):
            out.append((bool(packet.is_keyframe), packetize(bytes(packet), len(out))))
    assert len(out) == frames and out[0][0] and not any(k for k, _ in out[1:]), "one keyframe, at the start"
    return out


def _h264(width: int, height: int, fps: int, bitrate: int, frames: int) -> list[tuple[bool, list[bytes]]]:
    from aiortc.codecs.h264 import H264Encoder

    codec = _video("libx264", width, height, fps, bitrate)
    codec.profile = "baseline"
    codec.options = {"preset": "veryfast", "tune": "zerolatency", "level": "31",
                     "x264-params": f"keyint={frames}:min-keyint={frames}:scenecut=0:repeat-headers=1:bframes=0:"
                                    f"vbv-maxrate={bitrate // 1000}:vbv-bufsize={bitrate // 1000}:nal-hrd=none"}
    return _encode(codec, frames, lambda data, _: H264Encoder._packetize(H264Encoder._split_bitstream(data)))


def _opus(seconds: int) -> list[tuple[bool, list[bytes]]]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48000, "mono", "s16"
    codec.bit_rate = 32_000
    n = 960
    t = np.arange(48000 * seconds)
    voice = (np.sin(2 * np.pi * 180 * t / 48000) * (1 + np.sin(2 * np.pi * 3 * t / 48000)) * 6000
             + np.random.default_rng(1).normal(0, 600, t.size)).astype(np.int16)
    out = []
    for i in range(0, voice.size, n):
        frame = av.AudioFrame.from_ndarray(voice[i:i + n].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i
        out += [(False, [bytes(p)]) for p in codec.encode(frame)]
    out += [(False, [bytes(p)]) for p in codec.encode(None)]
    return out[: seconds * 50]


def _vp8(width: int, height: int, fps: int, bitrate: int, frames: int) -> list[tuple[bool, list[bytes]]]:
    from aiortc.codecs.vpx import Vp8Encoder

    codec = _video("libvpx", width, height, fps, bitrate)
    codec.gop_size = frames
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0",
                     "error-resilient": "1", "keyint_min": str(frames), "maxrate": str(bitrate),
                     "minrate": str(bitrate // 4), "bufsize": str(bitrate)}
    # a two-byte picture id (>= 128) so that vp8_picture_id can rewrite it in place
    return _encode(codec, frames, lambda data, index: Vp8Encoder._packetize(data, 0x4000 + index))


def vp8_picture_id(payload: bytes, picture_id: int) -> bytes:
    """The payload with its 15-bit picture id set (aiortc's descriptor: X, I, M set; id in bytes 2-3).

    A looped clip would send the same ids again every few seconds, which an SFU that rewrites them per
    subscriber (Janus) reads as reordering; real publishers count on.
    """
    return payload[:2] + (0x8000 | (picture_id & 0x7FFF)).to_bytes(2, "big") + payload[4:]


def build(codec: str = "h264") -> dict[str, Track]:
    encode = {"h264": _h264, "vp8": _vp8}[codec]
    clip = {rid: Track(30, 90000, encode(w, h, 30, rate, 30 * SECONDS), codec) for rid, w, h, rate in LAYERS}
    clip["audio"] = Track(50, 48000, _opus(SECONDS), "opus")
    clip["screen"] = Track(5, 90000, encode(1920, 1080, 5, 1_000_000, 5 * SECONDS), codec)
    return clip


def load(codec: str = "h264") -> dict[str, Track]:
    """The clip from the cache, built first if missing (a few seconds of encoding, once per machine and codec)."""
    path = cache_dir() / f"clip-v{VERSION}-{codec}.pickle"
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f)  # our own cache file, written below
    clip = build(codec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two runs may build it at once
    with tmp.open("wb") as f:
        pickle.dump(clip, f)
    tmp.replace(path)
    return clip


if __name__ == "__main__":
    from bench import clip as _self  # pickle the classes under their importable name, not __main__

    for codec in CODECS:
        for name, track in _self.load(codec).items():
            print(f"{codec} {name}: {len(track.frames)} frames, {track.bitrate / 1000:.0f} kbit/s, "
                  f"{sum(len(p) for _, p in track.frames)} packets")
