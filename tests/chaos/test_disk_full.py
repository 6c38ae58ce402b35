"""Chaos: the recordings disk fills up mid-recording (issue 13). The recordings folder is a small tmpfs mounted
by the test (the machine allows it; the test fails, never skips, where it does not): the recording ends with a
clear failed status, the class and the other rooms go on, and once space is back the next recording works.

SIGKILL of the recorder mid-recording is tests/recorder/test_recording_media.py
(test_sigkill_leaves_a_decodable_file_and_a_failed_job); SIGKILL of the server mid-class is
tests/chaos/test_server_kill.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sfu.client import SyntheticVideoTrack
from tests.recorder.conftest import ClipAudio, ClipVideo, MarkerClip, Studio, studio  # noqa: F401 (fixture)
from tests.sfu.test_forwarding import _frame_size


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted over `path` (as root, or through sudo like the Makefile's apt-get)."""
    sudo = [] if os.getuid() == 0 else ["sudo", "-n"]
    subprocess.run([*sudo, "mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run([*sudo, "umount", "-l", str(path)], check=True)


async def test_a_full_recordings_disk_fails_the_recording_clearly_and_the_class_goes_on(studio: Studio) -> None:  # noqa: F811
    root = studio.recordings.root
    with small_disk(root, "16k"):  # a composite of this still picture writes a few KB a second
        teacher = await studio.client(await studio.create_room(), name="teacher")
        await teacher.publish({"camera": ClipVideo(MarkerClip()), "microphone": ClipAudio(MarkerClip())})
        student = await studio.client(await studio.token("physics-1", "s1"), name="s1")
        track = await student.remote_track("camera")
        await _frame_size(track)
        # Another room, another class: it must not notice.
        other = await studio.client(await studio.create_room("chem-2"), name="chem-teacher")
        await other.publish({"camera": SyntheticVideoTrack(320, 240)})
        watcher = await studio.client(await studio.token("chem-2", "w1"), name="w1")
        other_track = await watcher.remote_track("camera")
        await _frame_size(other_track)

        status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                         {"options": {"preset": "H264_720P_30"}})
        assert status == 200, body
        egress = body["data"]["egressId"]
        job = await studio.wait_status("physics-1", egress, "EGRESS_FAILED", "EGRESS_COMPLETE", timeout=60)
        assert job["status"] == "EGRESS_FAILED", job
        assert "space" in job["error"].lower(), job["error"]  # says why: no space left on the device
        for _ in range(30):  # the class went on all along, in both rooms
            await _frame_size(track, timeout=3)
            await _frame_size(other_track, timeout=3)
        assert (await teacher.request({"type": "ping", "ts": 1}, "pong"))["ts"] == 1
    # Space is back (the small disk is gone): the next recording works.
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start", {})
    assert status == 200, body
    second = body["data"]["egressId"]
    await studio.wait_status("physics-1", second, "EGRESS_ACTIVE", timeout=60)
    await asyncio.sleep(2)
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    assert status == 200, body
    job = await studio.wait_status("physics-1", second, "EGRESS_COMPLETE", timeout=60)
    assert job["files"][0]["size"] > 0
