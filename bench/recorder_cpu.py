"""CPU cost of recording: composite 720p, composite 1080p and track mode, measured on the recorder process.

    .venv/bin/python -m bench.recorder_cpu [--seconds 20]

A real server on 127.0.0.1 with one aiortc teacher publishing a 640x360 camera (30 fps), a 1280x720 screen share
(10 fps) and a microphone. Each mode records `--seconds`; the recorder process's user+system CPU time over the
recording (from /proc/PID/stat, including the file closing) divided by the recording's length is the figure: the
share of one core the recorder needs for this class.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from control.api.recordings import RECORDINGS
from control.app import create_app
from control.config import Config
from control.services import SERVICES
from sfu.client import Client, SyntheticVideoTrack, ToneAudioTrack

MODES = (
    ("composite 720p (grid)", {"preset": "H264_720P_30", "layout": "grid", "showLogo": False}),
    ("composite 1080p (grid)", {"preset": "H264_1080P_30", "layout": "grid", "showLogo": False}),
    ("track (no re-encoding)", {"mode": "track"}),
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(seconds: float) -> None:
    data = Path(tempfile.mkdtemp(prefix="classcast-bench-"))
    port = 18765
    config = Config(data_dir=data, port=port)
    app = await create_app(config, background=False)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    svc = app[SERVICES]
    org = await svc.store.create_org("Bench", 100_000, svc.clock.now_ms())
    base = f"http://127.0.0.1:{port}"
    headers = {"VF-ORG-ID": org.id}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/v1/room/create", json={
                "roomId": "bench", "title": "Bench",
                "participant": {"uid": "t", "name": "Teacher", "role": "TEACHER"}}) as resp:
            token = (await resp.json())["data"]["token"]
        teacher = Client(base, token, name="teacher")
        await teacher.connect()
        await teacher.publish({"camera": SyntheticVideoTrack(640, 360), "microphone": ToneAudioTrack(),
                               "screen": SyntheticVideoTrack(1280, 720, fps=10)})
        await asyncio.sleep(2)
        recordings = app[RECORDINGS]
        print("| mode | recorded s | recorder CPU s | share of one core | file MB |")
        print("|---|---|---|---|---|")
        for label, options in MODES:
            async with http.post(f"{base}/v1/room/bench/recording/start", json={"options": options}) as resp:
                egress = (await resp.json())["data"]["egressId"]
            pid = recordings.supervisor.pid
            assert pid is not None
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            await asyncio.sleep(seconds)
            async with http.post(f"{base}/v1/room/bench/recording/stop") as resp:
                await resp.read()
            rec = await recordings.wait_finished(egress, timeout=120)
            cpu = cpu_seconds(pid) - cpu0
            wall = time.monotonic() - t0
            print(f"| {label} | {seconds:.0f} | {cpu:.1f} | {cpu / seconds * 100:.0f}% "
                  f"(over {wall:.1f} s wall) | {(rec.size or 0) / 1e6:.1f} |", flush=True)
        await teacher.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    asyncio.run(main(parser.parse_args().seconds))
