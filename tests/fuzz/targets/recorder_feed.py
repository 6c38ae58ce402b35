"""The recorder's feed as a recording job reads it: messages packed by the server (`sfu.wire.pack`, the feed's
framing), read back by the recorder's streaming decoder (`sfu.wire.unpacker`) and handled by `Job._handle`: reorder
buffer, depacketizers (H.264, VP8, Opus) and the track clock. What a publisher controls is fuzzed: the packet bytes, its
sender reports, mutes; the message structure is the server's. An exception here fails the recording (Job._run
catches it and reports `failed`), so any exception is a finding. The encoder behind the job (PyAV) is not fuzzed:
the sink here counts frames.

Input: records of [op, track, length (2 bytes), bytes]; op 0 rtp, 1 sender report (8-byte NTP, 4-byte RTP time),
2 track mute, 3 participant mute. Tracks: H.264 camera, VP8 screen, Opus microphone."""

from __future__ import annotations

import struct
from typing import Any

INSTRUMENT = ("recorder.depacketize", "recorder.timeline", "recorder.job", "sfu.wire", "sfu.rtp")
BOUND_MS = 100.0
STATELESS = True

job_module: Any = None
feed: Any = None
TRACKS = [
    {"trackId": "TR_cam", "uid": "teacher", "source": "camera", "kind": "video",
     "codec": {"mimeType": "video/H264", "clockRate": 90000}, "name": "Teacher", "role": "TEACHER"},
    {"trackId": "TR_scr", "uid": "teacher", "source": "screen", "kind": "video",
     "codec": {"mimeType": "video/VP8", "clockRate": 90000}, "name": "Teacher", "role": "TEACHER"},
    {"trackId": "TR_mic", "uid": "teacher", "source": "microphone", "kind": "audio",
     "codec": {"mimeType": "audio/opus", "clockRate": 48000}, "name": "Teacher", "role": "TEACHER"},
]


class CountingSink:
    def __init__(self) -> None:
        self.frames = 0

    def track_added(self, info: Any) -> None:
        pass

    def track_removed(self, track_id: str) -> None:
        pass

    def frame(self, info: Any, frame: Any, seconds: float) -> None:
        assert isinstance(frame.data, bytes)
        self.frames += 1

    def tick(self, seconds: float) -> None:
        pass

    def finish(self, seconds: float) -> list[dict[str, Any]]:
        return []


def setup() -> None:
    global job_module, feed
    from recorder import job
    from sfu import wire as f

    job_module, feed = job, f


def _job() -> Any:
    import queue

    job = job_module.Job.__new__(job_module.Job)  # without its thread and its encoder: the sink is counted
    job.id, job.t0, job.mode, job.dir = "EG_fuzz", 0.0, "composite", None
    job.emit = lambda message: feed.pack(message)
    job.tracks, job.offsets, job.peers, job.muted, job.early_reports = {}, {}, {}, set(), {}
    job.inbox = queue.Queue()
    job.sink = CountingSink()
    return job


def _messages(data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"t": "track", "j": "EG_fuzz", "track": t} for t in TRACKS]
    pos, arrival = 0, 1.0
    while pos + 4 <= len(data):
        op, track, length = data[pos] % 4, TRACKS[data[pos + 1] % 3]["trackId"], data[pos + 2] << 8 | data[pos + 3]
        body = data[pos + 4 : pos + 4 + length]
        pos += 4 + length
        arrival += 0.01
        if op == 0:
            out.append({"t": "rtp", "j": "EG_fuzz", "id": track, "d": body, "a": arrival})
        elif op == 1 and len(body) >= 12:
            ntp, rtp_ts = struct.unpack_from("!QI", body)
            if len(body) > 12 and body[12] & 1:  # a report for a track not added (yet): kept, bounded
                track = f"TR_later{body[12]}"
            clock = body[13] % 4 if len(body) > 13 else 0  # a simulcast feed's clock after a guessed switch
            out.append({"t": "sr", "j": "EG_fuzz", "id": track, "ntp": ntp, "rtp": rtp_ts, "a": arrival, "c": clock})
        elif op == 2:
            out.append({"t": "tmute", "j": "EG_fuzz", "id": track, "muted": bool(body[:1] and body[0] & 1)})
        elif op == 3:
            out.append({"t": "mute", "j": "EG_fuzz", "uid": "teacher", "muted": bool(body[:1] and body[0] & 1)})
    out.append({"t": "untrack", "j": "EG_fuzz", "id": "TR_mic"})
    return out


def one_input(data: bytes) -> None:
    decoder = feed.unpacker()
    decoder.feed(b"".join(feed.pack(m) for m in _messages(data)))
    job = _job()
    for message in decoder:
        job._handle(message)
    assert len(job.early_reports) <= job_module.EARLY_REPORTS
    job._advance(2.0)
    job._finish(3.0)
