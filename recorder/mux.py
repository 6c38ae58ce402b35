"""MP4 writing with PyAV: track mode (no re-encoding where MP4 allows it) and composite mode (decode, compose, mix,
encode H.264 + AAC). Runs only in the recorder process: this is the one place media is ever decoded.

Every file is fragmented MP4 (`frag_keyframe` + a fragment at least every second, `delay_moov` so that the H.264
parameter sets of the first keyframe make the header): a recorder killed at any moment leaves a file that plays up
to its last complete fragment.
"""

from __future__ import annotations

import fractions
import logging
import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from control.recording.options import PRESETS
from recorder.depacketize import Frame
from recorder.font import place_text
from recorder.layout import FPS, Tile, fit, grid, speaker

log = logging.getLogger("classcast.recorder.mux")

MP4_OPTIONS = {"movflags": "frag_keyframe+delay_moov+default_base_moof", "frag_duration": "1000000",
               "flush_packets": "1"}  # each fragment reaches the disk at once, not when a buffer fills
VIDEO_TB = fractions.Fraction(1, 90000)
AUDIO_RATE = 48000
AAC_FRAME = 1024
STALE_S = 1.0  # a video track with no new picture for this long shows its owner's name instead
# The largest picture recorded as it is: a bigger one (a header may claim 16383x16383) is scaled down to it in a track
# file and left out of a composite, whose tiles are smaller anyway. Decoded 8192x8192 pictures cost seconds each.
MAX_PIXELS = 3840 * 2160
BACKGROUND = (24, 24, 24)
NAME_TILE = (52, 58, 74)
Emit = Callable[[dict[str, Any]], None]


def open_mp4(path: Path) -> av.container.OutputContainer:
    path.parent.mkdir(parents=True, exist_ok=True)
    return av.open(str(path), "w", format="mp4", options=dict(MP4_OPTIONS))


def file_size(path: Path) -> int:
    """0 for a file never created: PyAV opens the output only with the first packet (a job stopped at once)."""
    return path.stat().st_size if path.is_file() else 0


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64] or "track"


@dataclass
class TrackInfo:
    """What the recorder knows of a track (from the SFU's description, plus the owner's name and role)."""

    id: str
    uid: str
    source: str
    kind: str
    mime: str
    clock_rate: int
    name: str
    role: str
    size: tuple[int, int] | None = None  # the largest picture the SFU has seen of it (simulcast: the top layer)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrackInfo:
        codec = d.get("codec") or {}
        return cls(id=str(d["trackId"]), uid=str(d.get("uid", "")), source=str(d.get("source", "camera")),
                   kind=str(d.get("kind", "video")), mime=str(codec.get("mimeType", "")),
                   clock_rate=int(codec.get("clockRate") or 90000), name=str(d.get("name") or d.get("uid") or ""),
                   role=str(d.get("role") or ""), size=_size(d.get("size")))


def _size(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and 0 < v <= 8192
                                                                     for v in value):
        return int(value[0]), int(value[1])
    return None


def _within(w: int, h: int) -> tuple[int, int]:
    """An encodable size for a w x h picture: even, at least 2x2, and at most MAX_PIXELS (scaled down, its shape
    kept). A VP8 picture one pixel high made a 0-high file, which the encoder refused, and the whole job failed."""
    if w * h > MAX_PIXELS:
        scale = math.sqrt(MAX_PIXELS / (w * h))
        w, h = int(w * scale), int(h * scale)
    return max(2, w // 2 * 2), max(2, h // 2 * 2)


def _fits_avcc(annexb: bytes) -> bool:
    """Whether an MP4's avcC can describe this first keyframe's parameter sets (at most 31 SPS and 255 PPS, each
    under 64 KiB): past that the muxer wrote an empty avcC, and the file, reported as good, did not open."""
    units = [u.rstrip(b"\x00") for u in annexb.split(b"\x00\x00\x01") if u]
    sps = [u for u in units if u and u[0] & 0x1F == 7]
    pps = [u for u in units if u and u[0] & 0x1F == 8]
    return len(sps) <= 31 and len(pps) <= 255 and all(len(u) < 65536 for u in sps + pps)


def _x264(stream: Any, crf: int = 23) -> None:
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = 2 * FPS  # a keyframe (and so a fragment) at least every 2 s
    # superfast: 1080p30 composite stays under one core here (bench/RESULTS.md); veryfast did not.
    stream.codec_context.options = {"preset": "superfast", "crf": str(crf), "bf": "0"}


# ---- track mode ------------------------------------------------------------------------------------------------


class TrackFile:
    """One published track in its own MP4, on the recording's timeline (the first sample's time is kept)."""

    def __init__(self, info: TrackInfo, path: Path, emit: Emit, job_id: str) -> None:
        self.info, self.path, self.emit, self.job_id = info, path, emit, job_id
        self.container: av.container.OutputContainer | None = None
        self.stream: Any = None
        self.decoder: av.CodecContext | None = None
        self.last_pts = -1
        self.first_s: float | None = None
        self.last_s = 0.0
        self.size: tuple[int, int] | None = None

    def _open(self) -> None:
        self.container = open_mp4(self.path)
        self.emit({"t": "file", "j": self.job_id, "path": str(self.path), "label": self.label})

    @property
    def label(self) -> str:
        return f"{self.info.uid}-{self.info.source}"

    def _pts(self, seconds: float, rate: int) -> int:
        pts = max(0, round(seconds * rate))
        if pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        return pts

    def write(self, frame: Frame, seconds: float) -> bool:
        """Returns True when the frame reached the file. Sound from before the recording started (packets that
        queued during a stall and came in at its start) is left out: squeezed in at time 0 it would play first
        and push everything after it late in a player that plays audio back to back."""
        mime = self.info.mime.lower()
        if seconds < 0 and mime == "audio/opus":
            return False
        if self.first_s is None:
            self.first_s = seconds
        self.last_s = max(self.last_s, seconds)
        if mime == "video/h264":
            return self._h264(frame, seconds)
        if mime == "video/vp8":
            return self._transcode(frame, seconds)
        if mime == "audio/opus":
            return self._opus(frame, seconds)
        return False

    def _h264(self, frame: Frame, seconds: float) -> bool:
        if self.container is None:
            # The first keyframe carries SPS/PPS: its size sets the track's; later SPS changes stay in band
            # (each keyframe repeats its parameter sets), so a decoder follows a resolution change.
            decoder = av.CodecContext.create("h264", "r")
            try:
                pictures = decoder.decode(av.Packet(frame.data)) if _fits_avcc(frame.data) else None
            except av.error.FFmpegError:  # not H.264 a decoder takes
                pictures = None
            if pictures is None:  # ask for the next keyframe (throttled there)
                if frame.keyframe:
                    self.emit({"t": "keyframe", "j": self.job_id, "id": self.info.id})
                return False
            width, height = (pictures[0].width, pictures[0].height) if pictures else (decoder.width, decoder.height)
            if not width:
                return False
            self._open()
            assert self.container is not None
            self.stream = self.container.add_mux_stream("h264", width=width, height=height)
            self.stream.time_base = VIDEO_TB
        packet = av.Packet(frame.data)
        packet.pts = packet.dts = self._pts(seconds, 90000)
        packet.time_base = VIDEO_TB
        packet.stream = self.stream
        if frame.keyframe:
            packet.is_keyframe = True
        assert self.container is not None
        self.container.mux(packet)
        return True

    def _transcode(self, frame: Frame, seconds: float) -> bool:
        """VP8 cannot go in an MP4: decode it and encode H.264 at one size for the whole file: the track's top
        layer's when the SFU knows it (the feed may begin on a lower layer while the top one resumes), else
        the first picture's."""
        if self.decoder is None:
            self.decoder = av.CodecContext.create("vp8", "r")
        try:
            pictures = self.decoder.decode(av.Packet(frame.data))
        except av.error.FFmpegError:
            return False
        for picture in pictures:
            if self.container is None:
                self._open()
                assert self.container is not None
                w, h = picture.width, picture.height
                if self.info.size is not None and self.info.size[0] * self.info.size[1] > w * h:
                    w, h = self.info.size
                self.size = _within(w, h)
                self.stream = self.container.add_stream("libx264", rate=FPS)
                self.stream.width, self.stream.height = self.size
                _x264(self.stream)
                self.stream.codec_context.time_base = VIDEO_TB
            out = picture.reformat(width=self.size[0], height=self.size[1], format="yuv420p")  # type: ignore[index]
            out.pts = self._pts(seconds, 90000)
            out.time_base = VIDEO_TB
            for packet in self.stream.encode(out):
                self.container.mux(packet)  # type: ignore[union-attr]
        return bool(pictures)

    def _opus(self, frame: Frame, seconds: float) -> bool:
        if self.container is None:
            self._open()
            assert self.container is not None
            # An Opus encoder context only to describe the stream (its OpusHead); packets are muxed as received.
            self.stream = self.container.add_stream("libopus", rate=AUDIO_RATE, layout="stereo")
            self.stream.time_base = fractions.Fraction(1, AUDIO_RATE)
        packet = av.Packet(frame.data)
        packet.pts = packet.dts = self._pts(seconds, AUDIO_RATE)
        packet.time_base = fractions.Fraction(1, AUDIO_RATE)
        packet.duration = 960
        packet.stream = self.stream
        assert self.container is not None
        self.container.mux(packet)
        return True

    def close(self) -> dict[str, Any] | None:
        if self.container is None:
            return None
        try:
            if self.info.mime.lower() == "video/vp8" and self.stream is not None:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()
        duration = (self.last_s - (self.first_s or 0.0)) if self.first_s is not None else 0.0
        return {"path": str(self.path), "label": self.label, "size": file_size(self.path),
                "duration": round(duration, 3)}


class TrackSink:
    """Track mode: every track in its own file; a track that comes back (rejoin) gets a new file."""

    def __init__(self, job_id: str, directory: Path, emit: Emit) -> None:
        self.job_id, self.dir, self.emit = job_id, directory, emit
        self.files: dict[str, TrackFile] = {}
        self.closed: list[dict[str, Any]] = []
        self.active = False
        self._count = 0

    def track_added(self, info: TrackInfo) -> None:
        self._count += 1
        path = self.dir / f"{self._count:02d}-{_safe(info.uid)}-{_safe(info.source)}.mp4"
        self.files[info.id] = TrackFile(info, path, self.emit, self.job_id)

    def track_removed(self, track_id: str) -> None:
        f = self.files.pop(track_id, None)
        if f is not None:
            self._close(f)

    def frame(self, info: TrackInfo, frame: Frame, seconds: float) -> None:
        f = self.files.get(info.id)
        try:
            written = f is not None and f.write(frame, seconds)
        except (av.error.FFmpegError, ValueError) as exc:  # a frame the scaler or encoder refuses is lost alone:
            # one track's bad frame never ends the others' files
            log.warning("job %s: a frame of %s was not written: %s", self.job_id, info.id, exc)
            written = False
        if written and not self.active:
            self.active = True
            self.emit({"t": "active", "j": self.job_id})

    def tick(self, now: float) -> None:
        pass

    def _close(self, f: TrackFile) -> None:
        try:
            result = f.close()
        except Exception:
            log.exception("closing %s failed", f.path)
            result = None
        if result is not None:
            self.closed.append(result)

    def finish(self, end: float) -> list[dict[str, Any]]:
        for f in list(self.files.values()):
            self._close(f)
        self.files.clear()
        return self.closed


# ---- composite mode --------------------------------------------------------------------------------------------


@dataclass
class VideoInput:
    info: TrackInfo
    decoder: av.CodecContext
    pending: deque[tuple[float, av.VideoFrame]] = field(default_factory=deque)
    current: av.VideoFrame | None = None
    current_t: float = -math.inf
    cache: tuple[int, tuple[int, int], tuple[np.ndarray, ...]] | None = None

    def picture(self, w: int, h: int) -> tuple[np.ndarray, ...]:
        """The current picture at w x h as (Y, U, V) planes, scaled once per picture and size."""
        assert self.current is not None
        key = (id(self.current), (w, h))
        if self.cache is None or self.cache[:2] != key:
            scaled = self.current.reformat(width=w, height=h, format="yuv420p").to_ndarray()
            self.cache = (key[0], key[1], i420_planes(scaled, w, h))
        return self.cache[2]


@dataclass
class AudioInput:
    info: TrackInfo
    decoder: av.CodecContext
    resampler: av.AudioResampler
    segments: deque[tuple[int, np.ndarray]] = field(default_factory=deque)  # (first sample, float32 (2, n))
    level: float = 0.0
    level_at: float = -math.inf


def i420_planes(buffer: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of a packed I420 (yuv420p) buffer of a w x h picture."""
    flat = buffer.reshape(-1)
    q = w * h // 4
    return (flat[:w * h].reshape(h, w), flat[w * h:w * h + q].reshape(h // 2, w // 2),
            flat[w * h + q:w * h + 2 * q].reshape(h // 2, w // 2))


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited range, as swscale converts: the colours we draw match the pictures we copy."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return np.stack([y, u, v], axis=-1)


BACKGROUND_YUV, NAME_TILE_YUV, WHITE_YUV = (tuple(round(float(c)) for c in rgb_to_yuv(np.array(color)))
                                            for color in (BACKGROUND, NAME_TILE, (255, 255, 255)))


def load_logo(path: str | None, height: int) -> np.ndarray | None:
    """The organization's logo as RGBA, `height` pixels tall; None (and a warning) when it cannot be read."""
    if not path:
        return None
    try:
        with av.open(path) as container:
            image = next(container.decode(video=0))
        w = max(2, round(image.width * height / image.height / 2) * 2)
        return image.reformat(width=w, height=height, format="rgba").to_ndarray()
    except Exception as exc:
        log.warning("logo %s unreadable, recording without watermark: %s", path, exc)
        return None


class CompositeSink:
    """Composite mode: what participants see, per layout, at the preset's size and 30 fps; every microphone mixed."""

    def __init__(self, job_id: str, directory: Path, emit: Emit, layout: str, preset: str,
                 logo: str | None) -> None:
        self.job_id, self.emit, self.layout = job_id, emit, layout
        self.width, self.height = PRESETS[preset]
        self.path = directory / "composite.mp4"
        self.container = open_mp4(self.path)
        self.emit({"t": "file", "j": job_id, "path": str(self.path), "label": "composite"})
        self.had_tracks = False  # any track at all while it ran (a muted camera still shows its owner's name)
        self.video = self.container.add_stream("libx264", rate=FPS)
        self.video.width, self.video.height = self.width, self.height
        _x264(self.video)
        self.audio = self.container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        self.audio.bit_rate = 128_000
        self.logo = load_logo(logo, max(2, self.height // 12 // 2 * 2))
        self._logo_yuv: list[tuple[np.ndarray, np.ndarray]] = []
        if self.logo is not None:
            yuv = rgb_to_yuv(self.logo[:, :, :3])
            alpha = self.logo[:, :, 3].astype(np.float32) / 255.0 * 0.8
            self._logo_yuv = [(yuv[:, :, 0], alpha)] + [(yuv[::2, ::2, i], alpha[::2, ::2]) for i in (1, 2)]
        self.videos: dict[str, VideoInput] = {}
        self.audios: dict[str, AudioInput] = {}
        self.people: dict[str, TrackInfo] = {}  # uid -> a track of theirs (name, role), in order of arrival
        self.next_frame = 0
        self.next_chunk = 0
        self.speaker_uid: str | None = None
        self.emit({"t": "active", "j": job_id})

    # ---- inputs ----

    def track_added(self, info: TrackInfo) -> None:
        self.had_tracks = True
        self.people.setdefault(info.uid, info)
        if info.kind == "video":
            codec = "h264" if info.mime.lower() == "video/h264" else "vp8"
            self.videos[info.id] = VideoInput(info, av.CodecContext.create(codec, "r"))
        else:
            self.audios[info.id] = AudioInput(info, av.CodecContext.create("opus", "r"),
                                              av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE))

    def track_removed(self, track_id: str) -> None:
        self.videos.pop(track_id, None)
        self.audios.pop(track_id, None)

    def frame(self, info: TrackInfo, frame: Frame, seconds: float) -> None:
        if info.id in self.videos:
            v = self.videos[info.id]
            try:
                pictures = v.decoder.decode(av.Packet(frame.data))
            except av.error.FFmpegError:
                return
            for picture in pictures:
                if picture.width * picture.height > MAX_PIXELS:
                    continue  # tiles are smaller; kept, such pictures filled gigabytes
                # One picture per output frame: the later of two for one frame is the one shown anyway, and a flood
                # of pictures at one time (600 a second) held every one of them until its frame came.
                if v.pending and round(v.pending[-1][0] * FPS) == round(seconds * FPS):
                    v.pending[-1] = (seconds, picture)
                else:
                    v.pending.append((seconds, picture))
        elif info.id in self.audios:
            a = self.audios[info.id]
            try:
                decoded = a.decoder.decode(av.Packet(frame.data))
            except av.error.FFmpegError:
                return
            start = round(seconds * AUDIO_RATE)
            for piece in decoded:
                for resampled in a.resampler.resample(piece):
                    pcm = resampled.to_ndarray().astype(np.float32).reshape(2, -1)
                    a.segments.append((start, pcm))
                    level = float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0
                    if level > 0.01:
                        a.level, a.level_at = level, seconds
                    start += pcm.shape[1]

    # ---- output ----

    def tick(self, now: float) -> None:
        while (self.next_frame + 1) / FPS <= now:
            self._render(self.next_frame / FPS)
            self.next_frame += 1
        while (self.next_chunk + 1) * AAC_FRAME / AUDIO_RATE <= now:
            self._mix(self.next_chunk)
            self.next_chunk += 1

    def _tiles(self, t: float) -> list[Tile]:
        cams: dict[str, str] = {}
        screens: list[str] = []
        for key, v in self.videos.items():
            if v.info.source == "screen":
                if v.current is not None or v.pending:  # a share takes the stage with its first picture
                    screens.append(key)
            else:
                cams.setdefault(v.info.uid, key)
        keys: list[str] = []
        for uid in self.people:
            if uid in cams:
                keys.append(cams[uid])
            elif any(a.info.uid == uid for a in self.audios.values()):
                keys.append(f"name:{uid}")  # a microphone but no camera: a name tile
        if self.layout == "grid":
            return grid(keys + screens, self.width, self.height)
        main = screens[-1] if screens else None
        if main is None:
            uid = self._active_teacher(t)
            if uid is not None:
                main = cams.get(uid, f"name:{uid}")
        others = [k for k in keys + screens if k != main]
        return speaker(main, others, self.width, self.height)

    def _active_teacher(self, t: float) -> str | None:
        teachers = [uid for uid, info in self.people.items() if info.role in ("TEACHER", "ADMIN")]
        loud = [(a.level, a.info.uid) for a in self.audios.values()
                if a.info.uid in teachers and t - a.level_at < 2.0]
        if loud:
            self.speaker_uid = max(loud)[1]
        elif self.speaker_uid not in teachers:
            self.speaker_uid = teachers[0] if teachers else next(iter(self.people), None)
        return self.speaker_uid

    def _render(self, t: float) -> None:
        """Composes straight into a yuv420p buffer (no full-frame colour conversion: half the cost at 1080p)."""
        W, H = self.width, self.height
        buffer = np.empty(W * H * 3 // 2, np.uint8)
        planes = i420_planes(buffer, W, H)
        for plane, value in zip(planes, BACKGROUND_YUV, strict=True):
            plane[:] = value
        # Each picture shows from the output frame nearest its placement, not the first one at or after it: that
        # put every camera half a frame (17 ms on average, up to 33) behind the sound mixed at sample accuracy.
        for v in self.videos.values():
            while v.pending and v.pending[0][0] <= t + 0.5 / FPS:
                v.current_t, v.current = v.pending.popleft()
        for tile in self._tiles(t):
            v = self.videos.get(tile.key)
            if v is not None and v.current is not None and t - v.current_t <= STALE_S:
                x, y, w, h = fit(v.current.width, v.current.height, tile.w, tile.h)
                x, y = tile.x + x, tile.y + y
                for i, (plane, src) in enumerate(zip(planes, v.picture(w, h), strict=True)):
                    d = 1 if i == 0 else 2
                    plane[y // d:y // d + src.shape[0], x // d:x // d + src.shape[1]] = src
            else:
                uid = v.info.uid if v is not None else tile.key.removeprefix("name:")
                info = self.people.get(uid)
                self._name_tile(planes, tile, info.name if info else uid)
        if self.logo is not None:
            self._watermark(planes)
        frame = av.VideoFrame.from_ndarray(buffer.reshape(H * 3 // 2, W), format="yuv420p")
        frame.pts = round(t * FPS)
        frame.time_base = fractions.Fraction(1, FPS)
        for packet in self.video.encode(frame):
            self.container.mux(packet)

    @staticmethod
    def _name_tile(planes: tuple[np.ndarray, ...], tile: Tile, name: str) -> None:
        for i, (plane, value) in enumerate(zip(planes, NAME_TILE_YUV, strict=True)):
            d = 1 if i == 0 else 2
            plane[tile.y // d + 1:(tile.y + tile.h) // d - 1, tile.x // d + 1:(tile.x + tile.w) // d - 1] = value
        placed = place_text(tile.h, tile.w, name, tile.w - 8)
        if placed is None:
            return
        y, x, mask = placed
        y, x = (tile.y + y) // 2 * 2, (tile.x + x) // 2 * 2
        planes[0][y:y + mask.shape[0], x:x + mask.shape[1]][mask] = WHITE_YUV[0]
        half = mask[::2, ::2]
        for plane in planes[1:]:
            plane[y // 2:y // 2 + half.shape[0], x // 2:x // 2 + half.shape[1]][half] = 128

    def _watermark(self, planes: tuple[np.ndarray, ...]) -> None:
        """The logo, 80% opaque, in the top-right corner (precomputed as Y, U, V and alpha planes)."""
        assert self.logo is not None
        w = self.logo.shape[1]
        margin = self.height // 40 // 2 * 2
        x0, y0 = self.width - w - margin, margin
        if x0 < 0:
            return
        for i, (plane, (values, alpha)) in enumerate(zip(planes, self._logo_yuv, strict=True)):
            d = 1 if i == 0 else 2
            region = plane[y0 // d:y0 // d + values.shape[0], x0 // d:x0 // d + values.shape[1]]
            region[:] = (region * (1 - alpha) + values * alpha).astype(np.uint8)

    def _mix(self, chunk: int) -> None:
        start, end = chunk * AAC_FRAME, (chunk + 1) * AAC_FRAME
        mix = np.zeros((2, AAC_FRAME), np.float32)
        for a in self.audios.values():
            while a.segments and a.segments[0][0] + a.segments[0][1].shape[1] <= start:
                a.segments.popleft()
            for s0, pcm in a.segments:
                if s0 >= end:
                    break
                lo, hi = max(start, s0), min(end, s0 + pcm.shape[1])
                if hi > lo:
                    mix[:, lo - start:hi - start] += pcm[:, lo - s0:hi - s0]
        np.clip(mix, -1.0, 1.0, out=mix)
        frame = av.AudioFrame.from_ndarray(mix, format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        for packet in self.audio.encode(frame):
            self.container.mux(packet)

    def finish(self, end: float) -> list[dict[str, Any]]:
        self.tick(end + 1e-6)
        for stream in (self.video, self.audio):
            for packet in stream.encode(None):
                self.container.mux(packet)
        self.container.close()
        if not self.had_tracks:
            # Nobody published anything while it ran: an empty background is not a recording to offer.
            self.path.unlink(missing_ok=True)
            return []
        return [{"path": str(self.path), "label": "composite", "size": file_size(self.path),
                 "duration": round(self.next_frame / FPS, 3)}]
