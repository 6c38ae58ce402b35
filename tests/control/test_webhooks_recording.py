"""recording_started / recording_ready (with links that download the file) / recording_failed and credits_low
reach the outbox with the change they announce (issue 17, requirement 3)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sqlalchemy import select

from control.store import schema as t
from control.store.store import Store
from control.store.webhooks import WebhookStore
from tests.conftest import Api
from tests.recorder.conftest import ClipAudio, ClipVideo, MarkerClip, Studio, studio  # noqa: F401


async def _events(store: Store) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(t.webhook_events.c.payload).order_by(t.webhook_events.c.seq))
        return [json.loads(r[0]) for r in rows]


async def test_recording_ready_carries_links_to_the_file_and_failed_says_why(studio: Studio) -> None:  # noqa: F811
    await WebhookStore(studio.svc.store).create_endpoint(
        studio.org.id, "http://127.0.0.1:9/hook", "whsec_" + "A" * 44,
        ["recording_started", "recording_ready", "recording_failed"], None, studio.svc.clock.now_ms())
    teacher = await studio.client(await studio.create_room("physics-1"), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip()), "microphone": ClipAudio(MarkerClip())})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start")
    assert status == 200, body
    egress = body["data"]["egressId"]
    await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")
    await studio.let_it_record()
    await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    started, ready = await _events(studio.svc.store)
    assert started["type"] == "recording_started" and started["data"]["egressId"] == egress
    assert ready["type"] == "recording_ready" and ready["data"]["status"] == "EGRESS_COMPLETE"
    [f] = ready["data"]["files"]
    link = urlsplit(f["downloadUrl"])  # the public base URL of the config; this test server's port differs
    assert link.path.startswith("/recordings/RF_") and "sig=" in link.query
    async with aiohttp.ClientSession() as s, s.get(f"{studio.base}{link.path}?{link.query}") as resp:
        assert resp.status == 200
        assert await resp.read() == studio.file_path(egress).read_bytes()  # the link serves the very file

    # The recorder killed mid-recording: recording_failed, with the reason and what was kept.
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start")
    second = body["data"]["egressId"]
    await studio.wait_status("physics-1", second, "EGRESS_ACTIVE")
    pid = studio.recordings.supervisor.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await studio.wait_status("physics-1", second, "EGRESS_FAILED")
    failed = (await _events(studio.svc.store))[-1]
    assert failed["type"] == "recording_failed" and failed["data"]["egressId"] == second
    assert "recorder process exited" in failed["data"]["error"]


async def test_credits_low_once_when_billing_crosses_the_threshold(api: Api) -> None:
    await WebhookStore(api.svc.store).create_endpoint(api.org.id, "http://127.0.0.1:9/h", "whsec_" + "A" * 44,
                                                      ["credits_low"], None, api.clock.now_ms())
    threshold = api.svc.config.credits_low
    await api.svc.store.add_credits(api.org.id, threshold + 30 - api.org.credits, "test", api.clock.now_ms())
    await api.create_room("algebra")
    room = await api.room("algebra")
    await api.svc.classroom.open_session(room.sid, "teacher-1")
    for _ in range(4):  # 20 minutes: 20 credits, still above
        api.clock.advance(300)
        await api.svc.classroom.tick()
    assert await _events(api.svc.store) == []
    for _ in range(6):  # 30 more minutes: below, and stays below without a second event
        api.clock.advance(300)
        await api.svc.classroom.tick()
    [low] = await _events(api.svc.store)
    org = await api.refresh_org()
    assert low["type"] == "credits_low" and low["data"]["threshold"] == threshold
    assert org.credits < threshold <= low["data"]["remainingCredits"] + 5 and low["data"]["roomId"] == "algebra"


async def test_metrics_read_the_sfu_and_the_recorder_while_media_flows(studio: Studio) -> None:  # noqa: F811
    from prometheus_client.parser import text_string_to_metric_families

    teacher = await studio.client(await studio.create_room("physics-1"), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip()), "microphone": ClipAudio(MarkerClip())})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start")
    egress = body["data"]["egressId"]
    await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")

    async def scrape() -> dict[str, float]:
        async with aiohttp.ClientSession() as s, s.get(f"{studio.base}/metrics") as resp:
            text = await resp.text()
        return {f"{x.name}{sorted(x.labels.items()) if x.labels else ''}": x.value
                for fam in text_string_to_metric_families(text) for x in fam.samples}

    # with SFU workers the control plane learns their counters from their periodic reports: wait for the first
    first = await scrape()
    for _ in range(100):
        if first["classcast_sfu_received_packets_total"] > 0:
            break
        await asyncio.sleep(0.1)
        first = await scrape()
    await asyncio.sleep(1.0)
    second = await scrape()
    assert second["classcast_sfu_received_packets_total"] > first["classcast_sfu_received_packets_total"] > 0
    assert second["classcast_recorder_jobs_live"] == 1 and second["classcast_recorder_up"] == 1
    assert second["classcast_rooms_live"] == 1 and second["classcast_participants[('role', 'TEACHER')]"] == 1
    await studio.rest("POST", "/v1/room/physics-1/recording/stop")
    await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    done = await scrape()
    assert done["classcast_recorder_jobs_live"] == 0
    assert done["classcast_recorder_jobs_finished_total[('status', 'EGRESS_COMPLETE')]"] == 1


async def test_drain_timeout_ends_the_class_normally_with_its_recording_finished(studio: Studio) -> None:  # noqa: F811
    from control.drain import DRAIN

    await WebhookStore(studio.svc.store).create_endpoint(studio.org.id, "http://127.0.0.1:9/h", "whsec_" + "A" * 44,
                                                         ["room_finished", "participant_left", "recording_ready"],
                                                         None, studio.svc.clock.now_ms())
    teacher = await studio.client(await studio.create_room("physics-1"), name="teacher")
    await teacher.publish({"camera": ClipVideo(MarkerClip()), "microphone": ClipAudio(MarkerClip())})
    status, body = await studio.rest("POST", "/v1/room/physics-1/recording/start")
    egress = body["data"]["egressId"]
    await studio.wait_status("physics-1", egress, "EGRESS_ACTIVE")
    ended = await studio.server.app[DRAIN].run(studio.svc.classroom, timeout_s=0.5, interval_s=0.1)
    assert ended == 1
    assert (await teacher.wait_for("class_ended"))["reason"] == "drain_timeout"
    job = await studio.wait_status("physics-1", egress, "EGRESS_COMPLETE")
    assert job["files"] and job["files"][0]["size"] > 0 and job["files"][0]["duration"] > 0
    room = await studio.svc.store.get_room(studio.org.id, "physics-1")
    assert room is not None and room.end_reason == "drain_timeout" and room.credits_debited >= 1
    assert not await studio.svc.store.room_sessions(room.sid, active_only=True)
    types = [e["type"] for e in await _events(studio.svc.store)]
    assert types == ["participant_left", "room_finished", "recording_ready"]


async def test_credits_low_from_the_ai_tutors_billing_too(tapi: Api) -> None:
    from tests.control.tutor_fixtures import chat_body

    await WebhookStore(tapi.svc.store).create_endpoint(tapi.org.id, "http://127.0.0.1:9/h", "whsec_" + "A" * 44,
                                                       ["credits_low"], None, tapi.clock.now_ms())
    threshold = tapi.svc.config.credits_low
    await tapi.svc.store.add_credits(tapi.org.id, threshold - tapi.org.credits, "test", tapi.clock.now_ms())
    assert await _events(tapi.svc.store) == []  # down to the threshold itself: not below it
    await tapi.create_room("math-101")
    status, body = await tapi.post("/v1/ai-tutor/chat", chat_body(tapi))
    assert status == 200, body
    [low] = await _events(tapi.svc.store)
    assert low["type"] == "credits_low" and low["data"]["reason"] == "aiTutor"
    assert low["data"]["remainingCredits"] == (await tapi.refresh_org()).credits < threshold
