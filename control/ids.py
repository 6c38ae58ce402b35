"""Identifier generation and the patterns that client-supplied identifiers must match."""

from __future__ import annotations

import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits

# roomId: the hosted service's documented character set; the length cap is ours (it is not documented).
ROOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# uid: integrators use emails, UUIDs and auth-provider ids ("auth0|abc"), so a slightly wider, still URL- and
# log-safe set than roomId.
UID_RE = re.compile(r"^[A-Za-z0-9_.@:|+-]{1,128}$")
ROOM_ID_RULE = "must be 1-128 characters of letters, digits, '-' or '_'"
UID_RULE = "must be 1-128 characters of letters, digits or - _ . @ : | +"


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_org_id() -> str:
    """16 alphanumerics, the form of the hosted service's example organization id."""
    return random_token(16)


def new_id(prefix: str) -> str:
    """`RM_`, `EG_`, `PA_`, `SE_`... prefixed ids; text so that they are portable across databases."""
    return f"{prefix}{random_token(12)}"
