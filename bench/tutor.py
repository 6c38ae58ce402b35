"""AI tutor figures: the embedded model's time to first token and tokens per second, Whisper's real-time factor.

    .venv/bin/python -m bench.tutor [--threads 1] [--runs 3]

Runs the same code paths as the server (EmbeddedBackend over its loopback HTTP API, Speech.transcribe_pcm) and
prints a Markdown table to paste into bench/RESULTS.md. Figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

from control.tutor.backends import EmbeddedBackend, Usage
from control.tutor.context import ClassContext, build_messages
from control.tutor.speech import SAMPLE_RATE, Speech, decode_audio, load_voice

QUESTION = "What is a quadratic equation?"
SPEECH = ("Today we look at quadratic equations. A quadratic equation has a squared term, and its graph is a "
          "parabola. The quadratic formula gives both roots, and the discriminant tells us how many there are.")


async def llm(threads: int, runs: int, max_tokens: int) -> list[tuple[float, float, int, int]]:
    backend = EmbeddedBackend(threads=threads)
    out = []
    try:
        async for _ in backend.stream([{"role": "user", "content": "hi"}], 4):  # start the server, load the model
            pass
        for run in range(runs):
            # A different class each run, so llama.cpp's prompt cache cannot hide the prompt's evaluation.
            ctx = ClassContext(title=f"Algebra group {run + 1}", description="Grade 9", topic="Quadratic equations",
                               transcript=[SPEECH], questions=["How do I find the roots?"])
            messages = build_messages(ctx, QUESTION, 1024)
            started = time.perf_counter()
            first = None
            usage = None
            async for item in backend.stream(messages, max_tokens):
                if isinstance(item, Usage):
                    usage = item
                elif first is None:
                    first = time.perf_counter()
            done = time.perf_counter()
            assert first is not None and usage is not None
            out.append((first - started, usage.output_tokens / max(done - first, 1e-9), usage.output_tokens,
                        usage.input_tokens))
    finally:
        await backend.close()
    return out


def speech_rtf(threads: int, runs: int) -> tuple[float, float, str]:
    import io
    import wave

    voice = load_voice(threads)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        voice.synthesize_wav(SPEECH, w)
    pcm = decode_audio(buf.getvalue())
    seconds = pcm.size / SAMPLE_RATE
    speech = Speech(threads=threads)
    speech.transcribe_pcm(pcm[: SAMPLE_RATE])  # load the model
    times = []
    text = ""
    for _ in range(runs):
        started = time.perf_counter()
        text = speech.transcribe_pcm(pcm)
        times.append(time.perf_counter() - started)
    speech.close()
    return seconds, statistics.median(times) / seconds, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    results = asyncio.run(llm(args.threads, args.runs, args.max_tokens))
    ttft = statistics.median(r[0] for r in results)
    tps = statistics.median(r[1] for r in results)
    tokens = statistics.median(r[2] for r in results)
    prompt = statistics.median(r[3] for r in results)
    seconds, rtf, text = speech_rtf(args.threads, args.runs)
    print(f"machine: {platform.machine()}, {platform.python_version()}, threads={args.threads}, runs={args.runs} "
          "(medians)\n")
    print("| figure | value |\n|---|---|")
    print(f"| SmolLM2-135M Q4_1 time to first token (uncached {prompt:.0f}-token prompt, over HTTP) | "
          f"{ttft * 1000:.0f} ms |")
    print(f"| SmolLM2-135M Q4_1 generation | {tps:.1f} tokens/s ({tokens:.0f} tokens) |")
    print(f"| Whisper base int8 real-time factor ({seconds:.1f} s of piper speech) | {rtf:.3f} |")
    print(f"\nheard: {text}")


if __name__ == "__main__":
    main()
