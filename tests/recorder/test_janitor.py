"""The six-hour window with an injected clock, and what a server restart does to jobs that were running."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from control.api.recordings import RECORDINGS
from control.app import create_app
from control.clock import FakeClock
from control.config import Config
from control.ids import new_id
from control.recording.janitor import Janitor
from control.recordings import expires_in_text
from control.services import SERVICES
from control.store.records import Recording, RecordingFile
from recorder.mux import open_mp4
from tests.conftest import Api

HOUR = 3600


def _mp4(path: Path, seconds: float = 2.0) -> None:
    """A small real fragmented MP4, as the recorder writes them."""
    c = open_mp4(path)
    s = c.add_stream("libx264", rate=30)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    for i in range(int(seconds * 30)):
        f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i, np.uint8), format="rgb24")
        f.pts, f.time_base = i, fractions.Fraction(1, 30)
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode(None):
        c.mux(p)
    c.close()


async def _job(api: Api, room_sid: str, status: str, write: bool = True) -> tuple[str, Path]:
    svc = api.svc
    rec_id = new_id("EG_")
    await svc.store.insert_recording(Recording(
        id=rec_id, room_sid=room_sid, status=status, options={"mode": "composite"}, started_at=api.clock.now_ms(),
        ended_at=None, file_path=None, size=None, duration=None, error=None))
    root = svc.config.data_dir / "recordings"
    path = root / rec_id / "composite.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    if write:
        _mp4(path)
    await svc.store.add_recording_file(RecordingFile(
        id=new_id("RF_"), recording_id=rec_id, path=f"{rec_id}/composite.mp4", label="composite",
        size=path.stat().st_size if write else None, duration=2.0 if write else None, created_at=api.clock.now_ms()))
    return rec_id, path


@pytest.mark.both_databases  # the recordings' rows on SQLite and PostgreSQL
async def test_files_go_six_hours_after_the_class_ends_never_while_written(api: Api) -> None:
    await api.create_room()
    room = await api.room("math-101")
    done, done_path = await _job(api, room.sid, "EGRESS_COMPLETE")
    failed, failed_path = await _job(api, room.sid, "EGRESS_FAILED")
    writing, writing_path = await _job(api, room.sid, "EGRESS_COMPLETE")
    live, live_path = await _job(api, room.sid, "EGRESS_ACTIVE")
    root = api.svc.config.data_dir / "recordings"
    janitor = Janitor(api.svc.store, root, api.clock, 6 * HOUR, busy=lambda: {writing})
    api.clock.advance(10 * HOUR)
    assert await janitor.run_once() == []  # the class has not ended: the window has not started
    status, body = await api.delete("/v1/room/math-101")
    assert status == 200
    api.clock.advance(6 * HOUR - 60)
    assert await janitor.run_once() == []
    assert done_path.exists()
    status, body = await api.get("/v1/room/math-101/recordings/download")
    assert body["data"]["expiresIn"] == "0h 1m"
    api.clock.advance(61)
    assert sorted(await janitor.run_once()) == sorted([done, failed])
    assert not done_path.exists() and not failed_path.exists() and not done_path.parent.exists()
    assert writing_path.exists() and live_path.exists()  # being written: never deleted
    rec = await api.svc.store.get_recording(done)
    assert rec is not None and rec.deleted_at == api.clock.now_ms()  # the row stays, marked
    status, body = await api.get("/v1/room/math-101/recordings/download")
    assert [f["egressId"] for f in body["data"]["files"]] == [writing]  # only what was not deleted
    assert body["data"]["expiresIn"] == "0h 0m"
    status, body = await api.get("/v1/room/math-101/recordings")
    listed = {r["egressId"]: r for r in body["data"]["recordings"]}
    assert listed[done]["deletedAt"] is not None and listed[done]["files"] == []


def test_expires_in_reads_like_the_reference() -> None:
    assert expires_in_text(4 * HOUR + 23 * 60 + 59) == "4h 23m"
    assert expires_in_text(6 * HOUR) == "6h 0m"
    assert expires_in_text(-5) == "0h 0m"


@pytest.mark.both_databases  # the recordings' rows on SQLite and PostgreSQL
async def test_start_up_catches_up_and_settles_jobs_a_previous_run_left(api: Api, aiohttp_client: Any,
                                                                        config: Config, clock: FakeClock) -> None:
    await api.create_room()
    room = await api.room("math-101")
    expired, expired_path = await _job(api, room.sid, "EGRESS_COMPLETE")
    await api.delete("/v1/room/math-101")
    await api.create_room("math-102")
    room2 = await api.room("math-102")
    interrupted, interrupted_path = await _job(api, room2.sid, "EGRESS_ACTIVE")  # a file was being written
    await api.create_room("math-103")  # a room has one live recording at most (migration 7)
    room3 = await api.room("math-103")
    empty, _ = await _job(api, room3.sid, "EGRESS_STARTING", write=False)  # nothing reached a file
    clock.advance(7 * HOUR)
    # A new server process on the same data dir.
    app = await create_app(config, clock, background=False)
    client: TestClient = await aiohttp_client(app)
    store = app[SERVICES].store
    assert app[RECORDINGS].root == (config.data_dir / "recordings").resolve()
    assert not expired_path.exists()  # the janitor ran at start-up
    rec = await store.get_recording(interrupted)
    assert rec is not None and rec.status == "EGRESS_COMPLETE" and abs((rec.duration or 0) - 2.0) < 0.1
    assert rec.error == "interrupted by a server restart" and interrupted_path.exists()
    rec = await store.get_recording(empty)
    assert rec is not None and rec.status == "EGRESS_FAILED"
    await client.close()
