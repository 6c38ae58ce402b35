"""Where a frame belongs on the recording's timeline, from the publishers' RTCP sender reports.

Each publisher stamps all its tracks with one NTP clock, so mapping RTP time -> NTP time -> recording time keeps a
publisher's audio and video in sync exactly, whatever their network delays. The NTP clock of a publisher is tied to
the recording's clock by its least delayed evidence (arrival minus NTP time, the smallest seen): sender reports,
and every frame of a track that has one (a frame cannot arrive before its picture or sound was taken). Nothing is
ever zeroed per stream.

Arrival times lie after a stall: when the SFU's event loop (or the machine) was busy for a second, the packets and
reports that queued meanwhile all arrive at once, stamped late by up to that second, and the packets after them
show it at once. So nothing is placed on a single arrival: a track's frames wait `SETTLE` seconds after its first
one (and until its first sender report, up to `SR_WAIT` seconds; Chromium sends an audio report only every ~5 s);
a track that has none by then is placed by the arrival of its least delayed frame so far, carried along its RTP
clock. Within a track, timestamps follow the RTP clock. When the evidence moves by more than `MAX_DRIFT` and at
most `SLEW_MAX` (the first frames' tie was a few tens of ms late on a busy machine, and a report that arrived sooner
showed it), the track is slewed there at `SLEW_RATE` of its media time: a jump back would put two sounds or
pictures a few tens of ms closer than they were taken (ci47's beeps 1.941 s apart on a 2 s clock). Larger moves (a
stall, a publisher that restarted its clocks) are taken at once, and so is the first report of a new clock (a
simulcast feed that switched layers by a guess, see `TrackClock.clock`), whatever its distance.

A report that maps the track later than the one standing is ambiguous. An aiortc sender whose event loop stalled
stamps a report sent amid its burst with the send time, not the capture time: believed, it would push the track
later by the stall. A browser's microphone whose audio thread stalled has lost time for good: its RTP clock counts
samples, the samples after the hole were taken later than the count says, and its next report says so. The frames
after the report tell them apart (a frame cannot arrive before it was taken): the stalled sender's next frames
arrive on the earlier mapping, the browser's all arrive later. So such a report is held as a candidate and taken at
once after `CONFIRM_S` of frames that do not refute it (ci69: a Chromium camera drifted 115 ms behind its
microphone in 10 s while the earlier mapping stood for good). A browser reports its microphone only every ~5 s;
its frames show the hole within a second, against its publisher's other tracks (`TrackClock._holes`), also while a
later report waits for its confirmation (a traced composite started on a report from before a hole, and a second
hole during that report's wait went unseen for 6 s).
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger("classcast.recorder.timeline")

SR_WAIT = 1.5
SETTLE = 0.5
MAX_DRIFT = 0.02
# A move of the evidence up to this much is slewed, not jumped, at SLEW_RATE seconds per second of the track's media
# time: 1% (10 ms a second) is below what anyone hears or sees, and keeps a 2 s beat within 20 ms while it lasts.
SLEW_MAX = 0.15
SLEW_RATE = 0.01
# A report that maps the track's RTP time later than the last one did, by more than MAX_DRIFT and at most this
# much, came from a sender that stalled (see `on_sender_report`); the earlier mapping stands.
STALL_MAX = 5.0
# A later report (see above) that no frame refuted for this long is taken: a second of 20 ms audio frames or
# 30 fps video has dozens of chances to show a stalled sender's burst is over.
CONFIRM_S = 1.0
# A microphone whose frames all arrived more than HOLE_MIN later than usual for two windows of this long, beyond
# what its publisher's other tracks did, lost that much time (see `TrackClock._holes`). The least lag of a window
# of a dozen audio frames is steady to a millisecond, so a hole of two of Chromium's 10 ms audio buffers is seen;
# at MAX_DRIFT a 20 ms hole went unseen, and its next report, within MAX_DRIFT of the placement, moved nothing.
LAG_WINDOW = 0.25
HOLE_MIN = 0.01
# Windows a `Lag` keeps before the one filling: the other tracks' usual in `TrackClock._holes` reaches this far back.
LAG_KEPT = 11
# A frame is evidence for the tie only this close (RTP time) to the report that maps it: the publisher's RTP and
# NTP clocks drift apart slowly, and a 32-bit RTP difference wraps after hours.
EVIDENCE_SPAN = 10.0


def ntp_seconds(ntp: int) -> float:
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / 2**32


def rtp_delta(a: int, b: int) -> int:
    """a - b on the 32-bit RTP clock, wrap-aware."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


class Lag:
    """How late a track's frames arrive after the moment they are placed at, by LAG_WINDOW windows of that
    moment (the recording's time, on one grid for all tracks: a publisher's tracks are compared over the same
    moments, whatever order their packets came in). A frame's lag is the path's delay plus its jitter: the least
    of a window is the path's."""

    def __init__(self) -> None:
        self.windows: dict[int, float] = {}  # window number -> least lag
        self.last: int | None = None  # the window filling now

    def add(self, placed: float, lag: float) -> bool:
        """Whether this frame began a new window (the ones before it are complete)."""
        k = math.floor(placed / LAG_WINDOW)
        self.windows[k] = min(self.windows.get(k, math.inf), lag)
        if self.last is not None and k <= self.last:
            return False
        self.last = k
        for old in [old for old in self.windows if old < k - LAG_KEPT]:
            del self.windows[old]
        return True

    def least(self, ks: range) -> float | None:
        return min((self.windows[k] for k in ks if k in self.windows), default=None)

    def complete(self, k: int) -> bool:
        return self.last is not None and self.last > k

    def moved(self, by: float, since: int) -> None:
        """The frames of windows `since` on were placed `by` seconds too early: their lags, had they not been."""
        for k in self.windows:
            if k >= since:
                self.windows[k] -= by

    def forget(self, before: int) -> None:
        for k in [k for k in self.windows if k < before]:
            del self.windows[k]

    def reset(self) -> None:
        self.windows.clear()
        self.last = None


class TrackClock:
    def __init__(self, clock_rate: int, t0: float, publisher_offsets: dict[str, float], uid: str,
                 peers: dict[str, list[Lag]] | None = None, counts_samples: bool = False) -> None:
        self.rate = clock_rate
        self.t0 = t0
        self.offsets = publisher_offsets  # uid -> (monotonic - NTP seconds), shared by a publisher's tracks
        self.uid = uid
        self.sr: tuple[float, int] | None = None  # (NTP seconds, RTP timestamp) of the latest report
        self.anchor: tuple[int, float] | None = None  # (RTP timestamp, recording seconds)
        self.first_arrival: float | None = None
        self.fallback = False
        # (RTP timestamp, monotonic seconds): when that timestamp would have arrived with the least delay any
        # frame observed since had (the track's own arrival clock, for placement without a sender report).
        self.least: tuple[int, float] | None = None
        self.slewing = False  # moving toward the evidence at SLEW_RATE (see the module's docstring)
        self.last_placed: float | None = None  # recording seconds of the latest frame placed
        # The sender's clock its reports map (`sfu.taps.Tap.sender_report`): a simulcast feed starts a new one when
        # it switches layers by an arrival-time guess. A new clock's report is the truth about the timestamps from
        # the switch on, however far from the last mapping: it is taken at once (`jump`), never held for a stall.
        self.clock = 0
        self.jump = False  # the next frame is placed by the latest report at once, neither slewed nor held
        # (NTP seconds, RTP timestamp, arrival) of a report that maps later than the one standing, until the frames
        # after it confirm it (a sender's clock that lost time) or refute it (a stalled sender's burst).
        self.later: tuple[float, int, float] | None = None
        # A microphone's RTP clock counts samples and can lose time (`counts_samples`); every track tells its
        # publisher's others how its frames arrive: `peers` is uid -> the Lag of each of its tracks.
        self.counts_samples = counts_samples
        self.lag = Lag()
        self.peers = (peers if peers is not None else {}).setdefault(uid, [])
        self.peers.append(self.lag)
        self.keep_lag = False  # the next jump is `_holes`'s own, which corrected the lags it measured
        self.doubted: float | None = None  # (arrival - NTP) of a report left out (see `on_sender_report`)
        self.hole_check = False  # `_holes` has complete windows to compare and has not settled them yet

    def on_sender_report(self, ntp: int, rtp_ts: int, arrival: float, clock: int = 0) -> None:
        seconds = ntp_seconds(ntp)
        known = self.offsets.get(self.uid)
        if known is not None and arrival - seconds < known - STALL_MAX:
            # It claims its frame was taken more than STALL_MAX later than the publisher's reports so far allow:
            # the tie would drop by that much for all of the publisher's tracks, and one report an hour ahead put
            # the microphone an hour early, out of the file. Taken only once the next report says the same (the
            # earlier ones then all came after a long stall); a report alone is left out.
            doubted, self.doubted = self.doubted, arrival - seconds
            if doubted is None or abs(doubted - self.doubted) > SLEW_MAX:
                return
        self.doubted = None
        if clock != self.clock:
            self.jump = self.sr is not None
            self.clock, self.sr = clock, None
        if self.sr is not None:
            # aiortc (the Python client, the bench's and the tests' publishers) stamps a report with the send time
            # of its last packet, not the capture time of its RTP timestamp. A sender whose event loop stalled sends
            # the frames that queued in a burst, and a report sent amid it maps a frame taken early in the stall to
            # the stall's end: placed by it, the rest of the track would jump later by up to the stall (a gap in
            # the file, and the track off the publisher's others). So the earlier mapping stands, restated at this
            # report's RTP time, and the report waits as a candidate (`later`): a browser's microphone that lost
            # time sends the same kind of report, and its frames confirm it (see the module's docstring).
            mapped = self.sr[0] + rtp_delta(rtp_ts, self.sr[1]) / self.rate
            if MAX_DRIFT < seconds - mapped <= STALL_MAX:
                self.sr = (mapped, rtp_ts)
                self.later = (seconds, rtp_ts, arrival)
                return
        self.sr, self.later = (seconds, rtp_ts), None
        # The tie is (arrival - NTP) of the least delayed report seen: a report that waited in a busy event loop
        # or a queue arrives late and would shift all of the publisher's tracks later (by seconds on a loaded
        # machine); a later report that arrives sooner shows it, and the earlier tie is corrected.
        self._tie(arrival - seconds)
        if self.least is not None and self.anchor is None:  # the frames seen before the report are evidence too
            self._evidence(*self.least)

    def observe(self, rtp_ts: int, arrival: float) -> None:
        """Every frame as it arrives, before it is placed: its arrival bounds the delay of the path."""
        if self.first_arrival is None:
            self.first_arrival = arrival
        least = self.least
        if least is None or rtp_delta(rtp_ts, least[0]) > EVIDENCE_SPAN * self.rate:
            self.least = (rtp_ts, arrival)
        else:
            at = arrival - rtp_delta(rtp_ts, least[0]) / self.rate
            if at < least[1]:
                self.least = (least[0], at)
        if self.anchor is None:
            self._evidence(rtp_ts, arrival)
        if self.later is not None:
            self._check_later(rtp_ts, arrival)

    def _check_later(self, rtp_ts: int, arrival: float) -> None:
        """A frame cannot arrive before it was taken: one that arrives sooner than the later report allows (taken
        where it maps it, plus the publisher's least delay) refutes it, as the frames after a stalled sender's
        burst do. A report no frame refuted for CONFIRM_S is the sender's clock: it is taken at once (the sound
        after a hole in the capture was taken that much later: a gap in the file is what happened)."""
        ntp, sr_rtp, received = self.later  # type: ignore[misc]
        tie = self.offsets.get(self.uid)
        if tie is None:
            return
        if arrival < ntp + rtp_delta(rtp_ts, sr_rtp) / self.rate + tie - MAX_DRIFT:
            self.later = None
        elif arrival - received >= CONFIRM_S:
            if self.sr is not None:
                moved = ntp - self.sr[0] - rtp_delta(sr_rtp, self.sr[1]) / self.rate
                log.info("%s's %d Hz track: a later sender report confirmed by its frames, moved %+.0f ms",
                         self.uid, self.rate, 1000 * moved)
                # The lags of the frames taken after the report are kept as they would have been on its mapping,
                # not thrown away: a hole while the report waited is still seen (a traced composite's was not, and
                # its microphone stayed 30 ms early for 6 s). Those before it go: the report's own hole fell
                # somewhere among them, and on either mapping some of them would look early.
                since = math.floor(self._placed(sr_rtp) / LAG_WINDOW) + 1
                self.lag.forget(before=since)
                self.lag.moved(moved, since=since)
                self.keep_lag = True
            self.sr, self.later, self.jump = (ntp, sr_rtp), None, True

    def _evidence(self, rtp_ts: int, arrival: float) -> None:
        """A frame of RTP time `rtp_ts` arrived at `arrival`: it was taken at the NTP time the latest report maps
        it to, so (arrival - that) bounds the tie from above, like a report does. Used only until the track
        places its first frame (what a stall at the start can spoil): later, a simulcast feed's layer switch
        placed by an arrival guess (sfu.producer.TapFeed) would map frames through the previous layer's report
        for a moment, and reports keep the tie from then on."""
        if self.sr is None:
            return
        sr_ntp, sr_rtp = self.sr
        since = rtp_delta(rtp_ts, sr_rtp) / self.rate
        if abs(since) <= EVIDENCE_SPAN:
            self._tie(arrival - (sr_ntp + since))

    def _tie(self, offset: float) -> None:
        known = self.offsets.get(self.uid)
        if known is None or offset < known - MAX_DRIFT:
            self.offsets[self.uid] = offset

    def ready(self, now: float) -> bool:
        """Whether frames may be placed now (see the module's docstring); `now` on the arrival clock."""
        if self.fallback:
            return True
        if self.first_arrival is None:
            return False
        waited = now - self.first_arrival
        if self.sr is not None:
            return waited >= SETTLE
        if waited > SR_WAIT:
            self.fallback = True
        return self.fallback

    def seconds(self, rtp_ts: int, arrival: float) -> float:
        """Recording time (s since the job's start) of an RTP timestamp; call once `ready`."""
        if self.first_arrival is None:
            self.first_arrival = arrival
        predicted, jumped = None, False
        if self.anchor is not None:
            predicted = self.anchor[1] + rtp_delta(rtp_ts, self.anchor[0]) / self.rate
        if self.sr is not None and self.uid in self.offsets:
            sr_ntp, sr_rtp = self.sr
            measured = sr_ntp + rtp_delta(rtp_ts, sr_rtp) / self.rate + self.offsets[self.uid] - self.t0
            if self.jump:
                jumped, self.jump = True, False
        elif predicted is None:
            least = self.least
            if least is None or abs(rtp_delta(rtp_ts, least[0])) > EVIDENCE_SPAN * self.rate:
                measured = arrival - self.t0
            else:
                measured = least[1] + rtp_delta(rtp_ts, least[0]) / self.rate - self.t0
        else:
            measured = predicted
        if predicted is None or jumped or abs(measured - predicted) > SLEW_MAX:
            self.anchor, self.slewing = (rtp_ts, measured), False
            if not self.keep_lag:  # the lags so far were against another placement
                self.lag.reset()
            self.keep_lag = False
            placed = measured
        else:
            placed = self._slew(rtp_ts, predicted, measured)
        self.last_placed = placed
        if self.sr is not None:
            self._holes(placed, arrival - self.t0 - placed)
        return placed

    def _holes(self, placed: float, lag: float) -> None:
        """A browser's microphone whose audio thread stalled lost time for good (see `later`), and its frames show
        it at once, every one arriving that much later than usual; its next report may be 5 s away (Chromium's
        for audio). A congested path makes its publisher's other tracks that much later too, and a camera held
        back by its sender's pacer is late alone: so a microphone whose frames of the last half second all arrived
        later than usual by more than HOLE_MIN beyond what every other track of its publisher did over the same
        moments is moved that much later at once. Without another track, the next report does it."""
        if self.slewing:  # the placement itself is moving: lags say nothing of the path meanwhile
            self.lag.reset()
            return
        if self.lag.add(placed, lag):  # the windows before this frame's are complete: look at them
            self.hole_check = True
        if not self.hole_check or not self.counts_samples or self.sr is None:
            return
        k = self.lag.last
        assert k is not None
        recent, usual = range(k - 2, k), range(k - 10, k - 2)
        now, before = self.lag.least(recent), self.lag.least(usual)
        if now is None or before is None or now - before <= HOLE_MIN:
            self.hole_check = False
            return
        # The others' usual reaches a window further back and their recent is the last window only: a change of
        # the path at time T falls in one window, where one track may have a frame before T and another none (30
        # fps against 50), and compared over the same windows a congested path would show on this track alone.
        theirs = []
        for lags in self.peers:
            if lags is not self.lag and lags.complete(k - 1):
                since, was = lags.least(range(k - 1, k)), lags.least(range(k - LAG_KEPT, k - 2))
                if since is not None and was is not None:
                    theirs.append(since - was)
        # The other tracks' frames of the same moments may still be on their way (a camera frame taken at the
        # window's edge arrives after this one): until one track has them, look again at this track's next frame.
        self.hole_check = not theirs
        if theirs and now - before - max(theirs) > HOLE_MIN:
            lost = now - before - max(theirs)
            log.info("%s's %d Hz track lost %.0f ms at its sender (its frames %.0f ms later than usual, its "
                     "publisher's others %.0f ms)", self.uid, self.rate, 1000 * lost, 1000 * (now - before),
                     1000 * max(theirs))
            if self.later is not None:
                # A report waiting for confirmation that was taken before this hole: the sound after the hole was
                # taken `lost` later than it says too (confirmed as it was, it would undo this move). The hole
                # began after the window before the first late one (its least is a frame before the hole), and the
                # first late one may be before k - 2 when the check waited. Both placed by their RTP time on the
                # standing mapping, where the lags were measured.
                start = k - 2
                while start - 1 in self.lag.windows and self.lag.windows[start - 1] - before > HOLE_MIN:
                    start -= 1
                if self._placed(self.later[1]) < (start - 1) * LAG_WINDOW:
                    self.later = (self.later[0] + lost, self.later[1], self.later[2])
            self.sr, self.jump, self.keep_lag = (self.sr[0] + lost, self.sr[1]), True, True
            self.lag.moved(lost, since=k - 2)  # the usual lag stays the usual: the next hole is measured from it

    def _placed(self, rtp_ts: int) -> float:
        """Where the standing mapping places an RTP time on the recording (call with `sr` and the tie known)."""
        assert self.sr is not None
        return self.sr[0] + rtp_delta(rtp_ts, self.sr[1]) / self.rate + self.offsets[self.uid] - self.t0

    def _slew(self, rtp_ts: int, predicted: float, measured: float) -> float:
        """Where a frame goes while the evidence is within SLEW_MAX of the track's own clock: on that clock while
        they agree within MAX_DRIFT; otherwise moved toward the evidence by at most SLEW_RATE of the media time
        since the last placement, until they agree within a quarter of MAX_DRIFT."""
        assert self.last_placed is not None  # a prediction needs an anchor, set only where a frame was placed
        error = measured - predicted
        if abs(error) > MAX_DRIFT:
            self.slewing = True
        elif abs(error) <= MAX_DRIFT / 4:
            self.slewing = False
        if not self.slewing:
            return predicted
        bound = SLEW_RATE * abs(predicted - self.last_placed)
        placed = predicted + max(-bound, min(bound, error))
        self.anchor = (rtp_ts, placed)
        return placed
