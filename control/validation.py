"""Request-body validation: every way a body can be wrong becomes a clear 400, never a 500.

Small explicit checkers rather than a schema library: the messages must read exactly like the hosted
service's (`Validation failed: participant.uid is required`).

Unknown fields are ignored (logged at debug), not refused: the hosted service's own SDKs send fields we do not know
(`participant.email`), and an integrator must be able to change only the base URL. Fields we know from the hosted
service but do not act on are accepted and named in the response's `warnings` array, so nobody believes they took
effect. The warnings of the request being handled live in a context variable that `begin_request` resets (the
middleware, once per request) and `take_warnings` empties (the success envelope).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar, get_args
from urllib.parse import urlparse

from aiohttp import web
from annotated_types import Ge, Le
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from control import strictjson
from control.errors import ApiError, validation_error

# Customization keys (reference 3.2) and their defaults: the only home of this table.
CUSTOMIZATION_DEFAULTS: dict[str, Any] = {
    "showLobby": True,
    "showClassTitle": True,
    "showLogo": True,
    "showHeader": True,
    "showParticipantName": True,
    "showMicIndicator": True,
    "needChat": True,
    "needControlbar": True,
    "allowScreenShare": True,
    "allowHandRaise": True,
    "allowRecording": True,
    "allowIngress": False,
    "validateDomain": True,
    "theme": "system",
}
THEMES = ("system", "light", "dark")
# Fields of the hosted service (its docs or its SDKs) that we accept and do not act on, with why: the only home of
# this table. Keys are dotted paths as in error messages.
KNOWN_UNSUPPORTED: dict[str, str] = {
    "allowedDomains": "embedding is allowed for the organization's verified domains, not per room",
    "customization.allowedDomains": "embedding is allowed for the organization's verified domains, not per room",
    "voiceName": "the embedded voice is the only one",
    "secret": "the server chooses a webhook's signing secret (returned once, in this response)",
}

log = logging.getLogger("classcast.validation")
_warnings: ContextVar[list[str] | None] = ContextVar("classcast_warnings", default=None)


def begin_request() -> None:
    """A new request starts without warnings (aiohttp handles keep-alive requests in one task)."""
    _warnings.set(None)


def warn(message: str) -> None:
    current = _warnings.get()
    if current is None:
        current = []
        _warnings.set(current)
    if message not in current:
        current.append(message)


def take_warnings() -> list[str]:
    current = _warnings.get() or []
    _warnings.set(None)
    return current


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 past `limit` bytes: for endpoints whose limit is not the app's `client_max_size`.

    One `content.read(n)` is not the body: it returns what has arrived so far (at most n bytes), so a body that
    came in several TCP segments was cut short and failed as invalid JSON. Read to the end, counting."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body too large (limit {limit} bytes)", "PAYLOAD_TOO_LARGE")


async def read_json(request: web.Request, *, optional: bool = False, limit: int | None = None) -> dict[str, Any]:
    """The body as a JSON object; an empty body counts as `{}` only where the whole body is optional.

    `limit` replaces the app-wide body limit for endpoints that take more (base64 audio for the tutor).
    """
    raw = await request.read() if limit is None else await read_limited(request, limit)  # read(): client_max_size
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "Validation failed: request body is required", "VALIDATION_ERROR")
    try:
        body = strictjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Invalid JSON in request body", "INVALID_JSON") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "Validation failed: request body must be a JSON object", "VALIDATION_ERROR")
    return body


def ignore_unknown(obj: Mapping[str, Any], allowed: Iterable[str], path: str = "") -> None:
    """Unknown fields are dropped from consideration: known-unsupported ones become warnings, others a debug line."""
    allowed_set = set(allowed)
    for key in obj:
        if key in allowed_set:
            continue
        name = f"{path}{key}"
        why = KNOWN_UNSUPPORTED.get(name)
        if why is not None:
            warn(f"{name} is not supported and was ignored: {why}")
        else:
            log.debug("ignored unknown request field %s", name)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: Any, path: str = "", missing: str = "Validation failed") -> M:
    """A request body through its declared model (control/api/models.py): unknown fields dropped (and logged or
    warned about), then validated; the first error becomes our `Validation failed: <field> <problem>` 400.
    `path` names where the object sits when it is part of something else (a signaling message's `options.`);
    `missing` is the wording of a missing field's message where an API's documents use another one."""
    if not isinstance(body, dict):
        raise validation_error(path.rstrip(".") or "body", "must be an object")
    _drop_unknown(model, body, path)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = tuple(str(part) for part in error["loc"])
        field, problem = path + ".".join(loc), _problem(model, loc, error)
        if problem == "is required" and missing != "Validation failed":  # the tutor's seed says "Bad request"
            raise ApiError(400, f"{missing}: {field} is required", "VALIDATION_ERROR", {field: problem}) from None
        raise validation_error(field, problem) from None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _drop_unknown(model: type[BaseModel], body: Mapping[str, Any], path: str) -> None:
    ignore_unknown(body, model.model_fields, path)
    for name, field in model.model_fields.items():
        sub = _submodel(field.annotation)
        if sub is not None and isinstance(body.get(name), dict):
            _drop_unknown(sub, body[name], f"{path}{name}.")


def _field(model: type[BaseModel], loc: tuple[str, ...]) -> Any:
    field = None
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        model = _submodel(field.annotation)  # type: ignore[assignment]
    return field


def _constraints(field: Any) -> list[Any]:
    """A field's constraint objects, also those inside `Annotated[int, Field(ge=...)] | None`."""
    out = list(getattr(field, "metadata", ()))
    stack = [getattr(field, "annotation", None)]
    while stack:
        annotation = stack.pop()
        for arg in get_args(annotation):
            if isinstance(arg, FieldInfo):
                out.extend(arg.metadata)
            elif arg is not None:
                out.append(arg)
                stack.append(arg)
    return out


def _problem(model: type[BaseModel], loc: tuple[str, ...], error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("missing", "string_too_short"):
        return "is required"
    if kind == "string_type":
        return "must be a string"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        from control.api.models import PATTERN_RULES, Plain, Text

        pattern, value = str(ctx.get("pattern")), error.get("input")
        if pattern in (Text, Plain):
            return "must not contain NUL characters" if isinstance(value, str) and "\x00" in value else "is required"
        return PATTERN_RULES.get(pattern, "has an invalid format")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be an integer"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        found = _constraints(_field(model, loc))
        low = next((m.ge for m in found if isinstance(m, Ge)), None)
        high = next((m.le for m in found if isinstance(m, Le)), None)
        if low is not None and high is not None:
            return f"must be between {low} and {high}"
        return f"must be at least {low}" if low is not None else f"must be at most {high}"
    if kind == "bool_type":
        return "must be a boolean"
    if kind == "literal_error":
        return "must be one of " + ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be an object"
    if kind == "list_type":
        return "must be a list"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item" + ("" if ctx.get("min_length") == 1 else "s")
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if "message" in error.get("ctx", {}) or kind in ("http_url", "too_big"):
        return str(error["msg"])
    return "is invalid"


def string(
    obj: Mapping[str, Any], key: str, path: str = "", *, required: bool = False, max_len: int = 1000,
    pattern: re.Pattern[str] | None = None, rule: str = "", strip: bool = True,
) -> str | None:
    name = f"{path}{key}"
    value = obj.get(key)
    if value is None:
        if required:
            raise validation_error(name, "is required")
        return None
    if not isinstance(value, str):
        raise validation_error(name, "must be a string")
    if strip:
        value = value.strip()
    if required and not value:
        raise validation_error(name, "is required")
    if len(value) > max_len:
        raise validation_error(name, f"must be at most {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise validation_error(name, rule or "has an invalid format")
    return value


def integer(
    obj: Mapping[str, Any], key: str, path: str = "", *, minimum: int, maximum: int, default: int | None = None
) -> int | None:
    name = f"{path}{key}"
    value = obj.get(key)
    if value is None:
        return default
    # bool is an int subclass in Python: `true` is not a number to a JSON client.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise validation_error(name, "must be an integer")
    value = int(value)
    if not minimum <= value <= maximum:
        raise validation_error(name, f"must be between {minimum} and {maximum}")
    return value


def boolean(obj: Mapping[str, Any], key: str, path: str = "", default: bool | None = None) -> bool | None:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise validation_error(f"{path}{key}", "must be a boolean")
    return value


def obj(parent: Mapping[str, Any], key: str, path: str = "", *, required: bool = False) -> dict[str, Any] | None:
    value = parent.get(key)
    if value is None:
        if required:
            raise validation_error(f"{path}{key}", "is required")
        return None
    if not isinstance(value, dict):
        raise validation_error(f"{path}{key}", "must be an object")
    return value


def url(obj_: Mapping[str, Any], key: str, path: str = "") -> str | None:
    value = string(obj_, key, path, max_len=2048)
    if value:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise validation_error(f"{path}{key}", "must be an http(s) URL")
    return value or None


def customization(body: Mapping[str, Any], key: str = "customization") -> dict[str, Any]:
    """Only the keys the client set: room and join values are merged key by key later."""
    value = obj(body, key)
    if value is None:
        return {}
    ignore_unknown(value, CUSTOMIZATION_DEFAULTS, f"{key}.")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if v is None or k not in CUSTOMIZATION_DEFAULTS:
            continue
        if k == "theme":
            if v not in THEMES:
                raise validation_error(f"{key}.theme", "must be one of system, light, dark")
        elif not isinstance(v, bool):
            raise validation_error(f"{key}.{k}", "must be a boolean")
        out[k] = v
    return out


def effective_customization(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then the room's values, then the participant's: later layers win key by key."""
    merged = dict(CUSTOMIZATION_DEFAULTS)
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if k in CUSTOMIZATION_DEFAULTS})
    return merged
