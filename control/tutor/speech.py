"""Speech in and out, offline: decode any audio a browser records, transcribe it with faster-whisper, speak
answers with piper.

Everything here is blocking (PyAV, CTranslate2, onnxruntime) and is only ever called through `Speech`'s async
methods, which run it on one dedicated worker thread: inference never blocks the event loop, and two classes
transcribing at once queue instead of fighting over the machine's cores.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import numpy as np

from control.tutor import models

log = logging.getLogger("classcast.speech")

SAMPLE_RATE = 16_000  # what Whisper takes
MAX_AUDIO_S = 120.0


class BadAudio(ValueError):
    """Client audio that cannot be decoded, is empty or too long: the API's 400."""


def decode_base64(data: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise BadAudio("audio must be a non-empty base64 string")
    if data.startswith("data:") and "," in data:  # a data URL, as browsers' FileReader produces
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadAudio("audio is not valid base64") from exc


def decode_audio(blob: bytes, max_s: float = MAX_AUDIO_S) -> np.ndarray:
    """WAV, Ogg/Opus, WebM/Opus (anything FFmpeg reads) to 16 kHz mono float32."""
    if not blob:
        raise BadAudio("audio is empty")
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(blob), mode="r") as container:
            if not container.streams.audio:
                raise BadAudio("no audio stream in the file")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1)
                    chunks.append(pcm)
                    total += pcm.size
                    if total > max_s * SAMPLE_RATE:
                        raise BadAudio(f"audio is longer than {max_s:.0f} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except BadAudio:
        raise
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise BadAudio(f"audio could not be decoded: {exc}") from exc
    if not chunks or sum(c.size for c in chunks) < SAMPLE_RATE // 10:
        raise BadAudio("audio has no sound in it (shorter than 0.1 s)")
    return np.concatenate(chunks).astype(np.float32)


def load_voice(threads: int = 1) -> Any:
    """The piper voice with its onnxruntime session limited to `threads` (PiperVoice.load would take every core)."""
    import json
    from pathlib import Path

    import onnxruntime as ort
    import piper
    from piper import PiperVoice
    from piper.config import PiperConfig

    path = models.piper_voice()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
    return PiperVoice(
        config=config,
        session=ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"]),
        espeak_data_dir=Path(piper.__file__).parent / "espeak-ng-data",
        download_dir=path.parent,
    )


class Speech:
    """The offline speech models, loaded lazily on the worker thread the first time they are needed."""

    def __init__(self, threads: int = 1, whisper_dir: str | None = None) -> None:
        self.threads = threads
        self._whisper_dir = whisper_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speech")
        self._whisper: Any = None
        self._voice: Any = None
        self._load_lock = threading.Lock()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---- on the worker thread -----------------------------------------------------------------------------

    def _model(self) -> Any:
        with self._load_lock:
            if self._whisper is None:
                models.require("faster_whisper")
                from faster_whisper import WhisperModel

                options = {"device": "cpu", "compute_type": "int8", "cpu_threads": self.threads, "num_workers": 1}
                if self._whisper_dir:  # CLASSCAST_WHISPER_MODEL: a model folder of the operator's
                    self._whisper = WhisperModel(self._whisper_dir, **options)
                else:  # the packaged model, read from its two packages (stored once)
                    self._whisper = WhisperModel("whisper-base", files=models.whisper_files(), **options)
            return self._whisper

    def transcribe_pcm(self, pcm: np.ndarray) -> str:
        """Blocking. Silero VAD (shipped inside faster-whisper) skips silence, where Whisper would invent text."""
        segments, _info = self._model().transcribe(
            pcm, language="en", beam_size=1, vad_filter=True, condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def _decode_and_transcribe(self, blob: bytes) -> str:
        return self.transcribe_pcm(decode_audio(blob))

    def _synthesize(self, text: str) -> bytes:
        with self._load_lock:
            if self._voice is None:
                models.require("piper")
                self._voice = load_voice(self.threads)
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            self._voice.synthesize_wav(text, w)
        return buf.getvalue()

    # ---- async API ------------------------------------------------------------------------------------------

    async def transcribe(self, blob: bytes) -> str:
        """Client audio to text. Raises BadAudio for anything that is not decodable audio."""
        return str(await self._run(self._decode_and_transcribe, blob))

    async def transcribe_samples(self, pcm: np.ndarray) -> str:
        return str(await self._run(self.transcribe_pcm, pcm))

    def warm_whisper(self) -> None:
        """Loads Whisper on the worker thread now, in the background (the transcriber process at start), so the
        first utterance does not wait for it; a failure is logged here and raised again by the first use."""

        def load() -> None:
            try:
                self._model()
            except Exception as exc:
                log.error("Whisper could not load: %s", exc)

        self._executor.submit(load)

    async def synthesize(self, text: str) -> bytes:
        """A WAV file (mono, 16-bit, the voice's 22.05 kHz) speaking `text`."""
        return bytes(await self._run(self._synthesize, text))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
