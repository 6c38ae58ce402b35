"""`classcast` command line: `serve`, `drain`, `config`, `turn-config`, `doctor`, organization management
(`org create|list|credits|domains|branding`) and the operator commands of control/operator.py (`rooms`,
`participants`, `token`, `recordings`, `webhooks`).

The org commands open the same database as the server (SQLite in WAL mode tolerates the running server).
`--config FILE` (or `CLASSCAST_CONFIG`) reads a TOML file under the environment (control/config.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from control import operator_cli as operator
from control.clock import Clock
from control.config import Config, effective, unknown_variables
from control.store.records import Org
from control.store.store import Store

DEMO_ORG_KEY = "demo_org_id"
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


async def ensure_demo_org(store: Store, config: Config, clock: Clock) -> tuple[Org, bool]:
    """The demo organization made on first start; later starts find it again. Returns (org, created)."""
    org_id = await store.get_meta(DEMO_ORG_KEY)
    if org_id:
        org = await store.get_org(org_id)
        if org is not None:
            return org, False
    org = await store.create_org("Demo School", config.demo_credits, clock.now_ms())
    await store.set_meta(DEMO_ORG_KEY, org.id)
    return org, True


def banner(config: Config, org: Org, created: bool) -> str:
    base = config.base_url
    example = json.dumps({
        "roomId": "math-101", "title": "Introduction to Algebra",
        "participant": {"uid": "teacher-1", "name": "Ada Lovelace", "role": "TEACHER"},
    })
    return "\n".join([
        f"classcast is serving on {base}",
        f"Demo organization{' (created now)' if created else ''}: {org.id} ({org.name}, {org.credits} credits)",
        "Create a room and get the teacher's classroom link:",
        f"  curl -X POST {base}/v1/room/create \\",
        f"    -H 'VF-ORG-ID: {org.id}' -H 'Content-Type: application/json' \\",
        f"    -d '{example}'",
        "",
    ])


def lock_data_dir(config: Config) -> int:
    """An exclusive lock on the data dir, or SystemExit: a second server on the same dir ran its crash recovery
    before failing to bind, and closed the live sessions of the first. Returns the lock's file descriptor (not
    inherited by child processes; the kernel lets go when this process ends, however it ends)."""
    import fcntl

    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(config.data_dir / "classcast.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SystemExit(f"classcast cannot use CLASSCAST_DATA_DIR {str(config.data_dir)!r}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"another classcast server uses the data dir {str(config.data_dir)!r}: stop it first "
                         "(classcast drain), or give this one a CLASSCAST_DATA_DIR of its own") from None
    return fd


def pid_file(config: Config) -> Path:
    """Where `serve` writes its process id, for `classcast drain`."""
    return config.data_dir / "classcast.pid"


async def _serve(config: Config) -> None:
    from aiohttp import web
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from control.app import create_app, media_ready
    from control.auth import token_secret
    from control.drain import DRAIN
    from control.services import SERVICES
    from control.turn import Relay, reachability_warnings

    log = logging.getLogger("classcast")
    for warning in unknown_variables(os.environ):
        log.warning("%s", warning)
    # checked before the data dir and the migrations are written: a short secret, a database URL that does not parse
    if config.secret or config.secret_file:
        token_secret(config)
    try:
        make_url(config.db_url)
    except (ArgumentError, ValueError) as exc:
        raise SystemExit(f"CLASSCAST_DATABASE_URL does not parse: {exc}") from None
    _lock = lock_data_dir(config)  # held until the process ends (closing it would let a second server in)
    for warning in reachability_warnings(config):
        log.warning("%s", warning)
    relay: Relay | None = None
    try:
        if config.turn.mode == "embedded":  # before the site opens, so no `joined` names a relay that is not there
            relay = Relay(config.turn, config.ice, config.data_dir)
            await relay.start()
        app = await create_app(config)
        svc = app[SERVICES]
        org, created = await ensure_demo_org(svc.store, config, svc.clock)
        # A request still running when the server stops gets this long to end (aiohttp's default is 60 s, then 60
        # more once cancelled): SIGINT stops at once, and SIGTERM has drained the classes by then.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=STOP_REQUESTS_S)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
    except STARTUP_ERRORS as exc:  # a port in use, a data dir that is a file, a database URL that does not parse
        log.debug("start-up failed", exc_info=True)
        raise SystemExit(f"classcast cannot start: {exc}") from None
    # Start-up objects (modules, the app, models' tables) live as long as the process: frozen, a full collection
    # walks only what classes create (at start-up ~117,000 objects, about 30-60 ms of every full collection here).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    draining: list[asyncio.Task[int]] = []

    def on_signal(sig: signal.Signals) -> None:
        """The first SIGTERM drains (control/drain.py); SIGINT, or a second SIGTERM, stops at once."""
        if sig == signal.SIGTERM and not draining:
            task = loop.create_task(app[DRAIN].run(svc.classroom, config.drain_timeout_s))
            task.add_done_callback(lambda _t: stop.set())
            draining.append(task)
        else:
            stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    if not await media_ready(app):  # the workers started with the app, in parallel with the lines above
        log.error("the SFU worker processes are not running yet: classes wait for them (see the log above)")
    pid_path = pid_file(config)
    pid_path.write_text(f"{os.getpid()}\n")
    # Printed only once signals are handled, so whoever reads the banner may stop us cleanly at once.
    print(banner(config, org, created), flush=True)
    try:
        await stop.wait()
    finally:
        async def cleanup() -> None:
            for task in draining:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await runner.cleanup()
            if relay is not None:
                await relay.stop()

        with contextlib.suppress(OSError):
            if pid_path.read_text().strip() == str(os.getpid()):
                pid_path.unlink()
        stopping = loop.create_task(cleanup())
        done, _ = await asyncio.wait({stopping}, timeout=STOP_BOUND_S)
        if not done:
            _stuck(log, stopping)


STOP_REQUESTS_S = 5.0
# Errors of start-up that are the settings' or the machine's, not a defect: one line, no traceback (it is logged at
# debug). SQLAlchemy's, for a database URL that does not parse or a database that does not answer.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, TypeError, SQLAlchemyError)
STOP_BOUND_S = 20.0  # the whole stop (requests, classes' connections, SFU workers, sinks, the store): then it exits


def _stuck(log: logging.Logger, stopping: asyncio.Task[None]) -> None:
    """The stop did not end within STOP_BOUND_S: what every task was waiting for goes to the log (the defect to fix
    is there), and the process exits now with status 1, since waiting on would leave a node that no longer serves
    but still holds its port and its lease. Committed state is already on disk; SFU workers and sinks end when
    their link to this process closes."""
    import io

    log.error("the server did not stop within %.0f s; exiting now. Where each task was waiting:", STOP_BOUND_S)
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=8, file=out)
        log.error("%s%s", "(the stop) " if task is stopping else "", out.getvalue().strip())
    logging.shutdown()
    os._exit(1)


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    import uvloop

    from control.logs import setup_logging

    try:
        setup_logging(args.log_level)
    except ValueError as exc:
        return _fail(f"--log-level: {exc}")
    os.environ["CLASSCAST_ENGINE"] = config.engine  # a TOML file's too: sfu.engine and the workers read it here
    try:
        uvloop.run(_serve(config))
    except SystemExit as exc:  # a start-up refusal: one line with `error:` as other commands' (exit 1: not usage)
        if isinstance(exc.code, str):
            print(f"error: {exc.code}", file=sys.stderr)
            return 1
        raise
    return 0


class NoDatabase(Exception):
    """A command that reads or changes organizations found no database (a typo in CLASSCAST_DATA_DIR?)."""


async def _with_store(config: Config, fn, create: bool = False):  # type: ignore[no-untyped-def]
    """The store of this configuration. Only `create` (org create) may make a new SQLite database: the others
    made an empty one quietly where a mistyped CLASSCAST_DATA_DIR pointed, and listed nothing."""
    sqlite_file = Path(config.db_url.removeprefix("sqlite+aiosqlite:///")) if not config.database_url else None
    if sqlite_file is not None and not sqlite_file.exists():
        if not create:
            raise NoDatabase(f"no database at {sqlite_file} (is CLASSCAST_DATA_DIR right?)")
        print(f"note: creating a new database at {sqlite_file}", file=sys.stderr)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(config.db_url)
    try:
        return await fn(store)
    finally:
        await store.close()


def _org_json(org: Org) -> dict[str, object]:
    return {
        "id": org.id, "name": org.name, "credits": org.credits, "domains": org.domains,
        "branding": {"logoUrl": org.logo_url, "primaryColor": org.primary_color, "accentColor": org.accent_color,
                     "slogan": org.slogan},
    }


MAX_CREDITS = 10**15  # far below the 64-bit columns' limit, far above any school's balance


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_org(args: argparse.Namespace, config: Config) -> int:
    clock = Clock()

    async def need(store: Store, org_id: str) -> Org | None:
        org = await store.get_org(org_id)
        if org is None:
            print(f"error: no organization {org_id}", file=sys.stderr)
        return org

    if args.org_cmd == "create":
        if not args.name.strip():
            return _fail("--name must not be empty")
        if not args.name.strip().isprintable() or len(args.name.strip()) > 200:  # `org list` prints one a line
            return _fail("--name must be at most 200 printable characters (no newline or control character)")
        if not 0 <= args.credits <= MAX_CREDITS:
            return _fail(f"--credits must be between 0 and {MAX_CREDITS}")
        org = asyncio.run(_with_store(config, lambda s: s.create_org(args.name.strip(), args.credits, clock.now_ms()),
                                      create=True))
        print(json.dumps(_org_json(org)) if args.json else org.id)
        return 0

    if args.org_cmd == "list":
        orgs = asyncio.run(_with_store(config, lambda s: s.list_orgs()))
        if args.json:
            print(json.dumps([_org_json(o) for o in orgs]))
        else:
            for o in orgs:
                print(f"{o.id}  {o.credits:>10}  {o.name}  {','.join(o.domains)}")
        return 0

    if args.org_cmd == "credits":
        async def credits(store: Store) -> int:
            org = await need(store, args.org_id)
            if org is None:
                return 1
            if args.add:
                if abs(args.add) > MAX_CREDITS or not -MAX_CREDITS <= org.credits + args.add <= MAX_CREDITS:
                    print(f"error: --add would take the balance past +-{MAX_CREDITS}", file=sys.stderr)
                    return 2  # a 64-bit column: a larger number was a traceback from the database driver
                balance = await store.add_credits(org.id, args.add, "topup", clock.now_ms())
            else:
                balance = org.credits
            print(balance)
            return 0

        return asyncio.run(_with_store(config, credits))

    if args.org_cmd == "domains":
        for d in (args.add or []) + (args.remove or []):
            if not DOMAIN_RE.fullmatch(d.lower()):
                return _fail(f"{d!r} is not a domain name (example.com)")

        async def domains(store: Store) -> int:
            org = await need(store, args.org_id)
            if org is None:
                return 1
            for d in args.add or []:
                await store.add_domain(org.id, d.lower(), clock.now_ms())
            for d in args.remove or []:
                await store.remove_domain(org.id, d.lower())
            org = await store.get_org(org.id)
            assert org is not None
            print("\n".join(org.domains))
            return 0

        return asyncio.run(_with_store(config, domains))

    if args.org_cmd == "branding":
        for color in (args.primary_color, args.accent_color):
            if color is not None and not COLOR_RE.fullmatch(color):
                return _fail(f"{color!r} is not a #RRGGBB color")
        if args.logo_url is not None and not re.match(r"^https?://", args.logo_url):
            return _fail("--logo-url must be an http(s) URL")

        async def branding(store: Store) -> int:
            org = await need(store, args.org_id)
            if org is None:
                return 1
            fields = {"logo_url": args.logo_url, "primary_color": args.primary_color,
                      "accent_color": args.accent_color, "slogan": args.slogan}
            await store.set_branding(org.id, **{k: v for k, v in fields.items() if v is not None})
            org = await store.get_org(org.id)
            assert org is not None
            print(json.dumps(_org_json(org)["branding"]))
            return 0

        return asyncio.run(_with_store(config, branding))
    return _fail("unknown org command")


def cmd_config(args: argparse.Namespace, config: Config) -> int:
    """The effective configuration (file, then environment, then defaults), secrets masked; misspelt variables
    on standard error, so the JSON stays readable by a program."""
    for warning in unknown_variables(os.environ):
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(effective(config), indent=2))
    return 0


def cmd_turn_config(args: argparse.Namespace, config: Config) -> int:
    """coturn's configuration for a relay run as its own service (CLASSCAST_TURN=external); it holds the secret."""
    from control.turn import coturn_config, load_or_create_secret

    print(coturn_config(config.turn, config.ice, load_or_create_secret(config.turn, config.data_dir),
                        log_file=args.log_file), end="")
    return 0


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    """Warnings about what keeps browsers elsewhere from the media; exit status 1 when there is any."""
    from control.turn import reachability_warnings

    warnings = reachability_warnings(config)
    for warning in warnings:
        print(f"WARNING: {warning}")
    if not warnings:
        print("ok: nothing found that keeps remote browsers from the media")
    return 1 if warnings else 0


def _is_server(pid: int) -> bool:
    """Whether `pid` is a process running `classcast serve` (by its command line: a pid file outlives a server
    killed with SIGKILL, and its number may since belong to anything)."""
    if pid <= 1:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and any(b"classcast" in part or part == b"control.cli" for part in argv)


def cmd_drain(args: argparse.Namespace, config: Config) -> int:
    """SIGTERM to the server of this data dir: it drains (control/drain.py); `--wait` waits for it to exit."""
    path = pid_file(config)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return _fail(f"no running server found ({path} is missing or unreadable)")
    if not _is_server(pid):  # 0 or -1 would signal a process group or every process; a stale pid, a stranger
        return _fail(f"pid {pid} in {path} is not a running classcast server (a stale file?)")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return _fail(f"the server (pid {pid}) is not running any more")
    print(f"draining server pid {pid}", flush=True)
    if args.wait is None:
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("server stopped")
            return 0
        time.sleep(0.2)
    return _fail(f"the server (pid {pid}) is still draining after {args.wait:g} s")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="classcast", description="Self-hosted live-classroom server")
    p.add_argument("--config", help="TOML configuration file (default CLASSCAST_CONFIG); the environment wins")
    sub = p.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the server (CLASSCAST_HOST, CLASSCAST_PORT, CLASSCAST_DATA_DIR)")
    serve.add_argument("--log-level", default="INFO")
    sub.add_parser("config", help="print the effective configuration, secrets masked")
    drain = sub.add_parser("drain", help="drain the running server: no new classes, running ones finish")
    drain.add_argument("--wait", type=float, nargs="?", const=3600.0, default=None,
                       help="wait (up to this many seconds) for the server to stop")
    turn = sub.add_parser("turn-config", help="print the coturn configuration (turnserver.conf) for this server")
    turn.add_argument("--log-file", default="/var/log/turnserver.log")
    sub.add_parser("doctor", help="check that browsers outside this network can reach the media")
    operator.add_parsers(sub)
    for choice in sub.choices.values():  # `classcast serve --config F` works as well as `classcast --config F serve`
        choice.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    org = sub.add_parser("org", help="manage organizations")
    osub = org.add_subparsers(dest="org_cmd", required=True)
    c = osub.add_parser("create", help="create an organization and print its id")
    c.add_argument("--name", required=True)
    c.add_argument("--credits", type=int, default=0)
    c.add_argument("--json", action="store_true")
    ls = osub.add_parser("list", help="list organizations")
    ls.add_argument("--json", action="store_true")
    cr = osub.add_parser("credits", help="show or add credits")
    cr.add_argument("org_id")
    cr.add_argument("--add", type=int, default=0, help="credits to add (negative to correct)")
    d = osub.add_parser("domains", help="verified domains (the classroom page's frame-ancestors)")
    d.add_argument("org_id")
    d.add_argument("--add", action="append")
    d.add_argument("--remove", action="append")
    b = osub.add_parser("branding", help="logo and colors shown in the classroom")
    b.add_argument("org_id")
    b.add_argument("--logo-url")
    b.add_argument("--primary-color")
    b.add_argument("--accent-color")
    b.add_argument("--slogan")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = Config.load(args.config)
    except SystemExit as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "serve":
        return cmd_serve(args, config)
    if args.cmd == "config":
        return cmd_config(args, config)
    if args.cmd == "drain":
        return cmd_drain(args, config)
    if args.cmd == "turn-config":
        return cmd_turn_config(args, config)
    if args.cmd == "doctor":
        return cmd_doctor(args, config)
    if args.cmd in operator.COMMANDS:
        return operator.run(args, config)
    try:
        return cmd_org(args, config)
    except NoDatabase as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
