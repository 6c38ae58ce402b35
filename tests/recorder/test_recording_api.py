"""The recording API as integrators and teachers use it: start/stop rules, events, listing, downloads, deletion."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest

from sfu.client import ClientError
from tests.recorder.conftest import ClipAudio, ClipVideo, MarkerClip, Studio


async def _teacher_publishing(studio: Studio, room: str = "physics-1", **room_extra: object):
    teacher = await studio.client(await studio.create_room(room, **room_extra), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip()), "microphone": ClipAudio(MarkerClip())})
    return teacher


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.both_databases  # the recordings' rows on SQLite and PostgreSQL
async def test_start_twice_and_stop_idle_are_409_and_events_reach_everyone(studio: Studio) -> None:
    teacher = await _teacher_publishing(studio)
    student = await studio.client(await studio.token("physics-1", "s1"), name="s1")
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    assert (status, body["error"]) == (409, "RECORDING_NOT_STARTED")
    # Two starts at once (a double click, two integrator calls): one recording, one 409.
    (s1, b1), (s2, b2) = await asyncio.gather(studio.rest("POST", "/v1/room/physics-1/recording/start"),
                                              studio.rest("POST", "/v1/room/physics-1/recording/start"))
    assert sorted((s1, s2)) == [200, 409], (b1, b2)
    status, body = (s1, b1) if s1 == 200 else (s2, b2)  # no body: all defaults
    assert body["message"] == "Recording started", body
    egress = body["data"]["egressId"]
    assert set(body["data"]) == {"egressId", "roomId", "status", "startedAt"}
    status, again = await studio.rest("POST", "/v1/room/physics-1/recording/start", {})
    assert (status, again["success"], again["error"]) == (409, False, "RECORDING_ALREADY_STARTED")
    for c in (teacher, student):
        started = await c.wait_for("recording_started")
        assert started["egressId"] == egress and started["options"]["preset"] == "H264_1080P_30"
    await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")
    status, body = await studio.rest("GET", "/v1/room/physics-1/status")
    assert body["data"]["isRecording"] is True
    await studio.let_it_record()
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    assert status == 200 and body["data"]["status"] == "EGRESS_ENDING"
    for c in (teacher, student):
        assert (await c.wait_for("recording_stopped"))["egressId"] == egress
    job = await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    assert job["files"] and job["files"][0]["filename"].startswith("recording-")


async def test_bad_options_and_unknown_rooms_are_clear_errors(studio: Studio) -> None:
    await studio.create_room()
    for options, field in (({"layout": "mosaic"}, "options.layout"), ({"preset": "4K"}, "options.preset"),
                           ({"showLogo": "yes"}, "options.showLogo"), ({"mode": "raw"}, "options.mode"),
                           ("grid", "options")):
        status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start", {"options": options})
        assert status == 400 and field in body["message"], body
    status, body = await studio.rest("POST", "/v1/room/nope/recording/start", {})
    assert (status, body["message"]) == (404, "Room not found")
    status, body = await studio.rest("GET", "/v1/room/nope/recordings/download")
    assert status == 404


async def test_allow_recording_false_refuses_the_api_and_moderators_cannot_start(studio: Studio) -> None:
    await _teacher_publishing(studio, "locked", customization={"allowRecording": False})
    status, body = await studio.rest("POST", "/v1/room/locked/recording/start", {})
    assert (status, body["success"], body["error"]) == (403, False, "FORBIDDEN")
    await _teacher_publishing(studio, "open")
    moderator = await studio.client(await studio.token("open", "mod", "MODERATOR"), name="mod")
    try:
        await moderator.request({"type": "recording_start"}, "recording_started")
        raise AssertionError("a moderator started a recording")
    except ClientError as exc:
        assert exc.code == "FORBIDDEN"
    # A teacher whose join turned allowRecording off cannot either.
    status, body = await studio.rest("POST", "/v1/room/open/join", {
        "participant": {"uid": "t2", "name": "T2", "role": "TEACHER"}, "customization": {"allowRecording": False}})
    restricted = await studio.client(body["data"]["token"], name="t2")
    try:
        await restricted.request({"type": "recording_start"}, "recording_started")
        raise AssertionError("a teacher without allowRecording started a recording")
    except ClientError as exc:
        assert exc.code == "FORBIDDEN"
    status, body = await studio.rest("GET", "/v1/room/open/recordings")
    assert body["data"]["recordings"] == []
    # An admin may.
    admin = await studio.client(await studio.token("open", "boss", "ADMIN"), name="boss")
    started = await admin.request({"type": "recording_start"}, "recording_started")
    assert started["startedBy"] == "boss"


async def test_teacher_record_button_starts_and_stops_and_ending_the_room_saves(studio: Studio) -> None:
    teacher = await _teacher_publishing(studio)
    started = await teacher.request({"type": "recording_start", "options": {"preset": "H264_720P_30"}},
                                    "recording_started")
    egress = started["egressId"]
    assert started["startedBy"] == "teacher"
    await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")
    await asyncio.sleep(2.5)
    status, body = await studio.rest("DELETE", "/v1/room/physics-1")
    assert status == 200 and body["data"]["wasRecording"] is True
    job = await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    assert job["files"][0]["size"] > 0 and job["files"][0]["duration"] > 2


async def test_download_links_range_signature_and_traversal(studio: Studio) -> None:
    await _teacher_publishing(studio)
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                     {"options": {"preset": "H264_720P_30", "showLogo": False}})
    egress = body["data"]["egressId"]
    await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")
    await asyncio.sleep(1.0)
    await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    status, body = await studio.rest("GET", "/v1/room/physics-1/recordings/download")
    assert status == 200, body
    data = body["data"]
    assert data["roomId"] == "physics-1" and data["expiresIn"] == "6h 0m"  # the class has not ended yet
    [f] = data["files"]
    assert f["filename"].startswith("recording-") and len(f["filename"]) == len("recording-2024-01-15-10-30-00.mp4")
    # Served by this server, at its public URL (the test server listens on another port than configured).
    assert f["downloadUrl"].startswith(studio.svc.config.base_url + "/recordings/")
    url = f["downloadUrl"].replace(studio.svc.config.base_url, studio.base)
    # Whole file, then a byte range.
    status, headers, content = await _get(url)
    assert status == 200 and headers["Content-Type"] == "video/mp4" and len(content) == f["size"]
    assert content[4:8] == b"ftyp"
    original = content
    status, headers, part = await _get(url, {"Range": "bytes=100-199"})
    assert status == 206 and part == content[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{f['size']}"
    # Tampering: another signature, another expiry, another file id.
    parsed = urlparse(url)
    q = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    base = f"{studio.base}{parsed.path}"
    for tampered in (f"{base}?expires={q['expires']}&sig={'0' * 64}",
                     f"{base}?expires={int(q['expires']) + 3600}&sig={q['sig']}",
                     f"{base}?sig={q['sig']}",
                     f"{studio.base}/recordings/RF_AAAAAAAAAAAA?expires={q['expires']}&sig={q['sig']}"):
        status, _, content = await _get(tampered)
        assert status == 403 and b"ftyp" not in content, tampered
    # A correctly signed link that expired an hour ago.
    file_id = parsed.path.rsplit("/", 1)[1]
    old = int(q["expires"]) - 2 * 3600
    status, _, content = await _get(f"{base}?expires={old}&sig={studio.recordings.signer.signature(file_id, old)}")
    assert status == 403 and b"expired" in content
    # A resumed download (If-Range with the file's entity tag) gets its range while the file is the same, and the
    # whole file once it changed (the captions step rewrites the MP4 in place): never a range of another version.
    status, headers, _ = await _get(url)
    etag = next(v for k, v in headers.items() if k.lower() == "etag")
    status, _, part = await _get(url, {"Range": "bytes=100-199", "If-Range": etag})
    assert status == 206 and part == original[100:200]
    path, _ = await studio.recordings.file_for_download(file_id, q["expires"], q["sig"])
    await asyncio.to_thread(lambda: path.write_bytes(path.read_bytes() + b"0123456789"))
    for stale in (etag, "W/" + etag, '"garbage"'):
        status, _, whole = await _get(url, {"Range": "bytes=-10", "If-Range": stale})
        assert status == 200 and whole == original + b"0123456789", stale
    # Nothing outside the recordings folder can be reached.
    db = (studio.svc.config.data_dir / "classcast.db").read_bytes()[:16]
    for path in ("/recordings/..%2Fclasscast.db", "/recordings/..%2F..%2Fdata%2Fclasscast.db",
                 "/recordings/%2E%2E/classcast.db", "/recordings/../classcast.db", "/recordings/../jwt-secret",
                 f"/recordings/{file_id}%2F..%2F..%2Fclasscast.db", "/recordings/RF_..%2F..%2Fjwt"):
        status, _, content = await _get(f"{studio.base}{path}?expires={q['expires']}&sig={q['sig']}")
        assert status in (403, 404), path
        assert db not in content and b"ftyp" not in content


@pytest.mark.both_databases  # the recordings' rows on SQLite and PostgreSQL
async def test_listing_and_bulk_delete(studio: Studio) -> None:
    await _teacher_publishing(studio)
    ids = []
    for _ in range(2):
        status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                         {"options": {"preset": "H264_720P_30", "mode": "track"}})
        ids.append(body["data"]["egressId"])
        await studio.wait_status("physics-1", ids[-1], "EGRESS_ACTIVE")
        if len(ids) == 2:
            # A running recording cannot be deleted.
            status, body = await studio.rest("DELETE", "/v1/recordings", {"ids": [ids[-1]]})
            assert (status, body["error"]) == (409, "RECORDING_RUNNING")
        await studio.rest("POST", "/v1/room/physics-1/recording/stop")
        await studio.wait_status("physics-1", ids[-1], "EGRESS_COMPLETE")
    status, body = await studio.rest("GET", "/v1/room/physics-1/recordings")
    assert [r["egressId"] for r in body["data"]["recordings"]] == ids
    assert all(r["status"] == "EGRESS_COMPLETE" and r["options"]["mode"] == "track" for r in body["data"]["recordings"])
    folder = studio.recordings.root
    assert (folder / ids[0]).is_dir()
    status, body = await studio.rest("DELETE", "/v1/recordings", {"ids": [ids[0], "EG_unknown"]})
    assert status == 200 and body["data"] == {"deleted": [ids[0]], "notFound": ["EG_unknown"]}
    assert not (folder / ids[0]).exists()
    status, body = await studio.rest("DELETE", "/v1/recordings", {})
    assert status == 400 and "ids" in body["message"]
    status, body = await studio.rest("DELETE", "/v1/room/physics-1/recordings", {"ids": [ids[1]]})
    assert status == 200 and body["data"]["deleted"] == [ids[1]]
    status, body = await studio.rest("GET", "/v1/room/physics-1/recordings")
    assert body["data"]["recordings"] == []


async def test_a_room_everybody_left_is_kept_for_the_recording_then_closed(studio: Studio) -> None:
    from control.signaling import HUB

    teacher = await _teacher_publishing(studio)
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start",
                                     {"options": {"preset": "H264_720P_30", "mode": "track"}})
    egress = body["data"]["egressId"]
    await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")
    await teacher.leave()
    sfu = studio.server.app[HUB].sfu
    await asyncio.sleep(0.5)
    assert await _media_rooms(sfu) == 1  # the recording still listens: the teacher may come back
    await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    await asyncio.sleep(0.2)
    assert await _media_rooms(sfu) == 0  # nobody left, no recording: the room's media is closed


async def _media_rooms(sfu: Any) -> int:
    """Rooms the SFU holds media for: its routers in-process; with worker processes, the rooms the pool placed,
    which must agree with the workers' own count (their next load report, every wire.LOAD_PERIOD)."""
    from control.workers import WorkerPool
    from sfu.wire import LOAD_PERIOD

    if not isinstance(sfu, WorkerPool):
        return len(sfu.routers)
    placed = len(sfu.rooms)
    await asyncio.sleep(2.5 * LOAD_PERIOD)
    assert sum(int(w.load.get("rooms", 0)) for w in sfu.workers) == placed, [w.load for w in sfu.workers]
    return placed


async def test_a_recording_of_an_empty_room_offers_no_file(studio: Studio) -> None:
    """Nobody published while it ran: no 0-second (or background-only) file is offered for download, and the
    recording says why instead of claiming success."""
    await studio.create_room()
    for options in ({"layout": "grid"}, {"mode": "track"}):
        status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start", {"options": options})
        assert status == 200, body
        await asyncio.sleep(1.5)
        status, body = await studio.rest("POST", "/v1/room/physics-1/recording/stop")
        assert status == 200, body
        job = await studio.wait_status("physics-1", body["data"]["egressId"], "EGRESS_COMPLETE", "EGRESS_FAILED")
        assert job["status"] == "EGRESS_FAILED" and job["files"] == [] and job["size"] == 0, job
        assert job["error"].startswith("Nothing was recorded")
        assert not any((studio.recordings.root / job["egressId"]).glob("*.mp4"))
    status, body = await studio.rest("GET", "/v1/room/physics-1/recordings/download")
    assert body["data"]["files"] == [], body
