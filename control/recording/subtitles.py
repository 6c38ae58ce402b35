"""Subtitles for recordings: the live captions of a recording's span as a WebVTT file next to its MP4s, and as a
`mov_text` track muxed into the composite MP4 so that ordinary players (QuickTime, VLC, browsers) offer it.

The captions are final when the recording ends, so both are written then, from the stored transcript: the WebVTT
file directly, the subtitle track by remuxing the finished composite (packets copied, nothing decoded) into a new
file that replaces the old one atomically. A failure leaves the MP4 as it was. Times are seconds on the recording's
timeline (0 = the job's start, the same origin the recorder's timeline uses).
"""

from __future__ import annotations

import contextlib
import fractions
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import av

SUBTITLE_TB = fractions.Fraction(1, 1000)


@dataclass(frozen=True, slots=True)
class Cue:
    start: float  # seconds on the recording's timeline
    end: float
    speaker: str
    text: str


def cues_for(segments: list[dict[str, object]], names: dict[str, str], started_ms: int,
             ended_ms: int | None) -> list[Cue]:
    """Transcript segments ({uid, text, started_at, ended_at} in Unix ms) overlapping the recording, clipped to it."""
    out = []
    for s in segments:
        a, b = int(s["started_at"]), int(s["ended_at"])  # type: ignore[call-overload]
        if b <= started_ms or (ended_ms is not None and a >= ended_ms):
            continue
        if ended_ms is not None:
            b = min(b, ended_ms)
        start = max(0, a - started_ms) / 1000
        end = max(start + 0.5, (b - started_ms) / 1000)  # a cue too short to read is held half a second
        uid = str(s["uid"])
        out.append(Cue(start, end, names.get(uid, uid), str(s["text"]).strip()))
    return [c for c in out if c.text]


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _escape(text: str) -> str:
    return " ".join(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").split())


def webvtt(cues: list[Cue]) -> str:
    """WebVTT (W3C): one cue per caption, the speaker as a voice span (<v Marie>), which players show or style."""
    lines = ["WEBVTT", ""]
    for i, c in enumerate(cues, 1):
        lines += [str(i), f"{_vtt_time(c.start)} --> {_vtt_time(c.end)}",
                  f"<v {_escape(c.speaker).replace('>', '')}>{_escape(c.text)}", ""]
    return "\n".join(lines)


def write_webvtt(path: Path, cues: list[Cue]) -> int:
    """Writes atomically (a reader never sees half a file); returns the size."""
    tmp = path.with_suffix(".vtt.part")
    tmp.write_text(webvtt(cues), encoding="utf-8")
    os.replace(tmp, path)
    return path.stat().st_size


def mov_text_sample(text: str) -> bytes:
    """A 3GPP timed-text sample (ISO/IEC 14496-17): 16-bit big-endian length, then the UTF-8 text."""
    data = text.encode("utf-8")[:65535]
    return struct.pack(">H", len(data)) + data


def mux_mov_text(mp4: Path, cues: list[Cue]) -> None:
    """Rewrites `mp4` with a `mov_text` subtitle track (language 'und', titled Captions) holding `cues`. The
    audio and video packets are copied as they are. Raises on failure, leaving `mp4` untouched."""
    if not cues:
        return
    tmp = mp4.with_name(mp4.stem + ".subtitled.part")
    try:
        with av.open(str(mp4)) as src, av.open(str(tmp), "w", format="mp4") as dst:
            pairs = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")}
            sub = dst.add_mux_stream("mov_text")
            sub.time_base = SUBTITLE_TB
            sub.metadata["title"] = "Captions"
            sub.metadata["handler_name"] = "Captions"
            # One sample at a time: a cue ends where the next begins (a timed-text track shows one sample).
            ordered = sorted(cues, key=lambda c: c.start)
            queue = [Cue(c.start, min(c.end, n.start) if n.start > c.start else c.end, c.speaker, c.text)
                     for c, n in zip(ordered, [*ordered[1:], Cue(float("inf"), 0, "", "")], strict=True)]
            for packet in src.demux(*[s for s in src.streams if s.index in pairs]):
                if packet.dts is None:
                    continue
                now = float(packet.dts * packet.time_base)
                while queue and queue[0].start <= now:
                    _mux_cue(dst, sub, queue.pop(0))
                packet.stream = pairs[packet.stream.index]
                dst.mux(packet)
            for cue in queue:
                _mux_cue(dst, sub, cue)
        os.replace(tmp, mp4)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _mux_cue(dst: av.container.OutputContainer, stream: av.stream.Stream, cue: Cue) -> None:
    packet = av.Packet(mov_text_sample(f"{cue.speaker}: {cue.text}"))
    packet.stream = stream
    packet.time_base = SUBTITLE_TB
    packet.pts = packet.dts = round(cue.start * 1000)
    packet.duration = max(1, round((cue.end - cue.start) * 1000))
    dst.mux(packet)
