"""The recorder process: `python -m recorder --socket DATA_DIR/recorder.sock`.

Started and supervised by `classcast serve` (control/sinks/supervisor.py); its messages are control/sinks/feed.py's.
It listens on a Unix socket, serves one server connection (then media-only connections from SFU worker processes),
and runs each recording job in its own thread (recorder/job.py). When the server's connection ends (the server
stopped or died) every job is finished cleanly, files closed, and the process exits: a recorder never outlives its
server.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from recorder.job import MEDIA, Job
from sfu.wire import pack, unpacker

log = logging.getLogger("classcast.recorder")


class Recorder:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.jobs: dict[str, Job] = {}
        self._send_lock = threading.Lock()

    def emit(self, message: dict[str, Any]) -> None:
        data = pack(message)
        with self._send_lock:
            try:
                self.conn.sendall(data)
            except OSError:
                pass  # the server is gone; the files are what matters

    def serve(self) -> None:
        decoder = unpacker()
        while True:
            try:
                chunk = self.conn.recv(1 << 18)
            except OSError:
                chunk = b""
            if not chunk:
                break
            decoder.feed(chunk)
            for message in decoder:
                if isinstance(message, dict):
                    try:
                        self.dispatch(message)
                    except Exception:
                        log.exception("bad feed message %s", message.get("t"))
        self.stop_all()

    def accept_media(self, server: socket.socket) -> None:
        """Further connections on the socket are SFU worker processes sending a room's packets straight here (the
        sink by address of docs/architecture.md "Worker processes"): `rtp` and `sr` messages only, each to its job;
        everything else keeps coming over the server's connection."""
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._media, args=(conn,), daemon=True, name="recorder-media").start()

    def _media(self, conn: socket.socket) -> None:
        decoder = unpacker()
        with conn:
            while True:
                try:
                    chunk = conn.recv(1 << 18)
                except OSError:
                    return
                if not chunk:
                    return
                decoder.feed(chunk)
                for message in decoder:
                    if isinstance(message, dict) and message.get("t") in MEDIA:
                        job = self.jobs.get(str(message.get("j")))
                        if job is not None:
                            job.put(message)

    def dispatch(self, m: dict[str, Any]) -> None:
        kind, job_id = m.get("t"), str(m.get("j"))
        if kind == "start":
            if job_id in self.jobs:
                return
            try:
                self.jobs[job_id] = Job(m, self.emit)
            except Exception as exc:
                log.exception("job %s could not start", job_id)
                self.emit({"t": "failed", "j": job_id, "error": str(exc)})
            return
        job = self.jobs.get(job_id)
        if job is None:
            return
        job.put(m)
        if kind == "stop":
            self.jobs.pop(job_id, None)

    def stop_all(self) -> None:
        jobs = list(self.jobs.values())
        self.jobs.clear()
        for job in jobs:
            job.put({"t": "stop", "j": job.id})
        for job in jobs:
            job.thread.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recorder")
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    from control.logs import setup_logging  # the server's one-JSON-object-per-line format

    setup_logging(args.log_level)
    path: Path = args.socket
    if path.exists():
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(16)
    print("ready", flush=True)  # the supervisor waits for this line
    conn, _ = server.accept()  # the server's connection first: it starts jobs, and its end ends the recorder
    try:
        recorder = Recorder(conn)
        threading.Thread(target=recorder.accept_media, args=(server,), daemon=True, name="recorder-accept").start()
        recorder.serve()
    finally:
        conn.close()
        server.close()
        path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
