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
from collections.abc import Callable

from sfu import rtcp

REFERENCE_UNIT_US = 64_000
DELTA_UNIT_US = 250
MAX_STATUSES = 1000


class TwccFeedback:
    """Arrival times of one transport's packets by transport-wide sequence number, and the feedback for them."""

    def __init__(self) -> None:
        self.arrivals: dict[int, int] = {}  # extended sequence -> arrival in microseconds
        self.highest: int | None = None
        self.next_base: int | None = None
        self.count = 0  # feedback packet count (8 bits on the wire)

    def record(self, seq: int, arrival_s: float) -> None:
        if self.highest is None:
            ext = seq
        else:
            ext = self.highest + ((seq - self.highest + 0x8000) & 0xFFFF) - 0x8000
        if self.next_base is None:
            self.next_base = ext
        if self.highest is None or ext > self.highest:
            self.highest = ext
        if ext >= self.next_base:
            self.arrivals[ext] = int(arrival_s * 1_000_000)

    def build(self, sender_ssrc: int, media_ssrc: int) -> bytes | None:
        """One feedback packet for everything recorded since the last one (None when nothing arrived)."""
        if self.highest is None or self.next_base is None or not self.arrivals:
            return None
        base = self.next_base
        end = min(self.highest, base + MAX_STATUSES - 1)
        first = next((self.arrivals[s] for s in range(base, end + 1) if s in self.arrivals), None)
        if first is None:
            self.next_base = end + 1
            return None
        reference = first // REFERENCE_UNIT_US
        previous = reference * REFERENCE_UNIT_US
        symbols: list[int] = []
        deltas = bytearray()
        for seq in range(base, end + 1):
            arrival = self.arrivals.pop(seq, None)
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
        self.next_base = end + 1
        for old in [s for s in self.arrivals if s < self.next_base]:
            del self.arrivals[old]
        return struct.pack("!BBH", 0x80 | rtcp.FMT_TWCC, rtcp.RTPFB, len(body) // 4) + body


def parse_twcc(fci: bytes) -> list[tuple[int, int | None]]:
    """(sequence, arrival in microseconds or None) for each packet a feedback reports, for tests and estimates."""
    base, count = struct.unpack_from("!HH", fci, 0)
    ref_word = struct.unpack_from("!I", fci, 4)[0]
    reference = (ref_word >> 8) * REFERENCE_UNIT_US
    pos = 8
    symbols: list[int] = []
    while len(symbols) < count:
        word = struct.unpack_from("!H", fci, pos)[0]
        pos += 2
        if word >> 15 == 0:  # run length
            symbols += [(word >> 13) & 3] * (word & 0x1FFF)
        elif (word >> 14) & 1 == 0:  # one-bit vector
            symbols += [(word >> (13 - i)) & 1 for i in range(14)]
        else:
            symbols += [(word >> (12 - 2 * i)) & 3 for i in range(7)]
    symbols = symbols[:count]
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
    """Transport-wide sequence numbers on what we send to one subscriber, and what its feedback says of them."""

    def __init__(self, ext_id: int, take: Callable[[int], bool] | None = None) -> None:
        """`take(seq)`: whether that number was sent and not reported yet, forgetting it. The SFU's numbers are
        stamped by the media engine (sfu/engine), which answers that; without it `stamp` keeps them here."""
        self.ext_id = ext_id
        self.next_seq = 0
        self.sent: dict[int, tuple[float, int]] = {}  # seq -> (send time, bytes)
        self._take = take or (lambda seq: self.sent.pop(seq, None) is not None)
        self.feedbacks = 0
        self.reported = 0
        self.lost = 0
        self._window_lost = self._window_reported = 0

    def stamp(self, size: int, now: float) -> int:
        seq = self.next_seq
        self.next_seq = (seq + 1) & 0xFFFF
        self.sent[seq] = (now, size)
        if len(self.sent) > 8192:  # feedback never came for the oldest: forget them
            for old in list(self.sent)[:1024]:
                del self.sent[old]
        return seq

    def on_feedback(self, fci: bytes) -> tuple[int, int] | None:
        """(lost, reported) among our packets once enough were reported to judge loss (at least 50, about half a
        second of video; a feedback every 50 ms holds a handful), else None."""
        try:
            statuses = parse_twcc(fci)
        except (struct.error, IndexError):
            return None
        lost = reported = 0
        for seq, arrival in statuses:
            if not self._take(seq):
                continue
            reported += 1
            if arrival is None:
                lost += 1
        if not reported:
            return None
        self.feedbacks += 1
        self.reported += reported
        self.lost += lost
        self._window_lost += lost
        self._window_reported += reported
        if self._window_reported < 50:
            return None
        window = self._window_lost, self._window_reported
        self._window_lost = self._window_reported = 0
        return window


class SubscriberEstimate:
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
            rate = 1.08 if now - self.last_decrease < 5.0 else 1.25
            self.estimate = min(self.max_bps, self.estimate * rate ** (now - self.last_update))
        self.last_update = now
        return self.estimate
