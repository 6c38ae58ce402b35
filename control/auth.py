"""Join tokens: issued by the control plane, validated in exactly one place for every consumer.

Signaling, the classroom page and the AI tutor all call `Auth.validate`, so a token is refused for the same
reasons everywhere: bad signature, expiry (against the injectable clock, not pyjwt's own), a room that ended, a
participant who was removed. The HS256 secret (`token_secret`) is the operator's when set (`CLASSCAST_SECRET`
or `CLASSCAST_SECRET_FILE`): several nodes with one secret accept each other's tokens and download links. Unset, it
is generated on first start and kept in the data dir, so tokens survive restarts of the one node.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jwt

from control.clock import Clock
from control.errors import ApiError
from control.store.records import Participant, Room
from control.store.store import Store

if TYPE_CHECKING:
    from control.config import Config

ALGORITHM = "HS256"
SECRET_FILE = "jwt-secret"
MIN_SECRET_CHARS = 32


def load_or_create_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex())
    return secret


def _secret_bytes(value: str, where: str) -> bytes:
    """64 hex digits are the bytes they spell (so a node's DATA_DIR/jwt-secret can be copied to the others and its
    tokens stay valid); anything else is used as text. Short secrets are refused: they could be guessed."""
    value = value.strip()
    if len(value) < MIN_SECRET_CHARS:
        raise SystemExit(f"{where} must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)")
    if len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    return value.encode()


def token_secret(config: Config) -> bytes:
    """The secret that signs join tokens and recording download links: CLASSCAST_SECRET, else the file
    CLASSCAST_SECRET_FILE names, else this data dir's own (made on first start)."""
    if config.secret:
        return _secret_bytes(config.secret, "CLASSCAST_SECRET")
    if config.secret_file:
        try:
            text = Path(config.secret_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"CLASSCAST_SECRET_FILE {config.secret_file}: {exc}") from None
        return _secret_bytes(text, f"CLASSCAST_SECRET_FILE {config.secret_file}")
    return load_or_create_secret(config.data_dir)


@dataclass(frozen=True, slots=True)
class Claims:
    org_id: str
    room_id: str
    room_sid: str
    uid: str
    name: str
    role: str
    photo: str | None
    iat: int
    exp: int
    jti: str


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token entitles its bearer to, with the current room and participant records."""

    claims: Claims
    room: Room
    participant: Participant


class TokenError(ApiError):
    pass


def _token_error(status: int, message: str, code: str) -> TokenError:
    return TokenError(status, message, code)


class Auth:
    def __init__(self, secret: bytes, clock: Clock, store: Store) -> None:
        self._secret = secret
        self._clock = clock
        self._store = store

    def issue(self, org_id: str, room: Room, participant: Participant, ttl_s: int) -> tuple[str, int]:
        """Returns the token and its expiry in epoch milliseconds."""
        iat = self._clock.now_ms() // 1000
        exp = iat + ttl_s
        payload = {
            "iss": "classcast",
            "sub": participant.uid,
            "org": org_id,
            "room": room.room_id,
            "rsid": room.sid,
            "uid": participant.uid,
            "name": participant.name,
            "role": participant.role,
            "photo": participant.photo_url,
            "iat": iat,
            "exp": exp,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), exp * 1000

    def decode(self, token: str) -> Claims:
        """Signature and expiry only; `validate` adds the room and participant checks."""
        claims = self.signed_claims(token)
        if self._clock.now_ms() >= claims.exp * 1000:
            raise _token_error(401, "Token expired", "TOKEN_EXPIRED")
        return claims

    def signed_claims(self, token: str) -> Claims:
        """The claims of a token this server signed, expired or not (an error page still knows whose it is)."""
        if not isinstance(token, str) or not token:
            raise _token_error(401, "Missing token", "INVALID_TOKEN")
        if not token.isascii():  # a JWT is base64url; aiohttp hands a header's other bytes on as surrogates
            raise _token_error(401, "Invalid token: not a JWT", "INVALID_TOKEN")
        try:
            payload = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "iat", "uid", "room"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _token_error(401, f"Invalid token: {exc}", "INVALID_TOKEN") from exc
        try:
            claims = Claims(
                org_id=str(payload["org"]), room_id=str(payload["room"]), room_sid=str(payload["rsid"]),
                uid=str(payload["uid"]), name=str(payload["name"]), role=str(payload["role"]),
                photo=payload.get("photo"), iat=int(payload["iat"]), exp=int(payload["exp"]),
                jti=str(payload["jti"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: an exp of 1e400
            raise _token_error(401, "Invalid token: missing claims", "INVALID_TOKEN") from exc
        return claims

    async def validate(self, token: str) -> Grant:
        return await self.validate_claims(self.decode(token))

    async def validate_claims(self, claims: Claims) -> Grant:
        """The checks that can change after a token was issued: the room ended, the participant was removed."""
        room, participant = await self._store.room_and_participant(claims.room_sid, claims.uid)  # one query
        if room is None or room.org_id != claims.org_id:
            raise _token_error(404, "Room not found", "ROOM_NOT_FOUND")
        if room.ended:
            raise _token_error(410, "Class has ended", "ROOM_ENDED")
        if participant is None:
            raise _token_error(401, "Invalid token: unknown participant", "INVALID_TOKEN")
        if participant.removed:
            raise _token_error(403, "You were removed from this class", "PARTICIPANT_REMOVED")
        return Grant(claims=claims, room=room, participant=participant)
