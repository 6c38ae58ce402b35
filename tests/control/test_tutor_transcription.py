"""The transcription switches (server default, organization, room) as the tutor reads them."""

from __future__ import annotations

from tests.conftest import Api


async def test_transcription_switches_room_over_organization_over_server_default(tapi: Api) -> None:
    await tapi.create_room("math-101")
    room = await tapi.room("math-101")
    tutor = tapi.svc.tutor
    assert tutor is not None
    assert await tutor.transcription_enabled(room) is False  # CLASSCAST_TRANSCRIPTION defaults to off
    status, body = await tapi.post("/v1/ai-tutor/transcription", {"enabled": True})
    assert status == 200 and body["data"] == {"organization": tapi.org.id, "enabled": True}
    assert await tutor.transcription_enabled(room) is True
    status, _ = await tapi.post("/v1/ai-tutor/transcription", {"enabled": False, "roomId": "math-101"})
    assert status == 200
    assert await tutor.transcription_enabled(room) is False
    status, _ = await tapi.post("/v1/ai-tutor/transcription", {"enabled": "yes"})
    assert status == 400
    status, _ = await tapi.post("/v1/ai-tutor/transcription", {"enabled": True, "roomId": "nope"})
    assert status == 404


