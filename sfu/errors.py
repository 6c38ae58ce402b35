"""The one error a signaling client can cause in the SFU; it becomes `{"type": "error", code, message}`."""

from __future__ import annotations


class SignalingError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_message(self) -> dict[str, str]:
        return {"type": "error", "code": self.code, "message": self.message}
