"""Layer choice and the recorder's view of a simulcast track, packet by packet (no network, no clock targets)."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import pytest

from sfu import rtcp
from sfu.bwe import SubscriberEstimate
from sfu.codecs import VP8, CodecInfo
from sfu.consumer import UP_HOLD_S, Consumer, OutSlot
from sfu.engine.bridge import process_bridge
from sfu.engine.reference import REPLAY_MAX
from sfu.producer import Producer
from sfu.rtp import parse_rtp

SSRCS = {"q": 1001, "h": 1002, "f": 1003}
SIZES = {"q": (320, 180), "h": (640, 360), "f": (1280, 720)}


class Tap:
    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def rtp(self, track_id: str, data: bytes, arrival: float) -> None:
        self.packets.append(data)

    def sender_report(self, *args: Any) -> None: ...

    def track_added(self, *args: Any) -> None: ...

    def track_removed(self, *args: Any) -> None: ...


def _camera(sent: list[bytes]) -> Producer:
    async def send_rtcp(data: bytes) -> bool:
        sent.append(data)
        return True

    producer = Producer("TR_cam", "teacher-key", "teacher", "camera", "0", CodecInfo(VP8, 90000, 96), None, None,
                        None, 7, send_rtcp, rids=["q", "h", "f"])
    for stream in producer.streams:
        stream.ssrc = SSRCS[stream.rid or ""]
    return producer


def _vp8(rid: str, seq: int, keyframe: bool) -> bytes:
    header = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, SSRCS[rid])
    descriptor = bytes([0x10])  # start of partition, no picture id
    if keyframe:
        w, h = SIZES[rid]
        frame = bytes([0x00, 0, 0, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", w, h)
    else:
        frame = bytes([0x01, 0, 0])
    return header + descriptor + frame + bytes(100)


async def _feed(producer: Producer, rid: str, seq: int, now: float, keyframe: bool = False) -> None:
    data = _vp8(rid, seq, keyframe)
    producer.on_rtp(producer.stream(rid), data, parse_rtp(data), now)
    await asyncio.sleep(0)  # the packet path is synchronous; RTCP it asks for leaves from a task


def _plis(sent: list[bytes]) -> list[int]:
    return [p.media_ssrc for data in sent for p in rtcp.parse_rtcp(data) if isinstance(p, rtcp.Pli)]


async def test_the_tap_feed_asks_for_the_keyframe_it_waits_for() -> None:
    """A browser sends keyframes only when asked: the recorder's feed must ask for its layer's, or it waits
    forever (the teacher's browser camera never reached a recording)."""
    sent: list[bytes] = []
    camera = _camera(sent)
    tap = Tap()
    now = 100.0
    for rid in ("q", "h", "f"):  # all three layers flow before the recording starts
        await _feed(camera, rid, 0, now)
    camera.taps = [tap]
    for seq in range(1, 40):  # no keyframe yet
        now += 0.01
        for rid in ("q", "h", "f"):
            await _feed(camera, rid, seq, now)
    assert tap.packets == [], "nothing before a keyframe"
    plis = _plis(sent)
    assert plis and set(plis) == {SSRCS["f"]}, "asked for the top layer's keyframe"
    assert len(plis) == 1, "and not once per packet (0.39 s of packets, one request per 0.5 s)"
    await _feed(camera, "q", 40, now, keyframe=True)
    assert tap.packets == [], "a keyframe of another layer does not start the feed"
    await _feed(camera, "f", 40, now + 0.01, keyframe=True)
    await _feed(camera, "f", 41, now + 0.02)
    assert len(tap.packets) == 2 and camera.tap_feed is not None and camera.tap_feed.current is camera.stream("f")
    sent.clear()
    for seq in range(42, 100):  # fed: no more requests
        await _feed(camera, "f", seq, now + seq * 0.01)
    assert _plis(sent) == []
    # The recorder's own request after loss goes to the layer it is fed, not the lowest.
    assert await camera.request_keyframe(now + 5)
    assert _plis(sent) == [SSRCS["f"]]


def _consumer(producer: Producer) -> Consumer:
    async def send_rtcp(data: bytes) -> bool:
        return True

    slot = OutSlot("1", "video", 90000, transport=process_bridge().engine.add_transport())
    slot.bind(5000, 96, None, None)
    consumer = Consumer(producer, slot, send_rtcp)
    producer.consumers.append(consumer)
    return consumer


_seq = iter(range(1000, 60000))


def _carry(producer: Producer, consumer: Consumer, rid: str, now: float) -> None:
    """The consumer's slot carries layer `rid` from now on: the engine switches at that layer's keyframe."""
    consumer.target = producer.stream(rid)
    data = _vp8(rid, next(_seq), keyframe=True)
    producer.on_rtp(producer.stream(rid), data, parse_rtp(data), now)  # type: ignore[arg-type]
    assert consumer.current is producer.stream(rid)


def _flowing(producer: Producer, now: float, rates: dict[str, int]) -> None:
    """Makes each layer look as if it carried `rates[rid]` bit/s over the last second."""
    for stream in producer.streams:
        stream.packets_in, stream.first_arrival, stream.last_arrival = 100, now - 10, now
        stream._window.clear()
        stream._window.append((now, rates[stream.rid or ""] // 8))
        stream._window_bytes = rates[stream.rid or ""] // 8


RATES = {"q": 150_000, "h": 500_000, "f": 1_500_000}


def _on_top(now: float) -> tuple[Producer, Consumer]:
    """A camera whose three layers flow at RATES, and a subscriber carrying its top layer."""
    camera = _camera([])
    consumer = _consumer(camera)
    _flowing(camera, now, RATES)
    _carry(camera, consumer, "f", now)
    return camera, consumer


async def test_a_down_switch_holds_the_next_step_up() -> None:
    now = 10.0
    camera, consumer = _on_top(now)
    rates = RATES
    assert consumer.choose(2_000_000, now) is camera.stream("f")
    assert consumer.choose(1_000_000, now) is camera.stream("h"), "down at once when the budget drops"
    _carry(camera, consumer, "h", now)
    now += 1.0
    _flowing(camera, now, rates)
    assert consumer.choose(2_000_000, now) is camera.stream("h"), "not straight back up"
    now += UP_HOLD_S
    _flowing(camera, now, rates)
    assert consumer.choose(2_000_000, now) is camera.stream("f"), "up again once the hold is over"


async def test_a_down_switch_in_slow_start_steps_up_again_as_the_estimate_grows() -> None:
    """A down-step the budget made while the subscriber's estimate was still growing (no loss cut it) does not
    hold the layer off for UP_HOLD_S: once the estimate has grown by UP_GROWTH the layer is taken again. After a
    cut the hold stands (a student who joined as the top layer resumed sat 5 s on the lowest one)."""
    now = 10.0
    camera, consumer = _on_top(now)
    rates = RATES
    assert consumer.choose(1_000_000, now, 1_000_000) is camera.stream("h"), "down when the layer does not fit"
    _carry(camera, consumer, "h", now)
    now += 0.25
    _flowing(camera, now, rates)
    assert consumer.choose(2_000_000, now, 1_100_000) is camera.stream("h"), "grown 10%: not yet"
    assert consumer.choose(2_000_000, now, 1_150_000) is camera.stream("f"), "grown 15%, never cut: up again"
    # The same after a loss cut: the hold stands however the estimate grows meanwhile.
    _carry(camera, consumer, "f", now)
    cut = now
    assert consumer.choose(1_000_000, now, 1_000_000, cut_at=cut) is camera.stream("h")
    _carry(camera, consumer, "h", now)
    now += 1.0
    _flowing(camera, now, rates)
    assert consumer.choose(2_000_000, now, 2_000_000, cut_at=cut) is camera.stream("h"), "cut: held"
    now += UP_HOLD_S
    _flowing(camera, now, rates)
    assert consumer.choose(2_000_000, now, 2_000_000, cut_at=cut) is camera.stream("f"), "up once the hold is over"


async def test_a_layer_that_just_resumed_is_not_priced_on_its_first_fraction_of_a_second() -> None:
    """A layer's rate is what arrived over the last second; 0.3 s after a resume that is a third of it. Until a
    full second has arrived, it is priced at what it last carried (or the ladder's guess), so no subscriber
    steps up on a rate it will not keep."""
    camera = _camera([])
    high = camera.stream("h")
    assert high is not None
    now = 50.0
    for i in range(200):  # one second of packets
        data = _vp8("h", next(_seq), keyframe=False)
        camera.on_rtp(high, data, parse_rtp(data), now - 1.0 + i * 0.005)
    carried = high.expected_bitrate(now)
    assert carried == high.last_rate > 0
    now += 5  # paused by dynacast, then resumed: 0.3 s of packets at the same pace
    for i in range(60):
        data = _vp8("h", next(_seq), keyframe=False)
        camera.on_rtp(high, data, parse_rtp(data), now + i * 0.005)
    now += 0.3
    assert high.bitrate(now) < carried / 2, "the window's own reading"
    assert high.expected_bitrate(now) == carried
    for i in range(140):  # a full second since the resume: its own rate again
        data = _vp8("h", next(_seq), keyframe=False)
        camera.on_rtp(high, data, parse_rtp(data), now + i * 0.005)
    now += 0.71
    assert high.expected_bitrate(now) == high.bitrate(now)


async def test_a_switch_notifies_once_per_actual_change() -> None:
    camera = _camera([])
    notes: list[dict[str, Any]] = []
    consumer = _consumer(camera)
    consumer._notify = notes.append
    _carry(camera, consumer, "f", 10.0)
    _carry(camera, consumer, "f", 10.1)  # another keyframe of the layer it carries: no change, no message
    assert [n["layer"] for n in notes] == ["f"]


def test_the_estimate_grows_fast_until_the_first_loss() -> None:
    estimate = SubscriberEstimate(start_bps=1_000_000)
    estimate.tick(0.0)
    assert estimate.tick(3.0) > 3_000_000, "slow start: a good link carries the top layer and a screen soon"
    estimate.on_loss(64, 2_000_000, 3.0)  # 25% lost
    cut = estimate.tick(3.0)
    assert cut < 2_000_000
    estimate.tick(4.0)
    assert estimate.tick(5.0) < cut * 1.1, "after a loss it holds a second, then grows 8%/s"


async def test_a_lower_maximum_asked_by_the_student_does_not_hold_the_way_back_up() -> None:
    camera = _camera([])
    consumer = _consumer(camera)
    now = 10.0
    _flowing(camera, now, {"q": 150_000, "h": 500_000, "f": 1_500_000})
    _carry(camera, consumer, "f", now)
    consumer.max_index = 1  # "medium"
    assert consumer.choose(5_000_000, now) is camera.stream("h")
    _carry(camera, consumer, "h", now)
    consumer.max_index = 2  # "high" a moment later: honoured at once, the estimate allows it
    assert consumer.choose(5_000_000, now + 0.5) is camera.stream("f")


async def test_the_tap_feed_switches_layers_on_the_publishers_clock(caplog: pytest.LogCaptureFixture) -> None:
    """Two layers have unrelated RTP bases; their sender reports share the publisher's NTP clock, so the first
    picture of the new layer lands exactly where it belongs on the feed's clock (lip sync in the recording)."""
    caplog.set_level(logging.INFO, logger="classcast.sfu.producer")
    sent: list[bytes] = []
    camera = _camera(sent)
    tap = Tap()
    camera.taps = [tap]
    ntp0 = 3_900_000_000 << 32
    base = {"h": 1_000_000, "f": 4_000_000_000}  # RTP timestamps at ntp0 (f wraps soon after)

    def packet(rid: str, t: float, keyframe: bool) -> bytes:
        w, h = SIZES[rid]
        header = struct.pack("!BBHII", 0x80, 96, int(t * 30) & 0xFFFF, (base[rid] + int(t * 90000)) & 0xFFFFFFFF,
                             SSRCS[rid])
        frame = bytes([0x00, 0, 0, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", w, h) if keyframe else bytes([1, 0, 0])
        return header + bytes([0x10]) + frame + bytes(50)

    for rid in ("h", "f"):  # each layer's report, half a second apart
        at = 0.5 if rid == "f" else 0.0
        report = rtcp.SenderReport(SSRCS[rid], ntp0 + int(at * (1 << 32)), (base[rid] + int(at * 90000)) & 0xFFFFFFFF,
                                   0, 0)
        camera.on_sender_report(camera.stream(rid), report, 100.0)  # type: ignore[arg-type]
    # Only h flows at first: the feed starts on it; then f comes, and the feed moves up at f's keyframe.
    for i, t in enumerate((1.0, 1.1, 1.2)):
        data = packet("h", t, keyframe=i == 0)
        camera.on_rtp(camera.stream("h"), data, parse_rtp(data), 100 + t)  # type: ignore[arg-type]
    first_out = parse_rtp(tap.packets[0]).timestamp
    data = packet("f", 1.3, keyframe=True)
    # Arrival far off (a busy machine): the reports, not the arrival time, place the picture.
    camera.on_rtp(camera.stream("f"), data, parse_rtp(data), 100 + 1.3 + 0.4)  # type: ignore[arg-type]
    assert camera.tap_feed is not None and camera.tap_feed.current is camera.stream("f")
    switched = parse_rtp(tap.packets[-1]).timestamp
    assert (switched - first_out) & 0xFFFFFFFF == round(0.3 * 90000)
    # the log says how each layer was placed (what a recording's lip sync rests on)
    placed = [r.getMessage().split("(", 1)[1] for r in caplog.records if "taps fed layer" in r.getMessage()]
    assert placed == ["placed by arrival: first layer; clock 1)",
                      "through the sender reports of layers 1 and 2; clock 1)"], placed


async def test_a_sink_added_later_gets_a_report_that_maps_the_feeds_next_keyframe_exactly(
        caplog: pytest.LogCaptureFixture) -> None:
    """A second recording of the same class: the new sink is handed the camera's latest report, mapped through the
    feed's clock as it is, and the feed restarts for it at the next keyframe. That keyframe must land on the same
    clock, whatever its arrival time (a big keyframe arrives late): placed by arrival, a VP8 camera sat 236 ms
    off its microphone for a whole recording of the browser test."""
    caplog.set_level(logging.INFO, logger="classcast.sfu.producer")

    class ReportTap(Tap):
        def __init__(self) -> None:
            super().__init__()
            self.reports: list[tuple[int, int]] = []
            self.clocks: list[int] = []

        def sender_report(self, track_id: str, ntp: int, rtp_timestamp: int, arrival: float, clock: int) -> None:
            self.reports.append((ntp, rtp_timestamp))
            self.clocks.append(clock)

    camera = _camera([])
    first = ReportTap()
    camera.taps = [first]
    ntp0, base = 3_900_000_000 << 32, 4_000_000_000  # f's RTP timestamp at ntp0 (wraps soon after)

    def packet(t: float, keyframe: bool) -> bytes:
        header = struct.pack("!BBHII", 0x80, 96, int(t * 30) & 0xFFFF, (base + int(t * 90000)) & 0xFFFFFFFF,
                             SSRCS["f"])
        key = bytes([0x00, 0, 0, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", *SIZES["f"])
        return header + bytes([0x10]) + (key if keyframe else bytes([1, 0, 0])) + bytes(50)

    def send(t: float, keyframe: bool, late: float = 0.0) -> None:
        data = packet(t, keyframe)
        camera.on_rtp(camera.stream("f"), data, parse_rtp(data), 100 + t + late)  # type: ignore[arg-type]

    camera.on_sender_report(camera.stream("f"), rtcp.SenderReport(SSRCS["f"], ntp0, base, 0, 0), 100.0)  # type: ignore[arg-type]
    for i, t in enumerate((1.0, 1.1, 1.2)):  # the first recording
        send(t, keyframe=i == 0)
    second = ReportTap()
    camera.taps.append(second)
    camera.replay_sender_reports(second)  # what Router.add_tap does, in its order
    assert camera.tap_feed is not None
    camera.tap_feed.restart(101.25)
    assert len(second.reports) == 1
    report_ntp, report_rtp = second.reports[0]
    send(1.3, keyframe=False)  # the feed waits for a keyframe: this one is not passed on
    send(2.0, keyframe=True, late=0.4)  # the keyframe the new sink starts at, 0.4 s late
    out = parse_rtp(second.packets[-1]).timestamp
    taken = (report_ntp - ntp0) / (1 << 32) + ((out - report_rtp) & 0xFFFFFFFF) / 90000
    assert abs(taken - 2.0) < 1e-3, f"the keyframe maps to {taken:.3f} s, taken at 2.000 s"
    assert "taps fed layer 2 from its keyframe (same layer, same offset; clock 1)" in caplog.text
    camera.on_sender_report(camera.stream("f"), rtcp.SenderReport(SSRCS["f"], ntp0 + (1 << 32), base + 90000, 0, 0),  # type: ignore[arg-type]
                            102.0)
    assert second.clocks == [1, 1], "the same clock: the replayed report still holds after the restart"


async def test_the_tap_feed_waits_for_a_layers_first_report_before_moving_up() -> None:
    """A layer dynacast just resumed may flow before its first sender report; moving up then would place its
    pictures by arrival time (lip sync off by the loop's jitter in the recording). The feed stays on the layer it
    has until the report comes, or REPORT_WAIT_S passes (a publisher that never reports still gets the better one)."""
    sent: list[bytes] = []
    camera = _camera(sent)
    camera.taps = [Tap()]
    feed = camera.tap_feed
    assert feed is not None
    ntp0 = 3_900_000_000 << 32
    camera.on_sender_report(camera.stream("h"), rtcp.SenderReport(SSRCS["h"], ntp0, 0, 0, 0), 100.0)  # type: ignore[arg-type]
    now = 100.0
    await _feed(camera, "h", 0, now, keyframe=True)
    assert feed.current is camera.stream("h") and feed.clock == 1  # the first layer: placed by arrival
    await _feed(camera, "f", 0, now + 0.01, keyframe=True)  # f flows, no report of it yet
    assert feed.current is camera.stream("h"), "moved up before f could be placed on the publisher's clock"
    camera.on_sender_report(camera.stream("f"), rtcp.SenderReport(SSRCS["f"], ntp0, 0, 0, 0), now + 0.02)  # type: ignore[arg-type]
    await _feed(camera, "h", 1, now + 0.03)
    await _feed(camera, "f", 1, now + 0.04, keyframe=True)
    assert feed.current is camera.stream("f"), "the report came: the next keyframe of f moves the feed up"
    assert feed.clock == 1, "placed through both layers' reports: the sinks' mapping still holds"

    # Without any report of the better layer, the wait is bounded.
    camera = _camera(sent)
    camera.taps = [Tap()]
    feed = camera.tap_feed
    assert feed is not None
    camera.on_sender_report(camera.stream("h"), rtcp.SenderReport(SSRCS["h"], ntp0, 0, 0, 0), 100.0)  # type: ignore[arg-type]
    await _feed(camera, "h", 0, now, keyframe=True)
    seq = 0
    t = now
    while t < now + feed.REPORT_WAIT_S - 0.1:
        seq += 1
        t = now + seq * 0.05
        await _feed(camera, "h", seq, t)
        await _feed(camera, "f", seq, t, keyframe=seq % 10 == 0)
    assert feed.current is camera.stream("h")
    for _ in range(12):
        seq += 1
        t = now + seq * 0.05
        await _feed(camera, "h", seq, t)
        await _feed(camera, "f", seq, t, keyframe=seq % 10 == 0)
    assert feed.current is camera.stream("f"), "a layer that never reports is taken after REPORT_WAIT_S"
    assert feed.clock == 2, "placed by arrival, a guess: a new clock, so that a sink takes f's first report as is"


async def test_a_layers_rate_is_shared_by_one_pass_and_follows_every_packet() -> None:
    """Every subscriber's choice in one pass reads the same layer rates (computed once per pass), but a packet
    that arrives in between counts at once, and a layer that stalls falls back to what it last carried."""
    camera = _camera([])
    high = camera.stream("h")
    assert high is not None
    now = 50.0
    assert high.expected_bitrate(now) == 450_000  # nothing measured: the ladder's guess
    for i in range(200):  # one second of packets
        data = _vp8("h", next(_seq), keyframe=False)
        camera.on_rtp(high, data, parse_rtp(data), now - 1.0 + i * 0.005)
    first = high.expected_bitrate(now)
    assert first == high.bitrate(now) > 0
    assert high.expected_bitrate(now) == first  # the same pass: same answer
    data = _vp8("h", next(_seq), keyframe=False)
    camera.on_rtp(high, data, parse_rtp(data), now)
    assert high.expected_bitrate(now) == first + len(data) * 8  # a packet in between counts
    later = now + 5  # stalled: what it last carried, not 0
    assert not high.flowing(later)
    assert high.expected_bitrate(later) == high.last_rate > 0


async def test_a_new_screen_shares_cached_pictures_do_not_count_against_the_camera() -> None:
    """The screen share is served first, at the rate it arrives: a new subscriber's screen consumer starts with
    the cached group of pictures, sent at once, and counting that burst as the screen's rate moved the student off
    the camera's top layer for a moment just after it reached it."""
    from sfu.participant import SfuParticipant

    camera = _camera([])
    cam = _consumer(camera)
    now = 20.0
    rates = {"q": 150_000, "h": 500_000, "f": 1_500_000}
    _flowing(camera, now, rates)
    _carry(camera, cam, "f", now)

    async def send_rtcp(data: bytes) -> bool:
        return True

    screen = Producer("TR_scr", "teacher-key", "teacher", "screen", "1", CodecInfo(VP8, 90000, 96), 2001, None,
                      None, 7, send_rtcp)
    stream = screen.streams[0]
    for i in range(REPLAY_MAX):  # 100 packets a second after a keyframe, about 0.9 Mbit/s: a group replayed whole
        header = struct.pack("!BBHII", 0x80, 96, 500 + i, 7000 + (i // 5) * 3000, 2001)
        frame = bytes([0x00, 0, 0, 0x9D, 0x01, 0x2A]) + struct.pack("<HH", 1280, 720) if i == 0 else bytes([1, 0, 0])
        data = header + bytes([0x10]) + frame + bytes(1100)
        screen.on_rtp(stream, data, parse_rtp(data), now - REPLAY_MAX * 0.01 + i * 0.01)
    shared = _consumer(screen)
    shared.target = stream
    shared.sent_bitrate(now - 0.1)  # the rate samples the layer choice takes
    await shared.start()  # the cached pictures go out at once
    assert shared.sent_bitrate(now + 0.05) > 1_500_000 > stream.expected_bitrate(now + 0.05)
    subscriber = SfuParticipant.__new__(SfuParticipant)  # its layer choice only: no peer, no router
    subscriber.consumers, subscriber._selected = {camera.id: cam, screen.id: shared}, None
    subscriber.estimate = SubscriberEstimate(start_bps=2_700_000)
    await subscriber.select_layers(now + 0.05)
    assert cam.target is camera.stream("f"), "the camera keeps its top layer"


async def test_layers_are_chosen_again_when_something_changed_and_at_least_every_second() -> None:
    """The router's periodic choice (SfuParticipant.reselect) skips subscribers whose inputs did not change, but
    a cut estimate moves the subscriber down at the next tick, a layer starting or stopping (the room's epoch)
    and a new maximum are seen at once, and nothing waits longer than RESELECT_S."""
    from sfu.participant import RESELECT_S, SfuParticipant, _apply_quality

    camera = _camera([])
    consumer = _consumer(camera)
    now = 10.0
    rates = {"q": 150_000, "h": 500_000, "f": 1_500_000}
    _flowing(camera, now, rates)
    _carry(camera, consumer, "f", now)
    subscriber = SfuParticipant.__new__(SfuParticipant)  # its layer choice only: no peer, no router
    subscriber.consumers, subscriber._selected = {camera.id: consumer}, None
    subscriber.estimate = SubscriberEstimate(start_bps=20_000_000)
    runs: list[float] = []
    choose = subscriber.select_layers

    async def counted(when: float, epoch: int = -1) -> None:
        runs.append(when)
        _flowing(camera, when, rates)  # the layers keep flowing at their rates
        await choose(when, epoch)

    subscriber.select_layers = counted  # type: ignore[method-assign]
    await subscriber.reselect(now, 0)
    assert runs == [now] and consumer.target is camera.stream("f")
    for tick in range(1, 4):  # nothing changed: skipped
        await subscriber.reselect(now + 0.2 * tick, 0)
    assert runs == [now]
    await subscriber.reselect(now + 0.8, 1)  # a layer started or stopped somewhere in the room
    assert runs == [now, now + 0.8]
    subscriber.estimate.on_loss(200, 1_600_000, now + 0.9)  # heavy loss: the estimate is cut
    await subscriber.reselect(now + 1.0, 1)
    assert runs[-1] == now + 1.0 and consumer.target is not camera.stream("f")
    _apply_quality(consumer, "low", None, None)  # the student asks for another quality
    await subscriber.reselect(now + 1.2, 1)
    assert runs[-1] == now + 1.2
    last = runs[-1]
    while runs[-1] == last:
        now += 0.2
        await subscriber.reselect(now + 1.2, 1)
    assert runs[-1] - last <= RESELECT_S + 0.2 + 1e-9  # the estimate grew back meanwhile, or the second passed
