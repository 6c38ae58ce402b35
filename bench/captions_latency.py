"""Live captions: time from the end of an utterance to its caption on a student's page (issue 19).

    .venv/bin/python -m bench.captions_latency [--sentences 12] [--pause 1.5]

A real server on 127.0.0.1 (the embedded Whisper model, transcription on for the room), an aiortc teacher whose
microphone plays piper-spoken sentences with pauses, and a headless Chromium student on the classroom page. For each
caption, latency = the moment the page's SDK delivered the `caption` event (Date.now() in the page) minus the
caption's `endedAt` (when the last voiced 20 ms of the utterance reached the server: the student hears it then, give
or take the jitter buffer). Both clocks are this machine's. It includes the 0.5 s pause that ends an utterance, the
Whisper pass (in the transcriber process), the store write and the fan-out. It also reports how many of the SFU's
tap packets the transcriber's feed dropped (it must never delay media: the tap only queues). Prints a Markdown table
for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from control.app import create_app
from control.config import Config
from control.services import SERVICES
from sfu.client import Client

SENTENCES = [
    "Today we study the water cycle.",
    "Water evaporates from the ocean and rises into the sky.",
    "Clouds bring the rain back to the ground.",
    "Rivers carry the water back to the sea.",
    "Plants also release water through their leaves.",
    "This process is called transpiration.",
    "Warm air can hold more water than cold air.",
    "When air cools, the vapour condenses into droplets.",
    "Snow stores water in the mountains until spring.",
    "Groundwater moves slowly through rock and soil.",
    "The sun drives the whole cycle with its energy.",
    "Tomorrow we will measure the rainfall in the school garden.",
]


async def run(sentences: list[str], pause_s: float, speech_threads: int, cut: float | None = None,
              ) -> dict[str, object]:
    from playwright.async_api import async_playwright

    from tests.e2e.conftest import CHROMIUM, FLAGS
    from tests.sfu.test_captions import lesson_wav
    from tests.sfu.test_transcriber import SpeechTrack

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="captions-bench-"))
    config = Config(data_dir=tmp / "data")
    config = dataclasses.replace(config, public_url=f"http://127.0.0.1:{port}",
                                 tutor=dataclasses.replace(config.tutor, speech_threads=speech_threads))
    app = await create_app(config, background=False)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    svc = app[SERVICES]
    assert svc.tutor is not None
    if cut is not None:  # the transcriber process (started with the first transcribed class) takes it
        svc.tutor.transcription.supervisor.args += ["--pause-s", str(cut)]
    org = await svc.store.create_org("Bench School", 100_000, svc.clock.now_ms())
    headers = {"VF-ORG-ID": org.id}
    teacher: Client | None = None
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async def rest(method: str, path: str, body: object) -> dict:  # type: ignore[type-arg]
                async with http.request(method, base + path, json=body) as resp:
                    data = await resp.json()
                    assert resp.status == 200, data
                    return data["data"]  # type: ignore[no-any-return]

            created = await rest("POST", "/v1/room/create", {
                "roomId": "bench", "title": "Bench", "participant": {"uid": "teacher", "name": "Marie",
                                                                       "role": "TEACHER"}})
            await rest("POST", "/v1/ai-tutor/transcription", {"enabled": True, "roomId": "bench"})
            joined = await rest("POST", "/v1/room/bench/join", {
                "participant": {"uid": "ada", "name": "Ada", "role": "STUDENT"},
                "customization": {"showLobby": False}})
            teacher = Client(base, created["token"], name="teacher")
            await teacher.connect()
            wav, spans = lesson_wav(sentences, pause_s)
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS,
                                                  ignore_default_args=["--headless"])
                ctx = await browser.new_context(bypass_csp=True)
                page = await ctx.new_page()
                await page.goto(joined["iframeUrl"])
                await page.wait_for_function("window.classcastRoom && window.classcastRoom.state === 'connected'")
                await page.evaluate("""() => { window.got = []; window.classcastRoom.addEventListener('caption',
                  (e) => window.got.push([Date.now(), e.detail])); }""")
                await teacher.publish({"microphone": SpeechTrack(wav)})
                deadline = time.monotonic() + spans[-1][1] + 60
                while time.monotonic() < deadline:
                    got = await page.evaluate("window.got")
                    if got and got[-1][1]["endedAt"] / 1000 > 0 and len(got) >= len(sentences):
                        break
                    await asyncio.sleep(0.5)
                got = await page.evaluate("window.got")
                await browser.close()
        room = await svc.store.get_room(org.id, "bench")
        assert svc.tutor is not None and room is not None
        dropped = svc.tutor.transcribers[room.sid].dropped if room.sid in svc.tutor.transcribers else -1
    finally:
        if teacher is not None:
            await teacher.close()
        await runner.cleanup()
    latencies = [(at - c["endedAt"]) / 1000 for at, c in got]
    return {"latencies": latencies, "captions": len(got), "sentences": len(sentences), "dropped": dropped,
            "texts": [c["text"] for _, c in got]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=len(SENTENCES))
    parser.add_argument("--pause", type=float, default=1.5, help="seconds of silence between the sentences")
    parser.add_argument("--speech-threads", type=int, default=1, help="Whisper's threads (CLASSCAST_SPEECH_THREADS)")
    parser.add_argument("--cut", type=float, default=None,
                        help="the transcriber's end-of-utterance pause (transcriber.room.PAUSE_S), to compare")
    args = parser.parse_args()
    result = asyncio.run(run(SENTENCES[: args.sentences], args.pause, args.speech_threads, args.cut))
    lat = sorted(result["latencies"])  # type: ignore[arg-type]
    p50 = statistics.median(lat)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    from transcriber import room

    pause = args.cut if args.cut is not None else room.PAUSE_S
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
          f"end-of-utterance pause {pause} s, Whisper threads {args.speech_threads}")
    print("| sentences | captions | p50 (s) | p95 (s) | min (s) | max (s) | tap packets dropped |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {result['sentences']} | {result['captions']} | {p50:.2f} | {p95:.2f} | {lat[0]:.2f} | {lat[-1]:.2f} "
          f"| {result['dropped']} |")
    for text in result["texts"]:  # type: ignore[attr-defined]
        print("  ", text)


if __name__ == "__main__":
    main()
