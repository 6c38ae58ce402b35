"""The REST error envelope and the exceptions that produce it.

Every error leaves the server as `{"success": false, "message", "error", "code", "status"}`: `message` and the
status are what the seeds give, `error` and `code` carry the same machine code because the docs name `error` while
the official SDK reads `code` (reference 1.4).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error a client caused or must know about; never logged as a server fault."""

    def __init__(self, status: int, message: str, code: str, errors: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.errors = errors
        self.headers = headers or {}  # sent with the error response (Retry-After on 429)

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.code, self.errors)


def error_body(status: int, message: str, code: str, errors: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "message": message, "error": code, "code": code, "status": status}
    if errors:
        body["errors"] = errors
    return body


def validation_error(field: str, problem: str) -> ApiError:
    """The hosted service's wording: `Validation failed: participant.uid is required`."""
    return ApiError(400, f"Validation failed: {field} {problem}", "VALIDATION_ERROR", {field: problem})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "UNAUTHORIZED")


def room_not_found() -> ApiError:
    return ApiError(404, "Room not found", "ROOM_NOT_FOUND")


def participant_not_found() -> ApiError:
    return ApiError(404, "Participant not found", "PARTICIPANT_NOT_FOUND")


def insufficient_credits() -> ApiError:
    return ApiError(402, "Insufficient credits. Minimum 100 required to start a class.", "INSUFFICIENT_CREDITS")


def room_ended() -> ApiError:
    return ApiError(410, "Room already ended", "ROOM_ENDED")
