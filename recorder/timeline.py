"""Where a frame belongs on the recording's timeline, from the publishers' RTCP sender reports.

Each publisher stamps all its tracks with one NTP clock, so mapping RTP time -> NTP time -> recording time keeps a
publisher's audio and video in sync exactly, whatever their network delays. The NTP clock of a publisher is tied to
the recording's clock by its least delayed sender report (arrival minus NTP, the smallest seen). Nothing is ever
zeroed per stream.

Before a track's first sender report arrives, frames wait (up to `SR_WAIT` seconds); a track that never sends one
falls back to arrival times. Within a track, timestamps follow the RTP clock, re-anchored only when the sender
reports say it drifted by more than `MAX_DRIFT`.
"""

from __future__ import annotations

SR_WAIT = 1.5
MAX_DRIFT = 0.02


def ntp_seconds(ntp: int) -> float:
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / 2**32


def rtp_delta(a: int, b: int) -> int:
    """a - b on the 32-bit RTP clock, wrap-aware."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


class TrackClock:
    def __init__(self, clock_rate: int, t0: float, publisher_offsets: dict[str, float], uid: str) -> None:
        self.rate = clock_rate
        self.t0 = t0
        self.offsets = publisher_offsets  # uid -> (monotonic - NTP seconds), shared by a publisher's tracks
        self.uid = uid
        self.sr: tuple[float, int] | None = None  # (NTP seconds, RTP timestamp) of the latest report
        self.anchor: tuple[int, float] | None = None  # (RTP timestamp, recording seconds)
        self.first_arrival: float | None = None
        self.fallback = False

    def on_sender_report(self, ntp: int, rtp_ts: int, arrival: float) -> None:
        seconds = ntp_seconds(ntp)
        self.sr = (seconds, rtp_ts)
        # The tie is (arrival - NTP) of the least delayed report seen: a report that waited in a busy event loop
        # or a queue arrives late and would shift all of the publisher's tracks later (by seconds on a loaded
        # machine); a later report that arrives sooner shows it, and the earlier tie is corrected.
        offset = arrival - seconds
        known = self.offsets.get(self.uid)
        if known is None or offset < known - MAX_DRIFT:
            self.offsets[self.uid] = offset

    def ready(self, now: float) -> bool:
        if self.sr is not None or self.fallback:
            return True
        if self.first_arrival is not None and now - self.first_arrival > SR_WAIT:
            self.fallback = True
        return self.fallback

    def seconds(self, rtp_ts: int, arrival: float) -> float:
        """Recording time (s since the job's start) of an RTP timestamp; call once `ready`."""
        if self.first_arrival is None:
            self.first_arrival = arrival
        predicted = None
        if self.anchor is not None:
            predicted = self.anchor[1] + rtp_delta(rtp_ts, self.anchor[0]) / self.rate
        if self.sr is not None and self.uid in self.offsets:
            sr_ntp, sr_rtp = self.sr
            measured = sr_ntp + rtp_delta(rtp_ts, sr_rtp) / self.rate + self.offsets[self.uid] - self.t0
        elif predicted is None:
            measured = arrival - self.t0
        else:
            measured = predicted
        if predicted is None or abs(measured - predicted) > MAX_DRIFT:
            self.anchor = (rtp_ts, measured)
            return measured
        return predicted
