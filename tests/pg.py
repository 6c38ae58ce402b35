"""A private PostgreSQL cluster for the tests: Debian's server binaries, a temporary folder, a Unix socket only.

Started once per test session when a test first asks for PostgreSQL (`tests/conftest.py`'s `database_url`), stopped
at its end. Each test gets a database of its own, dropped after it. Nothing listens on a network address
(`listen_addresses=''`), and durability is off (fsync, full-page writes): the tests check behaviour, not crash
safety of the disk.

initdb refuses to run as root, so under root the cluster runs as Debian's `postgres` user (created by the
`postgresql` package), on a folder handed to that user; otherwise it runs as the current user.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "classcast"


def server_bin() -> Path | None:
    """The newest installed server's bin folder (/usr/lib/postgresql/<major>/bin), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


class PostgresCluster:
    def __init__(self) -> None:
        bin_dir = server_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: run `make test`, "
                               "which installs Debian's postgresql package")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="classcast-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root  # the socket file is <root>/.s.PGSQL.5432
        self.log = self.root / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:  # Debian's package makes the `postgres` user; else any unprivileged one
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                self._user = pwd.getpwnam("nobody")
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        os.chmod(self.root, 0o755)  # the test process (root or the owner) reaches the socket

    def _run_as(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def start(self) -> None:
        """initdb (the first time), then the server; returns once it accepts connections."""
        if not self.data.exists():
            subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                 "--locale=C", "--no-sync"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root, **self._run_as(),
            )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir),
                 "-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB",
                 "-c", "log_min_messages=warning", "-c", "deadlock_timeout=200ms"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True, **self._run_as(),
            )
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", str(self.socket_dir), "-U", SUPERUSER,
                                    "-d", "postgres"], check=False)
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def dsn(self, database: str = "postgres") -> str:
        """For asyncpg itself (the admin statements below)."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def new_database_name(self) -> str:
        return f"t{os.getpid()}_{next(self._names)}"

    async def create_database(self) -> str:
        import asyncpg

        name = self.new_database_name()
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def stop_server(self) -> None:
        """The server stops (fast shutdown: open connections are cut); its data stays for `start`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stop(self) -> None:
        self.stop_server()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
