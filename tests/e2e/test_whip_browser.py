"""Chromium as a WHIP encoder and as a WHEP player: a minimal fetch + RTCPeerConnection client written here, the
way OBS or a web player speaks RFC 9725, with no classcast code in the page.

The encoder offers its fake camera with three simulcast encodings and a microphone; a student on the WebSocket must
receive the camera as a simulcast track and pick layers as for a browser teacher; a second page plays the class
over WHEP and must show the teacher's picture.
"""

from __future__ import annotations

import asyncio

from playwright.async_api import Browser

from sfu.client import SyntheticVideoTrack
from sfu.whip_client import WhipClient
from tests.e2e.conftest import open_page
from tests.sfu.conftest import Classroom

GATHERED = """(pc) => new Promise((resolve) => {
  if (pc.iceGatheringState === "complete") return resolve();
  pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
})"""

WHIP_JS = """async ([url, token]) => {
  const gathered = GATHERED;
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}, audio: true});
  const pc = new RTCPeerConnection();
  window.whipPc = pc;
  pc.addTransceiver(media.getVideoTracks()[0], {direction: "sendonly", sendEncodings: [
    {rid: "q", scaleResolutionDownBy: 4}, {rid: "h", scaleResolutionDownBy: 2}, {rid: "f"}]});
  pc.addTransceiver(media.getAudioTracks()[0], {direction: "sendonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const resp = await fetch(url, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + token}});
  const answer = await resp.text();
  if (resp.status !== 201) return {status: resp.status, body: answer};
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  window.whipLocation = resp.headers.get("Location");
  return {status: resp.status, location: window.whipLocation, etag: resp.headers.get("ETag"),
          simulcast: answer.includes("a=simulcast:recv")};
}""".replace("GATHERED", GATHERED)

WHEP_JS = """async ([url, token]) => {
  const gathered = GATHERED;
  const pc = new RTCPeerConnection();
  window.whepPc = pc;
  const video = document.createElement("video");
  video.autoplay = true; video.muted = true; video.playsInline = true;
  document.body.appendChild(video);
  window.whepVideo = video;
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const resp = await fetch(url, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + token}});
  const answer = await resp.text();
  if (resp.status !== 201) return {status: resp.status, body: answer};
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  return {status: resp.status, location: resp.headers.get("Location")};
}""".replace("GATHERED", GATHERED)


async def test_chromium_publishes_over_whip_with_simulcast(classroom: Classroom, browser: Browser) -> None:
    teacher_token = await classroom.create_room(customization={"allowIngress": True})
    page = await open_page(browser, classroom)
    result = await page.evaluate(WHIP_JS, [classroom.base + "/v1/whip/physics-1", teacher_token])
    assert result["status"] == 201, result
    assert result["location"].startswith("/v1/whip/physics-1/") and result["simulcast"] is True
    await page.wait_for_function("window.whipPc.connectionState === 'connected'", timeout=15_000)

    student = await classroom.client(await classroom.token("physics-1", "s1"), name="s1")
    camera = next(t for t in student.joined["tracks"] if t["source"] == "camera")  # type: ignore[index]
    assert camera["uid"] == "teacher" and camera.get("layers") == ["q", "h", "f"], camera
    track = await student.remote_track("camera", "teacher")
    frame = await asyncio.wait_for(track.recv(), 15)
    assert frame.width in (320, 640, 1280), frame.width
    # Layer selection as for a browser teacher: asked for "low", the student gets the quarter layer (the upper ones
    # depend on the encoder's CPU here, the lowest always flows).
    await student.send({"type": "set_quality", "quality": "low"})
    change = await student.wait_for("quality_changed", lambda m: m.get("layer") == "q", timeout=20)
    assert (change["width"], change["height"]) == (320, 180)
    # A WHEP player picks its layer as a student does: asked for "low", it receives the quarter picture.
    player = WhipClient(classroom.base + "/v1/whep/physics-1", await classroom.token("physics-1", "viewer"),
                        ice=classroom.svc.config.ice)
    await player.play("?quality=low")
    for _ in range(200):
        if "video" in player.tracks:
            break
        await asyncio.sleep(0.05)
    picture = await asyncio.wait_for(player.tracks["video"].recv(), 15)
    assert (picture.width, picture.height) == (320, 180)
    await player.close()
    since = len(student.messages)
    assert await page.evaluate("""async (token) => (await fetch(window.whipLocation, {method: "DELETE",
        headers: {"Authorization": "Bearer " + token}})).status""", teacher_token) == 200
    await student.wait_for("track_unpublished", since=since)
    await page.close()


async def test_chromium_plays_the_class_over_whep(classroom: Classroom, browser: Browser) -> None:
    teacher = await classroom.client(await classroom.create_room(), name="teacher")
    await teacher.publish({"camera": SyntheticVideoTrack(320, 240, 15)})
    page = await open_page(browser, classroom)
    viewer_token = await classroom.token("physics-1", "viewer-1")
    result = await page.evaluate(WHEP_JS, [classroom.base + "/v1/whep/physics-1", viewer_token])
    assert result["status"] == 201 and result["location"].startswith("/v1/whep/physics-1/"), result
    await page.wait_for_function("window.whepVideo.videoWidth === 320 && window.whepVideo.currentTime > 0.2",
                                 timeout=20_000)
    status, body = await classroom.rest("GET", "/v1/room/physics-1/status")
    assert status == 200 and body["data"]["participantCount"] >= 2, body
    await page.close()
