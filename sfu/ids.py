"""Track identifiers (the SFU does not import the control plane)."""

from __future__ import annotations

import secrets


def new_track_id() -> str:
    return "TR_" + secrets.token_hex(6)
