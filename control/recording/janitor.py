"""The janitor: recording files are deleted `CLASSCAST_RECORDING_TTL` seconds (6 h) after their class ends.

It runs in the server (which owns the database) at start-up, to catch up on what expired while it was down, and
then periodically. Only finished jobs (EGRESS_COMPLETE, EGRESS_FAILED) of ended rooms are considered and jobs the
recorder is still writing are skipped by id, so a file being written is never deleted. Rows are kept, marked with
`deleted_at`, so listings can say the recording expired.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from control.clock import Clock
from control.store.store import Store

log = logging.getLogger("classcast.recording.janitor")

FINISHED = ("EGRESS_COMPLETE", "EGRESS_FAILED")
DEFAULT_TTL_S = 6 * 3600


class Janitor:
    def __init__(self, store: Store, root: Path, clock: Clock, ttl_s: int = DEFAULT_TTL_S,
                 busy: Callable[[], set[str]] = set) -> None:
        self.store, self.root, self.clock, self.ttl_s, self.busy = store, root, clock, ttl_s, busy

    async def run_once(self) -> list[str]:
        """Deletes what expired; returns the recording ids it cleaned."""
        now = self.clock.now_ms()
        busy = self.busy()
        cleaned = []
        for rec in await self.store.expired_recordings(now - self.ttl_s * 1000, FINISHED):
            if rec.id in busy:
                continue
            for f in await self.store.recording_files([rec.id]):
                self._unlink(self.root / f.path)
            job_dir = (self.root / rec.id).resolve()
            if job_dir.parent == self.root.resolve() and job_dir.is_dir():
                shutil.rmtree(job_dir, ignore_errors=True)
            await self.store.update_recording(rec.id, deleted_at=now)
            cleaned.append(rec.id)
        if cleaned:
            log.info("janitor deleted the files of %d recordings", len(cleaned))
        return cleaned

    def _unlink(self, path: Path) -> None:
        resolved = path.resolve()
        if resolved.is_relative_to(self.root.resolve()):
            resolved.unlink(missing_ok=True)
