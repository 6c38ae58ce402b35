"""Bandwidth: transport-wide congestion control feedback for publishers, and each subscriber's estimate.

Publishers (browsers) run send-side estimation: they need TWCC feedback (draft-holmer-rmcat-transport-wide-cc-
extensions-01) saying when each packet arrived, or their rate stays near its start and the top simulcast layer
never turns on. `TwccFeedback` records arrivals and writes that feedback. Publishers without TWCC get REMB.

Each subscriber's available bandwidth is estimated by `SubscriberEstimate` (documented in docs/architecture.md),
from loss in its TWCC feedback (browsers; `TwccSender` numbers what we send it) or its receiver reports:
- loss above 10%: multiplicative decrease to (rate actually sent) x (1 - loss/2);
- loss between 2% and 10%: hold;
- otherwise an increase: slow (8% a second) for 5 s after a decrease, then faster (25% a second) once the link
  has been clean that long; the subscriber steps up a layer when the estimate passes the next layer's measured
  rate with 15% headroom (the layer switch itself is the probe: if it causes loss, the next report takes the
  estimate down again);
- a REMB from the subscriber caps the estimate.
"""

from __future__ import annotations

import struct
from typing import Any

from sfu import rtcp
from sfu.engine.reference import LOSS_WINDOW

REFERENCE_UNIT_US = 64_000
DELTA_UNIT_US = 250
MAX_STATUSES = 1000  # statuses in one feedback we build
ARRIVAL_WINDOW = 4096  # arrivals kept per publisher transport (a power of two, at least MAX_STATUSES)
MAX_SENT = 8192  # packets we remember sending to a subscriber until its feedback reports them
MAX_FEEDBACK_STATUSES = MAX_SENT  # a feedback declaring more than we can remember is refused before it is read


class TwccFeedback:
    """Arrival times of one transport's packets by transport-wide sequence number, and the feedback for them.

    The record is a ring of `ARRIVAL_WINDOW` slots indexed by sequence number: its size does not depend on what
    the publisher sends. A publisher whose sequence numbers jump ahead loses the feedback for what lies further
    back than the window (it could not be reported in time anyway); memory and the cost of `build` stay fixed.
    """

    def __init__(self) -> None:
        self._ring: list[tuple[int, int] | None] = [None] * ARRIVAL_WINDOW  # (extended seq, arrival µs)
        self.highest: int | None = None
        self.next_base: int | None = None
        self.count = 0  # feedback packet count (8 bits on the wire)
        self.skipped = 0  # sequence numbers given up because the publisher jumped further than the window

    @property
    def pending(self) -> int:
        """Arrivals recorded and not yet reported."""
        base = self.next_base if self.next_base is not None else 0
        return sum(1 for entry in self._ring if entry is not None and entry[0] >= base)

    def record(self, seq: int, arrival_s: float) -> None:
        if self.highest is None:
            ext = seq
        else:
            ext = self.highest + ((seq - self.highest + 0x8000) & 0xFFFF) - 0x8000
        if self.next_base is None:
            self.next_base = ext
        if self.highest is None or ext > self.highest:
            self.highest = ext
            if ext - self.next_base >= ARRIVAL_WINDOW:
                floor = ext - ARRIVAL_WINDOW + 1
                self.skipped += floor - self.next_base
                self.next_base = floor
        if ext >= self.next_base:
            self._ring[ext & (ARRIVAL_WINDOW - 1)] = (ext, int(arrival_s * 1_000_000))

    def _take(self, seq: int) -> int | None:
        index = seq & (ARRIVAL_WINDOW - 1)
        entry = self._ring[index]
        if entry is None or entry[0] != seq:
            return None
        self._ring[index] = None
        return entry[1]

    def build(self, sender_ssrc: int, media_ssrc: int) -> bytes | None:
        """One feedback packet for everything recorded since the last one (None when nothing arrived)."""
        if self.highest is None or self.next_base is None or self.next_base > self.highest:
            return None
        base = self.next_base
        end = min(self.highest, base + MAX_STATUSES - 1)
        arrivals = [self._take(seq) for seq in range(base, end + 1)]
        self.next_base = end + 1
        first = next((a for a in arrivals if a is not None), None)
        if first is None:
            return None
        reference = first // REFERENCE_UNIT_US
        previous = reference * REFERENCE_UNIT_US
        symbols: list[int] = []
        deltas = bytearray()
        for arrival in arrivals:
            if arrival is None:
                symbols.append(0)
                continue
            delta = round((arrival - previous) / DELTA_UNIT_US)
            previous += delta * DELTA_UNIT_US
            if 0 <= delta <= 255:
                symbols.append(1)
                deltas.append(delta)
            else:
                delta = max(-32768, min(32767, delta))
                symbols.append(2)
                deltas += struct.pack("!h", delta)
        chunks = bytearray()
        for i in range(0, len(symbols), 7):  # two-bit status vector chunks, seven symbols each
            group = symbols[i : i + 7] + [0] * (7 - len(symbols[i : i + 7]))
            word = 0xC000
            for j, symbol in enumerate(group):
                word |= symbol << (12 - 2 * j)
            chunks += struct.pack("!H", word)
        body = struct.pack("!IIHH", sender_ssrc, media_ssrc, base & 0xFFFF, len(symbols))
        body += struct.pack("!I", (reference & 0xFFFFFF) << 8 | (self.count & 0xFF))
        body += chunks + deltas
        body += b"\x00" * (-len(body) % 4)
        self.count += 1
        return struct.pack("!BBH", 0x80 | rtcp.FMT_TWCC, rtcp.RTPFB, len(body) // 4) + body


def parse_twcc(fci: bytes, max_count: int = MAX_FEEDBACK_STATUSES) -> list[tuple[int, int | None]]:
    """(sequence, arrival in microseconds or None) for each packet a feedback reports.

    Raises ValueError for a feedback that is malformed or declares more than `max_count` statuses; the count is
    checked before anything is expanded, so the cost is at most proportional to `max_count`.
    """
    if len(fci) < 8:
        raise ValueError("transport-cc feedback shorter than its 8-byte header")
    base, count = struct.unpack_from("!HH", fci, 0)
    if count > max_count:
        raise ValueError(f"transport-cc feedback declares {count} statuses, more than the {max_count} allowed")
    ref_word = struct.unpack_from("!I", fci, 4)[0]
    reference = (ref_word >> 8) * REFERENCE_UNIT_US
    pos, size = 8, len(fci)
    symbols: list[int] = []
    while len(symbols) < count:
        if pos + 2 > size:
            raise ValueError("transport-cc packet status chunks overrun the packet")
        word = (fci[pos] << 8) | fci[pos + 1]
        pos += 2
        if word >> 15 == 0:  # run length
            symbols += [(word >> 13) & 3] * min(word & 0x1FFF, count - len(symbols))
        elif (word >> 14) & 1 == 0:  # one-bit vector
            symbols += [(word >> (13 - i)) & 1 for i in range(14)]
        else:
            symbols += [(word >> (12 - 2 * i)) & 3 for i in range(7)]
    del symbols[count:]
    needed = symbols.count(1) + 2 * symbols.count(2)
    if symbols.count(3):
        raise ValueError("transport-cc status symbol 3 is reserved")
    if pos + needed > size:
        raise ValueError("transport-cc receive deltas overrun the packet")
    out: list[tuple[int, int | None]] = []
    time_us = reference
    for i, symbol in enumerate(symbols):
        if symbol == 0:
            out.append(((base + i) & 0xFFFF, None))
            continue
        if symbol == 1:
            delta = fci[pos]
            pos += 1
        else:
            delta = struct.unpack_from("!h", fci, pos)[0]
            pos += 2
        time_us += delta * DELTA_UNIT_US
        out.append(((base + i) & 0xFFFF, time_us))
    return out


class TwccSender:
    """Transport-wide sequence numbers on what we send to one subscriber, and what its feedback says of them.

    What the subscriber's feedback may cost is bounded by what we sent it: a feedback is read only when it
    declares no more statuses than the sequence numbers between its base and our next one (both within the
    `MAX_SENT` we remember), and only while a budget of two statuses per packet sent (feedback may report a packet
    twice) lasts. Anything else is counted in `refused` and ignored.

    With the media engine, the engine keeps the counts and the loss window: with native feedback on
    (`engine.set_feedback`) it reads most feedback itself (sfu/engine/reference.py `rx_feedback`) and hands up a
    window only when its loss matters to the estimate, so `feedbacks`, `reported`, `lost` and `refused` are read
    from the engine, and the feedback that still reaches `on_feedback` adds to the same window.
    """

    BUDGET_SLACK = 2 * MAX_STATUSES

    def __init__(self, ext_id: int, engine: Any = None, transport: int = -1) -> None:
        """`engine`, `transport`: the SFU's numbers are written by the media engine (sfu/engine) into every copy
        it sends on that transport; it then knows what was sent and not yet reported (`twcc_take`) and how many
        numbers it wrote. Without an engine, `stamp` numbers the packets and they are remembered here."""
        self.ext_id = ext_id
        self.next_seq = 0
        self.sent: dict[int, tuple[float, int]] = {}  # seq -> (send time, bytes)
        self._engine, self._transport = engine, transport
        self._counts = {"feedbacks": 0, "refused": 0, "reported": 0, "lost": 0}  # without an engine
        self._budget = self.BUDGET_SLACK  # statuses we are still willing to read
        self._window_lost = self._window_reported = 0

    def _count(self, name: str) -> int:
        if self._engine is None:
            return self._counts[name]
        return int(self._engine.transport_stats(self._transport)["twcc_" + name])

    @property
    def feedbacks(self) -> int:
        """Feedback that reported at least one of our packets."""
        return self._count("feedbacks")

    @property
    def refused(self) -> int:
        """Feedback that was malformed, declared more than we sent, or came over budget."""
        return self._count("refused")

    @property
    def reported(self) -> int:
        return self._count("reported")

    @property
    def lost(self) -> int:
        return self._count("lost")

    def stamp(self, size: int, now: float) -> int:
        seq = self.next_seq
        self.next_seq = (seq + 1) & 0xFFFF
        self.sent[seq] = (now, size)
        if len(self.sent) > MAX_SENT:  # feedback never came for the oldest: forget them
            for old in list(self.sent)[:1024]:
                del self.sent[old]
        self._budget = min(self._budget + 2, 2 * MAX_SENT + self.BUDGET_SLACK)
        return seq

    def _take(self, seq: int) -> bool:
        return self.sent.pop(seq, None) is not None

    def on_feedback(self, fci: bytes) -> tuple[int, int] | None:
        """(lost, reported) among our packets once enough were reported to judge loss (at least 50, about half a
        second of video; a feedback every 50 ms holds a handful), else None.

        With the media engine, one native call reads the feedback against what the engine numbered (the same
        bounds: `engine.twcc_feedback`, specified by sfu/engine/reference.py); this code is the path without one."""
        if self._engine is not None:
            counted = self._engine.twcc_feedback(self._transport, fci)
            if counted is None or not counted[0]:
                return None
            return self._engine.twcc_window(self._transport)
        counts = self._counts
        if len(fci) < 4:
            counts["refused"] += 1
            return None
        base, count = struct.unpack_from("!HH", fci, 0)
        span = (self.next_seq - base) & 0xFFFF  # sequence numbers from `base` up to the last one we sent
        if count > span or span > MAX_SENT or count > self._budget:
            counts["refused"] += 1
            return None
        try:
            statuses = parse_twcc(fci, max_count=count)
        except (ValueError, struct.error, IndexError):
            counts["refused"] += 1
            return None
        self._budget -= count
        lost = reported = 0
        for seq, arrival in statuses:
            if not self._take(seq):
                continue
            reported += 1
            if arrival is None:
                lost += 1
        if not reported:
            return None
        counts["feedbacks"] += 1
        counts["reported"] += reported
        counts["lost"] += lost
        self._window_lost += lost
        self._window_reported += reported
        if self._window_reported < LOSS_WINDOW:
            return None
        window = self._window_lost, self._window_reported
        self._window_lost = self._window_reported = 0
        return window


class SubscriberEstimate:
    """What one subscriber's link carries, from loss alone (receiver reports, TWCC windows) and REMB caps.

    Until the first loss it grows 60%/s (a slow start: a student on a good link reaches the top camera layer with
    a screen share on within a few seconds of joining); after a cut, 8%/s for 5 s, then 25%/s.
    """

    SLOW_START = 1.6

    def __init__(self, start_bps: int = 1_000_000, min_bps: int = 100_000, max_bps: int = 20_000_000) -> None:
        self.estimate = float(start_bps)
        self.min_bps, self.max_bps = min_bps, max_bps
        self.last_update: float | None = None
        self.hold_until = 0.0
        self.last_decrease = float("-inf")
        self.decreases = 0

    def on_loss(self, fraction_lost: int, sent_bps: float, now: float) -> None:
        """A receiver report: fraction lost (0-255) since the previous one."""
        loss = fraction_lost / 256
        if loss > 0.10:
            basis = min(self.estimate, sent_bps) if sent_bps > 0 else self.estimate
            self.estimate = max(self.min_bps, basis * (1 - loss / 2))
            self.hold_until = now + 1.0  # let the decrease take effect before growing again
            self.last_decrease = now
            self.decreases += 1
        elif loss > 0.02:
            self.hold_until = max(self.hold_until, now + 0.5)

    def on_remb(self, bps: int) -> None:
        self.estimate = max(self.min_bps, min(self.estimate, float(bps)))

    def tick(self, now: float) -> float:
        if self.last_update is not None and now >= self.hold_until:
            if not self.decreases:
                rate = self.SLOW_START
            else:
                rate = 1.08 if now - self.last_decrease < 5.0 else 1.25
            grown = now - max(self.last_update, self.hold_until)  # a hold is not made up for afterwards
            self.estimate = min(self.max_bps, self.estimate * rate ** grown)
        self.last_update = now
        return self.estimate
