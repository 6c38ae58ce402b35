"""What the SFU knows about a stream it receives from a publisher: RFC 3550 reception statistics for receiver
reports, and the missing sequence numbers it asks the publisher to retransmit (NACK).
"""

from __future__ import annotations

from sfu.rtcp import ReportBlock, ntp_middle


class ReceptionStats:
    """RFC 3550 appendix A.3 (loss) and A.8 (jitter) for one SSRC."""

    __slots__ = ("base", "clock_rate", "expected_prior", "highest", "jitter", "last_sr", "last_sr_at",
                 "received", "received_prior", "transit")

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.base: int | None = None
        self.highest = 0  # extended (unwrapped) highest sequence number
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.jitter = 0.0
        self.transit: float | None = None
        self.last_sr = 0  # middle 32 bits of the last SR's NTP time
        self.last_sr_at = 0.0

    def update(self, seq: int, timestamp: int, arrival: float) -> int:
        """Counts the packet; returns its extended sequence number."""
        if self.base is None:
            self.base = self.highest = seq
            ext = seq
        else:
            ext = self.highest + ((seq - self.highest + 0x8000) & 0xFFFF) - 0x8000
            if ext > self.highest:
                self.highest = ext
        self.received += 1
        transit = arrival * self.clock_rate - timestamp
        if self.transit is not None:
            d = abs(transit - self.transit)
            if d < self.clock_rate * 10:  # ignore timestamp jumps (publisher restarts)
                self.jitter += (d - self.jitter) / 16
        self.transit = transit
        return ext

    def on_sender_report(self, ntp: int, arrival: float) -> None:
        self.last_sr = ntp_middle(ntp)
        self.last_sr_at = arrival

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        base = self.base if self.base is not None else 0
        expected = self.highest - base + 1 if self.base is not None else 0
        lost = max(0, expected - self.received)
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior, self.received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = (lost_interval << 8) // expected_interval if expected_interval > 0 and lost_interval > 0 else 0
        dlsr = int((now - self.last_sr_at) * 65536) if self.last_sr else 0
        return ReportBlock(ssrc=ssrc, fraction_lost=min(fraction, 255), cumulative_lost=min(lost, 0x7FFFFF),
                           highest_seq=self.highest & 0xFFFFFFFF, jitter=int(self.jitter), lsr=self.last_sr,
                           dlsr=dlsr)


class NackTracker:
    """Sequence numbers missing from a publisher's stream, asked for again until they come or go stale.

    Bounded whatever the publisher's numbering does: at most `max_missing` outstanding (a stream losing more than
    that is beyond repair by NACK: start over) and at most `max_per_nack` asked in one NACK (it fits one packet).
    """

    __slots__ = ("highest", "max_age", "max_gap", "max_missing", "max_per_nack", "max_tries", "missing", "retry")

    def __init__(self, retry: float = 0.05, max_tries: int = 4, max_age: float = 1.0, max_gap: int = 512,
                 max_missing: int = 1024, max_per_nack: int = 256) -> None:
        self.highest: int | None = None
        self.missing: dict[int, list[float]] = {}  # extended seq -> [first seen, last asked, tries]
        self.retry, self.max_tries, self.max_age, self.max_gap = retry, max_tries, max_age, max_gap
        self.max_missing, self.max_per_nack = max_missing, max_per_nack

    def on_packet(self, ext_seq: int, now: float) -> None:
        highest = self.highest
        if highest is None or ext_seq - highest > self.max_gap or \
                len(self.missing) + ext_seq - highest > self.max_missing:
            self.highest = ext_seq  # first packet, or a jump too big to repair: start over
            self.missing.clear()
            return
        if ext_seq > highest:
            for s in range(highest + 1, ext_seq):
                self.missing[s] = [now, 0.0, 0]
            self.highest = ext_seq
        else:
            self.missing.pop(ext_seq, None)

    def due(self, now: float) -> list[int]:
        """Sequence numbers (16-bit) to put in a NACK now."""
        out = []
        for ext, entry in list(self.missing.items()):
            first, last, tries = entry
            if now - first > self.max_age or tries >= self.max_tries:
                del self.missing[ext]
            elif now - last >= self.retry and len(out) < self.max_per_nack:
                entry[1], entry[2] = now, tries + 1
                out.append(ext & 0xFFFF)
        return out
