"""Operator commands (`classcast rooms|participants|token|recordings|webhooks ...`), issue 17.

Whatever changes something goes through the running server's REST API (`--server`, default this configuration's
address), so the server acts on it at once: an ended room's WebSockets are closed, a kicked student is
disconnected, webhooks are written. What has no REST endpoint (the roster of a room) is read from the same
database. The organization is `--org`, else `CLASSCAST_ORG_ID`, else the demo organization of this data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from control.config import Config
from control.store.store import Store

TIMEOUT_S = 30


class OperatorError(Exception):
    """Printed as `error: ...`, exit status 1."""


def server_url(args: argparse.Namespace, config: Config) -> str:
    if args.server:
        return args.server.rstrip("/")
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.port}"


async def _store_call(config: Config, fn):  # type: ignore[no-untyped-def]
    store = await Store.open(config.db_url)
    try:
        return await fn(store)
    finally:
        await store.close()


def org_id(args: argparse.Namespace, config: Config) -> str:
    if args.org:
        return str(args.org)
    if os.environ.get("CLASSCAST_ORG_ID"):
        return os.environ["CLASSCAST_ORG_ID"]
    if not Path(config.db_url.removeprefix("sqlite+aiosqlite:///")).exists() and config.db_url.startswith("sqlite"):
        raise OperatorError("no --org given and no database here to find the demo organization in")
    found = asyncio.run(_store_call(config, lambda s: s.get_meta("demo_org_id")))
    if not found:
        raise OperatorError("no --org given (or CLASSCAST_ORG_ID) and this data dir has no demo organization")
    return str(found)


def call(args: argparse.Namespace, config: Config, method: str, path: str, body: Any = None) -> Any:
    """One REST call; returns `data`. The server's error envelope becomes an OperatorError with its message."""
    url = server_url(args, config) + path
    data = json.dumps(body).encode() if body is not None else None
    headers = {"VF-ORG-ID": org_id(args, config), "Content-Type": "application/json"}
    try:
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
    except ValueError as exc:  # urllib's "unknown url type": --server abc
        raise OperatorError(f"--server {server_url(args, config)!r} is not an http(s) URL: {exc}") from None
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            payload = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())
            message = err.get("message") or exc.reason
        except ValueError:
            message = exc.reason
        raise OperatorError(f"{method} {path}: {exc.code} {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise OperatorError(f"cannot reach the server at {server_url(args, config)}: "
                            f"{getattr(exc, 'reason', exc)} (is it running? --server sets the address)") from None
    return payload.get("data", payload)


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _print(args: argparse.Namespace, data: Any, lines: list[str] | None = None) -> None:
    if args.json or lines is None:
        print(json.dumps(data, indent=2))
    else:
        for line in lines:
            print(line)


def rooms(args: argparse.Namespace, config: Config) -> int:
    if args.rooms_cmd == "list":
        data = call(args, config, "GET", f"/v1/rooms?status={args.status}&limit={args.limit}")
        _print(args, data, [f"{r['roomId']}  {r['status']:<8}  {r['participantCount']:>4}  {r['title']}"
                            for r in data["rooms"]])
    elif args.rooms_cmd == "show":
        status = call(args, config, "GET", f"/v1/room/{_q(args.room)}/status")
        if not status.get("exists"):
            raise OperatorError(f"no room {args.room}")
        summary = call(args, config, "GET", f"/v1/room/{_q(args.room)}/summary")
        _print(args, {"status": status, "summary": summary})
    elif args.rooms_cmd == "end":
        data = call(args, config, "DELETE", f"/v1/room/{_q(args.room)}")
        _print(args, data, [f"ended {data['roomId']}: {data['participantsDisconnected']} disconnected"])
    return 0


def participants(args: argparse.Namespace, config: Config) -> int:
    if args.participants_cmd == "list":
        oid = org_id(args, config)

        async def roster(store: Store) -> list[dict[str, Any]]:
            room = await store.get_room(oid, args.room)
            if room is None:
                raise OperatorError(f"no room {args.room}")
            live = {p.uid for p in await store.active_participants(room.sid)}
            return [{"uid": p.uid, "name": p.name, "role": p.role, "connected": p.uid in live, "muted": p.muted,
                     "removed": p.removed} for p in await store.list_participants(room.sid)]

        rows = asyncio.run(_store_call(config, roster))
        _print(args, rows, [f"{r['uid']}  {r['role']:<9}  {'connected' if r['connected'] else '-':<9}  "
                            f"{'removed' if r['removed'] else ''}  {r['name']}" for r in rows])
    elif args.participants_cmd == "kick":
        body = {"reason": args.reason} if args.reason else {}
        data = call(args, config, "POST", f"/v1/room/{_q(args.room)}/participants/{_q(args.uid)}/remove", body)
        _print(args, data, [f"removed {args.uid} from {args.room}"])
    return 0


def token(args: argparse.Namespace, config: Config) -> int:
    body = {"participant": {"uid": args.uid, "name": args.name or args.uid, "role": args.role.upper()},
            "expiresIn": args.ttl}
    data = call(args, config, "POST", f"/v1/room/{_q(args.room)}/join", body)
    _print(args, data, [data["token"], data["iframeUrl"]])
    return 0


def recordings(args: argparse.Namespace, config: Config) -> int:
    if args.recordings_cmd == "list":
        data = call(args, config, "GET", f"/v1/room/{_q(args.room)}/recordings")
        _print(args, data, [f"{r['egressId']}  {r['status']:<16}  {r['size'] or 0:>10}  "
                            f"{(r['duration'] or 0):8.1f}s  {r['startedAt']}" for r in data["recordings"]])
    elif args.recordings_cmd == "download":
        data = call(args, config, "GET", f"/v1/room/{_q(args.room)}/recordings/download")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if not data["files"]:
            raise OperatorError(f"room {args.room} has no finished recording to download")
        for f in data["files"]:
            # The link carries the public base URL; fetch it from the server this command talks to.
            parts = urllib.parse.urlsplit(f["downloadUrl"])
            url = server_url(args, config) + parts.path + "?" + parts.query
            target = out / Path(f["filename"]).name
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(target, "wb") as fh:
                    while chunk := resp.read(1 << 16):
                        fh.write(chunk)
            except (urllib.error.URLError, OSError) as exc:
                raise OperatorError(f"download of {f['filename']} failed: {exc}") from None
            print(f"{target}  {target.stat().st_size} bytes")
    return 0


def webhooks(args: argparse.Namespace, config: Config) -> int:
    if args.webhooks_cmd == "add":
        body: dict[str, Any] = {"url": args.url}
        if args.event:
            body["events"] = args.event
        if args.description:
            body["description"] = args.description
        data = call(args, config, "POST", "/v1/webhooks", body)
        _print(args, data, [data["id"], f"secret (shown once): {data['secret']}"])
    elif args.webhooks_cmd == "list":
        data = call(args, config, "GET", "/v1/webhooks")
        _print(args, data, [f"{w['id']}  {w['url']}  {','.join(w['events'])}" for w in data["webhooks"]])
    elif args.webhooks_cmd == "remove":
        call(args, config, "DELETE", f"/v1/webhooks/{_q(args.id)}")
        print(f"removed {args.id}")
    elif args.webhooks_cmd == "test":
        data = call(args, config, "POST", f"/v1/webhooks/{_q(args.id)}/test")
        _print(args, data, [f"delivered ({data['status']})" if data["delivered"] else f"failed: {data['error']}"])
        return 0 if data["delivered"] else 1
    return 0


def add_parsers(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--server", help="the server's base URL (default: this configuration's host and port)")
        p.add_argument("--org", help="organization id (default: CLASSCAST_ORG_ID, else the demo organization)")
        p.add_argument("--json", action="store_true", help="print the API's JSON")
        return p

    r = sub.add_parser("rooms", help="list, show and end rooms").add_subparsers(dest="rooms_cmd", required=True)
    ls = common(r.add_parser("list"))
    ls.add_argument("--status", choices=("created", "live", "finished", "all"), default="all",
                    help="created: nobody joined yet; live: a class running; finished: ended (default: all)")
    ls.add_argument("--limit", type=int, default=100)
    common(r.add_parser("show")).add_argument("room")
    common(r.add_parser("end", help="end the class (participants disconnected, recordings finished, billed)")
           ).add_argument("room")

    p = sub.add_parser("participants", help="list and kick participants").add_subparsers(
        dest="participants_cmd", required=True)
    common(p.add_parser("list", help="the room's participants (read from the database)")).add_argument("room")
    kick = common(p.add_parser("kick", help="remove a participant (they cannot rejoin)"))
    kick.add_argument("room")
    kick.add_argument("uid")
    kick.add_argument("--reason")

    t = sub.add_parser("token", help="participant tokens").add_subparsers(dest="token_cmd", required=True)
    issue = common(t.add_parser("issue", help="a join token and classroom link for a participant"))
    issue.add_argument("room")
    issue.add_argument("uid")
    issue.add_argument("--name")
    issue.add_argument("--role", default="STUDENT", choices=("TEACHER", "MODERATOR", "STUDENT", "teacher",
                                                             "moderator", "student"))
    issue.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid")

    rec = sub.add_parser("recordings", help="list and download recordings").add_subparsers(
        dest="recordings_cmd", required=True)
    common(rec.add_parser("list")).add_argument("room")
    dl = common(rec.add_parser("download", help="download every finished file of the room"))
    dl.add_argument("room")
    dl.add_argument("--out", default=".", help="folder to write the MP4 files in")

    w = sub.add_parser("webhooks", help="webhook endpoints").add_subparsers(dest="webhooks_cmd", required=True)
    add = common(w.add_parser("add", help="register an endpoint; prints its id and its secret (shown once)"))
    add.add_argument("url")
    add.add_argument("--event", action="append", help="an event type to send (repeat; default all)")
    add.add_argument("--description")
    common(w.add_parser("list"))
    common(w.add_parser("remove")).add_argument("id")
    common(w.add_parser("test", help="send one signed webhook_test event now")).add_argument("id")


COMMANDS = {"rooms": rooms, "participants": participants, "token": token, "recordings": recordings,
            "webhooks": webhooks}


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        return COMMANDS[args.cmd](args, config)
    except OperatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
