"""Configuration from `CLASSCAST_*` environment variables and an optional TOML file, with defaults that run on one
machine out of the box.

Every variable is listed in docs/operations.md; `Config.from_env` is the only place they are read. The TOML file
(`--config` or `CLASSCAST_CONFIG`) uses the same keys; `Config.load` merges it under the environment, so the
environment wins, and refuses a key no variable has.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from control.ratelimit import RateLimits
from control.turn import TurnConfig
from sfu.ice import IceConfig

N = TypeVar("N", int, float)


def _int(env: Mapping[str, str], name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        digits = raw.strip().removeprefix("-").removeprefix("+")
        if not (digits.isascii() and digits.isdigit()):  # int() takes "٨٠٨٠" as 8080 and "1_0000": typos
            raise ValueError(raw)
        value = int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc
    return _within(name, raw, value, low, high)


def _float(env: Mapping[str, str], name: str, default: float, low: float | None = None,
           high: float | None = None) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value):  # nan slept forever, inf overflowed, both silently
        raise SystemExit(f"{name} must be a finite number, got {raw!r}")
    return _within(name, raw, value, low, high)


def _within(name: str, raw: str, value: N, low: float | None, high: float | None) -> N:
    """A setting out of its range stops the server with one line: a negative token lifetime issued tokens that
    were already expired, a tick of 0 spun a core, a port of 70000 listened on 4464."""
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f"at least {low}" if low is not None else f"at most {high}")
        raise SystemExit(f"{name} must be {bounds}, got {raw!r}")
    return value


def _token_ttl(env: Mapping[str, str]) -> int:
    """The default lifetime of a join token: under a cap the operator set (CLASSCAST_TOKEN_MAX_TTL), at most the
    cap, its default following a cap below an hour. Without one, a default past a day stays allowed, as it was
    before the cap existed (calls still ask at most a day)."""
    cap = _int(env, "CLASSCAST_TOKEN_MAX_TTL", 24 * 3600, 60, 24 * 3600)
    ttl = _int(env, "CLASSCAST_TOKEN_TTL", min(3600, cap), 1)
    if ttl > cap and _text(env, "CLASSCAST_TOKEN_MAX_TTL", ""):
        raise SystemExit(f"CLASSCAST_TOKEN_TTL ({ttl}) must not pass CLASSCAST_TOKEN_MAX_TTL ({cap})")
    return ttl


def _engine(env: Mapping[str, str]) -> str:
    engine = _text(env, "CLASSCAST_ENGINE", "native").lower()
    if engine not in ("native", "python"):  # with SFU workers, a bad one had them fail to start, again and again
        raise SystemExit(f"CLASSCAST_ENGINE must be native or python, got {engine!r}")
    return engine


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    """Set but empty is unset: `CLASSCAST_HOST=` listened on every interface, not on the default 127.0.0.1."""
    return env.get(name, "").strip() or default


def _sfu_workers(env: Mapping[str, str]) -> int:
    from control.workers import worker_count

    try:
        return worker_count(env.get("CLASSCAST_SFU_WORKERS"))
    except ValueError:
        raise SystemExit("CLASSCAST_SFU_WORKERS must be a number 0..256 or 'auto'") from None


def _ice(env: Mapping[str, str]) -> IceConfig:
    try:
        return IceConfig.from_env(env)
    except (ValueError, TypeError) as exc:  # TypeError: CLASSCAST_ICE_SERVERS=5, JSON but not a list
        raise SystemExit(f"ICE configuration: {exc}") from exc


def _url(env: Mapping[str, str], name: str) -> str:
    """A base URL browsers are sent to (`iframeUrl`, a redirect): http(s), a host, nothing after the path. `not a
    url` or `class.school.example` (no scheme) were taken as they were and made every iframeUrl a broken link."""
    raw = _text(env, name, "")
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
        port = parts.port  # ValueError past 65535
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or "?" in raw or "#" in raw
            or parts.username is not None or port == 0 or not raw.isprintable() or " " in raw):
        raise SystemExit(f"{name} must be an http:// or https:// URL with a host and no query, got {raw!r}")
    return parts.scheme + raw[len(parts.scheme):]  # `HTTPS://` as https://: URLs are built from it by prefix


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be on or off, got {raw!r}")


@dataclass(frozen=True)
class TutorConfig:
    """The AI tutor (issue 7). An empty `llm_url` means the embedded SmolLM2; `llm_backend="fake"` is for tests."""

    llm_backend: str = "embedded"  # embedded | openai | fake
    llm_url: str = ""
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str = ""
    llm_images: bool = False  # whether the configured endpoint takes OpenAI-style image messages
    llm_timeout_s: float = 120.0  # a whole answer from the configured endpoint; a hung endpoint is an error after it
    llm_threads: int = 1
    max_answer_tokens: int = 256
    context_tokens: int = 1024  # the prompt's budget for class context and the question
    transcript_window_s: int = 300  # how much of the live transcript a prompt carries
    tokens_per_credit: int = 1000  # AI billing: each request costs ceil(tokens / this) credits
    transcription: bool = False  # the server default when neither the organization nor the room chose
    transcribe_chunk_s: float = 15.0
    speech_threads: int = 1
    whisper_model: str = ""  # empty: the folder `make install` prepares (control/tutor/models.py)
    max_body_bytes: int = 8 * 1024 * 1024  # tutor requests carry base64 audio

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TutorConfig:
        url = env.get("CLASSCAST_LLM_URL", "")
        backend = env.get("CLASSCAST_LLM_BACKEND", "") or ("openai" if url else "embedded")
        if backend not in ("embedded", "openai", "fake"):
            raise SystemExit(f"CLASSCAST_LLM_BACKEND must be embedded, openai or fake, got {backend!r}")
        if backend == "openai" and not url:
            raise SystemExit("CLASSCAST_LLM_BACKEND=openai needs CLASSCAST_LLM_URL")
        return cls(
            llm_backend=backend,
            llm_url=url,
            llm_model=env.get("CLASSCAST_LLM_MODEL", "") or cls.llm_model,
            llm_api_key=env.get("CLASSCAST_LLM_API_KEY", ""),
            llm_images=_bool(env, "CLASSCAST_LLM_IMAGES", False),
            llm_timeout_s=_float(env, "CLASSCAST_LLM_TIMEOUT", 120.0, 0.1),
            llm_threads=_int(env, "CLASSCAST_LLM_THREADS", 1, 1),
            max_answer_tokens=_int(env, "CLASSCAST_TUTOR_MAX_TOKENS", 256, 1),
            context_tokens=_int(env, "CLASSCAST_TUTOR_CONTEXT_TOKENS", 1024, 1),
            transcript_window_s=_int(env, "CLASSCAST_TUTOR_TRANSCRIPT_WINDOW", 300, 0),
            tokens_per_credit=_int(env, "CLASSCAST_AI_TOKENS_PER_CREDIT", 1000, 1),
            transcription=_bool(env, "CLASSCAST_TRANSCRIPTION", False),
            transcribe_chunk_s=_float(env, "CLASSCAST_TRANSCRIBE_CHUNK", 15.0, 1.0),
            speech_threads=_int(env, "CLASSCAST_SPEECH_THREADS", 1, 1),
            whisper_model=env.get("CLASSCAST_WHISPER_MODEL", ""),
        )


@dataclass(frozen=True)
class WebhookConfig:
    """Delivery of webhooks (issue 17): exponential backoff from `retry_base_s`, capped at `retry_max_s`, for
    `retry_window_s` after the event; an attempt that takes longer than `timeout_s` failed."""

    retry_base_s: float = 5.0
    retry_max_s: float = 3600.0
    retry_window_s: float = 24 * 3600.0
    timeout_s: float = 10.0
    poll_s: float = 1.0  # the dispatcher looks again this soon after a failed look or a head it could not start

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookConfig:
        base = _float(env, "CLASSCAST_WEBHOOK_RETRY_BASE", cls.retry_base_s)
        cap = _float(env, "CLASSCAST_WEBHOOK_RETRY_MAX", cls.retry_max_s)
        window = _float(env, "CLASSCAST_WEBHOOK_RETRY_WINDOW", cls.retry_window_s)
        timeout = _float(env, "CLASSCAST_WEBHOOK_TIMEOUT", cls.timeout_s)
        for name, value in (("CLASSCAST_WEBHOOK_RETRY_BASE", base), ("CLASSCAST_WEBHOOK_RETRY_MAX", cap),
                            ("CLASSCAST_WEBHOOK_RETRY_WINDOW", window), ("CLASSCAST_WEBHOOK_TIMEOUT", timeout)):
            if value <= 0:
                raise SystemExit(f"{name} must be a positive number of seconds, got {value}")
        return cls(retry_base_s=base, retry_max_s=max(base, cap), retry_window_s=window, timeout_s=timeout,
                   poll_s=min(1.0, base))


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path("data"))
    # Base URL that browsers use to reach this server (iframeUrl, download links); defaults to http://host:port.
    public_url: str = ""
    # SQLAlchemy async URL; empty means SQLite in data_dir.
    database_url: str = ""
    # Redis for what several nodes share live (event bus, rate limits; control/wiring.py); empty: this process only.
    redis_url: str = ""
    # This node's own URL as clients reach it directly (several nodes: a room's WebSocket is redirected to the node
    # hosting it, control/placement.py); empty: base_url.
    node_url: str = ""
    # How long a dead node keeps its rooms placed on it (its Redis lease, renewed every second; a join for a room of a
    # node that missed two renewals waits for the lapse and re-places it: control/shared/placement.py). A live node
    # keeps its rooms through a stall of up to this minus a second.
    node_lease_s: float = 5.0
    # The token secret shared by several nodes (control/auth.py): the value itself, or a file holding it; both empty:
    # generated once into DATA_DIR/jwt-secret (one node).
    secret: str = ""
    secret_file: str = ""
    # Where recordings are written and served from; a folder every node mounts lets any node serve a download.
    recordings_dir: str = ""
    token_ttl_s: int = 3600
    token_max_ttl_s: int = 24 * 3600
    min_credits_to_start: int = 100
    demo_credits: int = 10_000
    # How often live rooms are billed and empty rooms reaped (the issue asks for at least every minute).
    tick_interval_s: float = 15.0
    max_body_bytes: int = 64 * 1024
    credit_rate: float = 0.01
    currency: str = "USD"
    # A dropped participant stays in the roster this long, so a reconnect is not a leave and a join.
    reconnect_grace_s: float = 10.0
    ice: IceConfig = field(default_factory=IceConfig)
    tutor: TutorConfig = field(default_factory=lambda: TutorConfig())
    # Recording files are deleted this long after their class ends (reference 6: the 6-hour window).
    recording_ttl_s: int = 6 * 3600
    metrics: bool = True  # /metrics on the main port (issue 17)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    # credits_low is sent when an organization's balance falls below this.
    credits_low: int = 1000
    # SIGTERM lets running classes go on this long before ending them (issue 17's drain).
    drain_timeout_s: float = 3600.0
    rate_limits: RateLimits = field(default_factory=RateLimits)
    # The TURN relay and the per-participant credentials handed out in `joined` (issue 16, control/turn.py).
    turn: TurnConfig = field(default_factory=TurnConfig)
    # SFU worker processes (issue 15, control/workers.py): one per core by default (CLASSCAST_SFU_WORKERS unset or
    # `auto`); 0 = media in the control process, the operator's explicit choice.
    sfu_workers: int = field(default_factory=lambda: _sfu_workers({}))
    # Participants one worker takes before a room's new participants go to another worker, the room's tracks piped
    # there once (issue 15 req 2, control/workers.py); 0 = a room never spreads. Default: one worker's measured knee.
    sfu_worker_capacity: int = 300
    # A lecture across nodes (issue 18 req 4, control/relay.py): the participants of one room a node serves before
    # new students go to another node, the room's tracks relayed there once (-1: the worker capacity times the
    # workers; 0: never). The address this node's relay sockets bind and announce to other nodes (empty: the host of
    # CLASSCAST_NODE_URL when it is an address, else 127.0.0.1). A share of relayed RTP dropped: tests only.
    node_capacity: int = -1
    relay_host: str = ""
    relay_test_loss: float = 0.0
    # The media engine (sfu/engine): native, or the Python reference. `serve` puts it in its environment, which the
    # SFU workers inherit (sfu.engine reads it there), so that a TOML file may set it like every other setting.
    engine: str = "native"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        host = _text(env, "CLASSCAST_HOST", "127.0.0.1")
        port = _int(env, "CLASSCAST_PORT", 8080, 0, 65535)
        return cls(
            host=host,
            port=port,
            data_dir=Path(_text(env, "CLASSCAST_DATA_DIR", "data")),
            public_url=_url(env, "CLASSCAST_PUBLIC_URL"),
            database_url=env.get("CLASSCAST_DATABASE_URL", ""),
            redis_url=env.get("CLASSCAST_REDIS_URL", ""),
            node_url=_url(env, "CLASSCAST_NODE_URL"),
            node_lease_s=_float(env, "CLASSCAST_NODE_LEASE", 5.0, 0.1),
            secret=env.get("CLASSCAST_SECRET", ""),
            secret_file=env.get("CLASSCAST_SECRET_FILE", ""),
            recordings_dir=env.get("CLASSCAST_RECORDINGS_DIR", ""),
            token_ttl_s=_token_ttl(env),
            token_max_ttl_s=_int(env, "CLASSCAST_TOKEN_MAX_TTL", 24 * 3600, 60, 24 * 3600),
            tick_interval_s=_float(env, "CLASSCAST_TICK_INTERVAL", 15.0, 0.01),
            demo_credits=_int(env, "CLASSCAST_DEMO_CREDITS", 10_000, 0),
            credit_rate=_float(env, "CLASSCAST_CREDIT_RATE", 0.01, 0.0),
            currency=_text(env, "CLASSCAST_CURRENCY", "USD"),
            reconnect_grace_s=_float(env, "CLASSCAST_RECONNECT_GRACE", 10.0, 0.0),
            ice=_ice(env),
            tutor=TutorConfig.from_env(env),
            recording_ttl_s=_int(env, "CLASSCAST_RECORDING_TTL", 6 * 3600, 0),
            metrics=_bool(env, "CLASSCAST_METRICS", True),
            webhooks=WebhookConfig.from_env(env),
            credits_low=_int(env, "CLASSCAST_CREDITS_LOW", 1000, 0),
            drain_timeout_s=_float(env, "CLASSCAST_DRAIN_TIMEOUT", 3600.0, 0.0),
            rate_limits=RateLimits(
                room_create_per_org=_int(env, "CLASSCAST_RATE_ROOM_CREATE_ORG", RateLimits.room_create_per_org, 0),
                room_create_per_address=_int(env, "CLASSCAST_RATE_ROOM_CREATE_ADDRESS",
                                             RateLimits.room_create_per_address, 0),
                join_per_org=_int(env, "CLASSCAST_RATE_JOIN_ORG", RateLimits.join_per_org, 0),
                join_per_address=_int(env, "CLASSCAST_RATE_JOIN_ADDRESS", RateLimits.join_per_address, 0),
            ),
            turn=TurnConfig.from_env(env),
            sfu_workers=_sfu_workers(env),
            sfu_worker_capacity=_int(env, "CLASSCAST_SFU_WORKER_CAPACITY", 300, 0),
            node_capacity=_int(env, "CLASSCAST_NODE_CAPACITY", -1, -1),
            relay_host=env.get("CLASSCAST_RELAY_HOST", ""),
            relay_test_loss=_float(env, "CLASSCAST_RELAY_TEST_LOSS", 0.0, 0.0, 1.0),
            engine=_engine(env),
        )

    @classmethod
    def load(cls, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
        """The TOML file (`path`, else `CLASSCAST_CONFIG`) under the environment: the environment wins."""
        env = os.environ if env is None else env
        path = path or env.get("CLASSCAST_CONFIG") or None
        if path is None:
            return cls.from_env(env)
        from_file = read_file(Path(path))
        # the environment wins, but set and empty is unset there too: it does not put the default over the file's
        merged = {**from_file, **{k: v for k, v in env.items() if k.startswith("CLASSCAST_") and v.strip()}}
        try:
            return cls.from_env(merged)
        except SystemExit as exc:
            message = str(exc)
            named = [k for k in from_file if k not in env and re.search(rf"\b{k}\b", message)]
            raise SystemExit(f"{message} (set in {path})" if named else message) from None

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def node_base_url(self) -> str:
        return self.node_url.rstrip("/") if self.node_url else self.base_url

    @property
    def room_node_capacity(self) -> int:
        """CLASSCAST_NODE_CAPACITY, its default the worker capacity times the workers (one with media in-process)."""
        if self.node_capacity >= 0:
            return self.node_capacity
        return max(0, self.sfu_worker_capacity) * max(1, self.sfu_workers)

    @property
    def recordings_root(self) -> Path:
        return Path(self.recordings_dir) if self.recordings_dir else self.data_dir / "recordings"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'classcast.db').resolve()}"


class _Reads(Mapping[str, str]):
    """An empty environment that notes every key `Config.from_env` asks for: the list of valid keys."""

    def __init__(self) -> None:
        self.keys_read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.keys_read.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def known_keys() -> frozenset[str]:
    """Every `CLASSCAST_*` variable the configuration reads (and so every key a TOML file may set)."""
    reads = _Reads()
    Config.from_env(reads)
    return frozenset(reads.keys_read)


# CLASSCAST_* variables read elsewhere than Config.from_env: the file to load, the operator commands' organization,
# an SFU worker's log level, the build's choice of libsrtp, the tests' database, the bench's logs and the secret of
# examples/webhook_receiver.py (often run from the same environment).
OTHER_VARIABLES = frozenset({"CLASSCAST_CONFIG", "CLASSCAST_ORG_ID", "CLASSCAST_LOG_LEVEL", "CLASSCAST_SRTP",
                             "CLASSCAST_TEST_DATABASE", "CLASSCAST_BENCH_CLIENT_LOG", "CLASSCAST_BENCH_SERVER_LOG",
                             "CLASSCAST_WEBHOOK_SECRET"})


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A line for each `CLASSCAST_*` variable that nothing reads, naming the setting it probably meant.

    A misspelt variable (`CLASSCAST_PROT`) left its setting at the default without a word. It is a warning, not an
    error as the same key in a TOML file is: the environment is shared with other programs and other versions."""
    import difflib

    known = known_keys() | OTHER_VARIABLES
    lines = []
    for name in sorted(k for k in env if k.startswith("CLASSCAST_") and k not in known):
        # the names' own parts compared: with the shared prefix, CLASSCAST_FOO came out close to CLASSCAST_PORT
        close = difflib.get_close_matches(name.removeprefix("CLASSCAST_"),
                                          sorted(k.removeprefix("CLASSCAST_") for k in known), n=1, cutoff=0.75)
        hint = f"; did you mean CLASSCAST_{close[0]}?" if close else " (docs/operations.md lists the settings)"
        lines.append(f"{name} is not a classcast setting and is ignored{hint}")
    return lines


def read_file(path: Path) -> dict[str, str]:
    """A TOML file's keys as environment strings; unknown keys and unusable values are errors naming the key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SystemExit(f"configuration file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SystemExit(f"configuration file {path} is not valid TOML: {exc}") from None
    known = known_keys()
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in known:
            close = sorted(k for k in known if k.removeprefix("CLASSCAST_") == key.upper().removeprefix("CLASSCAST_"))
            hint = f"; did you mean {close[0]}?" if close else " (docs/operations.md lists the keys)"
            raise SystemExit(f"{path}: unknown key {key}{hint}")
        if isinstance(value, bool):
            out[key] = "on" if value else "off"
        elif isinstance(value, int | float | str):
            out[key] = str(value)
        elif isinstance(value, list) and key == "CLASSCAST_ICE_SERVERS":
            out[key] = json.dumps(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = ",".join(value)
        else:
            raise SystemExit(f"{path}: {key} must be a string, number or boolean, got {type(value).__name__}")
    return out


SECRET_FIELD = re.compile(r"(key|secret|password|token|credential)", re.IGNORECASE)


def _mask_url(url: str) -> str:
    """postgresql+asyncpg://user:pass@host/db and redis://:pass@host keep everything but the password."""
    return re.sub(r"(://[^:/@]*:)[^@]+@", r"\1****@", url)


def _mask(name: str, value: Any) -> Any:
    if isinstance(value, str) and value and SECRET_FIELD.search(name):
        return "****"
    if isinstance(value, str):
        return _mask_url(value)
    if isinstance(value, dict):
        return {k: _mask(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(name, v) for v in value]
    return value


def effective(config: Config) -> dict[str, Any]:
    """The parsed configuration as plain data with secrets masked (`classcast config`)."""

    def plain(obj: Any) -> Any:
        if is_dataclass(obj):
            return {f.name: _mask(f.name, plain(getattr(obj, f.name))) for f in fields(obj)}
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, tuple | list):
            return [plain(v) for v in obj]
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        return obj if isinstance(obj, str | int | float | bool | None) else str(obj)

    return plain(config)
