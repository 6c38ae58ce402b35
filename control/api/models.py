"""Request and response bodies of the REST API, declared once (pydantic v2): the same classes validate requests
(`control.validation.parse`) and generate the schemas of /v1/openapi.json (control/api/openapi.py), so the two cannot
disagree.

Validation is strict (JSON types as sent: `"5"` is not a number, `1` is not a boolean) and strings are stripped, as
the hand-written checkers were. Unknown fields are ignored before validation (control/validation.py). The error
messages are ours, not pydantic's: `parse` maps each error to `Validation failed: participant.uid is required` and
its kin, reading limits and rules from the field declarations here.

Response models describe what the handlers send; a test validates real responses against the document made from
them (tests/control/test_openapi.py, and schemathesis).
"""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from control.classroom import (
    DEFAULT_EMPTY_TIMEOUT_S,
    DEFAULT_MAX_PARTICIPANTS,
    MAX_EMPTY_TIMEOUT_S,
    MAX_MAX_PARTICIPANTS,
)
from control.ids import ROOM_ID_RE, ROOM_ID_RULE, UID_RE, UID_RULE
from control.recording.options import LAYOUTS, PRESETS
from control.webhooks import EVENT_TYPES

MAX_METADATA_BYTES = 4096
ROLES = ("TEACHER", "STUDENT", "MODERATOR", "ADMIN")
# The rule that explains each pattern in an error message (the pattern alone is for the document).
PATTERN_RULES = {ROOM_ID_RE.pattern: ROOM_ID_RULE, UID_RE.pattern: UID_RULE}


def _http_url(value: str | None) -> str | None:
    from urllib.parse import urlparse

    if value:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PydanticCustomError("http_url", "must be an http(s) URL")
    return value or None


def _small_json(value: Any) -> Any:
    if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise PydanticCustomError("too_big", f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


def _whole(value: Any) -> Any:
    """JSON has numbers, not integers: 60.0 is the integer 60 (as JSON Schema says), 60.5 is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def whole(low: int, high: int) -> Any:
    """An integer in [low, high]; the bounds sit inside the number conversion so the schema says minimum/maximum."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_whole)]


RoomId = Annotated[str, Field(min_length=1, max_length=128, pattern=ROOM_ID_RE.pattern)]
Uid = Annotated[str, Field(min_length=1, max_length=128, pattern=UID_RE.pattern)]
HttpUrl = Annotated[str | None, Field(default=None, max_length=2048, pattern=r"^https?://[^/\s]+"),
                    AfterValidator(_http_url)]
# A name or title has a visible character (strings are stripped, and an empty one counts as missing) and no NUL,
# which PostgreSQL's text cannot hold; free text (a description) has no NUL either. Unknown fields may hold anything:
# they are dropped, never stored.
Text = r"^[^\x00]*[^\s\x00][^\x00]*$"
Plain = r"^[^\x00]*$"


class Body(BaseModel):
    """Strict JSON types, stripped strings, unknown fields already dropped (so `forbid` never fires on them)."""

    model_config = ConfigDict(strict=True, str_strip_whitespace=True, extra="ignore")


class Participant(Body):
    uid: Uid
    name: Annotated[str, Field(min_length=1, max_length=99, pattern=Text)]
    role: Literal["TEACHER", "STUDENT", "MODERATOR", "ADMIN"]
    photoURL: HttpUrl = None
    photoUrl: HttpUrl = Field(default=None, description="The SDK's spelling of photoURL")
    metadata: Annotated[Any, AfterValidator(_small_json)] = Field(
        default=None, description=f"Any JSON, at most {MAX_METADATA_BYTES} bytes", json_schema_extra={})


class Customization(Body):
    """Reference 3.2; only the keys given are stored (room, then participant, override the defaults key by key)."""

    showLobby: bool | None = None
    showClassTitle: bool | None = None
    showLogo: bool | None = None
    showHeader: bool | None = None
    showParticipantName: bool | None = None
    showMicIndicator: bool | None = None
    needChat: bool | None = None
    needControlbar: bool | None = None
    allowScreenShare: bool | None = None
    allowHandRaise: bool | None = None
    allowRecording: bool | None = None
    allowIngress: bool | None = Field(default=None, description="WHIP ingest into the room (default false)")
    validateDomain: bool | None = None
    theme: Literal["system", "light", "dark"] | None = None


class Settings(Body):
    maxParticipants: whole(1, MAX_MAX_PARTICIPANTS) = DEFAULT_MAX_PARTICIPANTS  # type: ignore[valid-type]
    emptyTimeout: whole(0, MAX_EMPTY_TIMEOUT_S) = DEFAULT_EMPTY_TIMEOUT_S  # type: ignore[valid-type]
    autoClose: bool = False


ExpiresIn = Annotated[whole(60, 86400) | None,
                      Field(default=None, description="Token lifetime in seconds (default 3600)")]


class CreateRoom(Body):
    """Reference 2.1. `title` (or the concepts page's `roomName`) is required."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["title"], "properties": {"title": {"type": "string"}}},
        {"required": ["roomName"], "properties": {"roomName": {"type": "string"}}}]})

    roomId: RoomId
    title: Annotated[str | None, Field(min_length=1, max_length=200, pattern=Text)] = None
    roomName: Annotated[str | None, Field(min_length=1, max_length=200, pattern=Text)] = None
    roomDescription: Annotated[str | None, Field(max_length=2000, pattern=Plain)] = None
    description: Annotated[str | None, Field(max_length=2000, pattern=Plain)] = None
    participant: Participant
    customization: Customization | None = None
    settings: Settings | None = None
    expiresIn: ExpiresIn = None


class JoinRoom(Body):
    """Reference 2.2."""

    participant: Participant
    customization: Customization | None = None
    expiresIn: ExpiresIn = None


IsoDate = Annotated[str | None, Field(default=None, max_length=40, json_schema_extra={"format": "date"},
                                      description="A UTC day, 2024-01-15 (an ISO date-time is read as its UTC day)")]


class SessionsQuery(Body):
    """Reference 2.10. `endDate` needs `startDate` and must not be before it (the second rule is not in the schema:
    JSON Schema cannot compare two fields)."""

    model_config = ConfigDict(json_schema_extra={"dependentRequired": {"endDate": ["startDate"]}})

    uid: Uid
    roomId: Annotated[str | None, Field(max_length=128, pattern=ROOM_ID_RE.pattern)] = None
    startDate: IsoDate = None
    endDate: IsoDate = None
    page: whole(1, 1_000_000) = 1  # type: ignore[valid-type]
    limit: whole(1, 10) = 10  # type: ignore[valid-type]
    export: Literal["json", "csv"] = "json"


class RecordingOptions(Body):
    """Reference 2.6's options plus our `mode` (`track`: one file per track, no re-encoding)."""

    layout: Literal[LAYOUTS] = "grid"  # type: ignore[valid-type]
    preset: Literal[tuple(PRESETS)] = "H264_1080P_30"  # type: ignore[valid-type]
    showLogo: bool = True
    mode: Literal["composite", "track"] = "composite"


class RecordingStart(Body):
    options: RecordingOptions | None = None


class RecordingIds(Body):
    ids: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=100)


# What `_webhook_url` accepts, for the schema: a host, a port in 1-65535, and no space or control character.
_VISIBLE = r"[^\s\x00-\x1f\x7f-\x9f]"
WEBHOOK_URL = (r"^https?://[^/\s:?#\x00-\x1f\x7f-\x9f]+"
               r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
               rf"([/?#]{_VISIBLE}*)?$")
PATTERN_RULES[WEBHOOK_URL] = ("must be an http(s) URL: a host, a port from 1 to 65535 if any, no spaces or control "
                              "characters")


def _webhook_url(value: str) -> str:
    from urllib.parse import urlparse

    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):  # a CR/LF would reach the request line
        raise PydanticCustomError("http_url", "must be a URL without spaces or control characters")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise PydanticCustomError("http_url", "must be an http(s) URL")
    try:
        port = parsed.port
    except ValueError:  # past 65535
        port = 0
    if port is not None and not 1 <= port <= 65535:
        raise PydanticCustomError("http_url", "must have a port between 1 and 65535")
    return value


class WebhookCreate(Body):
    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=WEBHOOK_URL),
                   AfterValidator(_webhook_url)]
    events: list[Literal[EVENT_TYPES]] | None = Field(  # type: ignore[valid-type]
        default=None, min_length=1, description="The event types to receive (default: every one)")
    description: Annotated[str | None, Field(max_length=200, pattern=Plain)] = None


class Topic(Body):
    topic: Annotated[str, Field(min_length=1, max_length=300, pattern=Text)]


class Transcription(Body):
    enabled: bool
    roomId: Annotated[str | None, Field(max_length=200)] = Field(
        default=None, description="One room (also the prefixed form org_123_class-456); absent: the organization")


class TutorChat(Body):
    """Seed 003. With VF-ORG-ID, studentUid and organizationId are required too (checked beside the model: a
    browser's participant token says who asks instead, so the schema cannot require them)."""

    roomId: Annotated[str, Field(min_length=1, max_length=200, pattern=Text,
                                 description="Room id, or the prefixed form org_123_class-456")]
    studentUid: Annotated[str | None, Field(max_length=128)] = Field(
        default=None, description="Required with VF-ORG-ID; taken from a Bearer token")
    organizationId: Annotated[str | None, Field(max_length=64)] = Field(
        default=None, description="Required with VF-ORG-ID; must match it")
    text: Annotated[str | None, Field(max_length=2000)] = None
    audio: str | None = Field(default=None, description="base64 WAV, Ogg/Opus or WebM/Opus (text or audio needed)")
    responseModality: Literal["text", "audio", "both"] = "text"


class AgentChat(Body):
    """Reference 2.16: a general assistant, streamed as NDJSON."""

    chatId: Annotated[str, Field(min_length=1, max_length=128, pattern=Text)]
    message: Annotated[str | None, Field(max_length=2000)] = None
    audio: str | None = None
    image: str | None = Field(default=None, description="base64, with imageMimeType")
    imageMimeType: Literal["image/jpeg", "image/png", "image/webp", "image/gif"] | None = None
    voiceName: Annotated[str | None, Field(max_length=64)] = Field(
        default=None, description="Accepted and reported in warnings: the embedded voice is the only one")
    responseModality: Literal["text", "audio", "text+audio"] = "text"


class RemoveParticipant(Body):
    reason: Annotated[str | None, Field(max_length=500, pattern=Plain)] = None


class MuteAll(Body):
    exceptUids: list[Annotated[str, Field(max_length=128)]] | None = Field(default=None, max_length=1000)


# ---- responses ---------------------------------------------------------------------------------------------------

Timestamp = Annotated[str | None, Field(json_schema_extra={"format": "date-time"})]


class Reply(BaseModel):
    """What handlers send: never validated on the way out, only documented (and checked by the tests)."""

    model_config = ConfigDict(extra="allow")


class RoomRef(Reply):
    roomId: str
    sid: str


class Token(Reply):
    token: str
    iframeUrl: str
    expiresAt: Timestamp
    roomId: str | None = None
    room: RoomRef | None = None


class RoomStatus(Reply):
    exists: bool
    isActive: bool
    roomId: str
    title: str | None = None
    participantCount: int | None = None
    hasTeacher: bool | None = None
    isRecording: bool | None = None
    createdAt: Timestamp = None
    startedAt: Timestamp = None
    endedAt: Timestamp = None


class Timestamps(Reply):
    startedAt: Timestamp = None
    endedAt: Timestamp = None


class RoomSummary(Reply):
    roomId: str
    roomName: str
    totalCredits: int
    totalParticipants: int
    avgStay: int
    timestamps: Timestamps
    status: Literal["created", "live", "finished"]


class RoomDestroyed(Reply):
    roomId: str
    participantsDisconnected: int
    wasRecording: bool
    endedAt: Timestamp


class Moderation(Reply):
    roomId: str | None = None
    uid: str | None = None
    removed: bool | None = None
    muted: bool | list[str] | None = Field(default=None, description="mute: the state; mute-all: the uids muted")
    mutedCount: int | None = None


REQUESTS: tuple[type[BaseModel], ...] = (CreateRoom, JoinRoom, SessionsQuery, RemoveParticipant, MuteAll,
                                         RecordingStart, RecordingIds, WebhookCreate, Topic, Transcription,
                                         TutorChat, AgentChat)
# Fields a reply may leave out but never sends as null: the document says "string", not "string or null".
Str = str | SkipJsonSchema[None]
Int = int | SkipJsonSchema[None]
Num = float | SkipJsonSchema[None]
Bool = bool | SkipJsonSchema[None]
Obj = dict[str, Any] | SkipJsonSchema[None]


class Error(Reply):
    success: Literal[False]
    message: str
    error: Str = None
    code: Str = None
    status: Int = None
    errors: dict[str, str] | SkipJsonSchema[None] = None


class RoomList(Reply):
    rooms: list[dict[str, Any]] | SkipJsonSchema[None] = None
    pagination: Obj = None


class SessionRow(Reply):
    sessionId: Str = None
    roomId: Str = None
    joinedAt: Timestamp = None
    leftAt: Timestamp = None
    duration: Int = None
    credits: Num = None
    isActive: Bool = None
    ipAddress: str | None = None


class Sessions(Reply):
    participant: Obj = None
    roomGroups: list[dict[str, Any]] | SkipJsonSchema[None] = None
    sessions: list[SessionRow] | SkipJsonSchema[None] = None
    pagination: Obj = None
    totals: Obj = None


class Balance(Reply):
    type: Str = None
    status: Literal["ACTIVE", "OVERCONSUMED"] | SkipJsonSchema[None] = None
    remainingCredits: Int = None
    displayCredits: Int = None
    isOverconsumed: Bool = None
    creditRate: Num = None
    estimatedValue: Num = None
    currency: Str = None
    message: Str = None


class TutorUsage(Reply):
    inputTokens: Int = None
    outputTokens: Int = None


class TutorAnswer(Reply):
    success: Bool = None
    text: Str = None
    audio: Str = Field(default=None, description="base64 WAV (mono, 16-bit)")
    audioMimeType: Str = None
    usage: TutorUsage | SkipJsonSchema[None] = None
    requestModality: Literal["text", "audio"] | SkipJsonSchema[None] = None
    responseModality: Literal["text", "audio", "both"] | SkipJsonSchema[None] = None
    inputTranscript: Str = None


class TopQuery(Reply):
    question: Str = None
    answer: Str = None
    frequency: Int = None


class TutorSummary(Reply):
    success: Bool = None
    summary: Str = None
    topQueries: list[TopQuery] | SkipJsonSchema[None] = None


class TutorUsageReply(Reply):
    success: Bool = None
    usage: TutorUsage | SkipJsonSchema[None] = None
    requests: Int = None
    credits: Int = None
    student: Obj = None


class TranscriptSegment(Reply):
    uid: Str = None
    text: Str = None
    startedAt: Timestamp = None
    endedAt: Timestamp = None


class Transcript(Reply):
    roomId: Str = None
    transcribing: Bool = None
    text: Str = None
    segments: list[TranscriptSegment] | SkipJsonSchema[None] = None


class AgentUsageSummary(Reply):
    totalSessions: Int = None
    totalTokenCost: Num = None
    totalInputTokens: Int = None
    totalOutputTokens: Int = None


class AgentUsage(Reply):
    summary: AgentUsageSummary | SkipJsonSchema[None] = None
    breakdown: Obj = None


EGRESS_STATES = ("EGRESS_STARTING", "EGRESS_ACTIVE", "EGRESS_ENDING", "EGRESS_COMPLETE", "EGRESS_FAILED")


class RecordingJob(Reply):
    egressId: Str = None
    roomId: Str = None
    status: Literal[EGRESS_STATES] | SkipJsonSchema[None] = None  # type: ignore[valid-type]
    startedAt: Timestamp = None
    endedAt: Timestamp = None


class RecordingFile(Reply):
    filename: Str = None
    size: int | None = None
    duration: float | None = None


class RecordingGap(Reply):
    """A span without media for a reason the server knows (*addition*, issue 15): the file goes on across it."""
    startedAt: Timestamp = None
    endedAt: Timestamp = None  # null while the gap is open
    reason: Str = Field(default=None, examples=["sfu_worker_lost"])


class RecordingRow(Reply):
    egressId: Str = None
    roomId: Str = None
    status: Str = None
    options: Obj = None
    startedAt: Timestamp = None
    endedAt: Timestamp = None
    size: int | None = None
    duration: float | None = None
    error: str | None = None
    deletedAt: Timestamp = None
    files: list[RecordingFile] | SkipJsonSchema[None] = None
    gaps: list[RecordingGap] | SkipJsonSchema[None] = None


class RecordingList(Reply):
    roomId: Str = None
    recordings: list[RecordingRow] | SkipJsonSchema[None] = None


class Download(Reply):
    filename: Str = None
    downloadUrl: Str = None
    size: Int = None
    duration: Num = None
    egressId: Str = None


class RecordingDownloads(Reply):
    roomId: Str = None
    expiresIn: Str = Field(default=None, examples=["4h 23m"])
    files: list[Download] | SkipJsonSchema[None] = None


class RecordingsDeleted(Reply):
    deleted: list[str] | SkipJsonSchema[None] = None
    notFound: list[str] | SkipJsonSchema[None] = None


class Webhook(Reply):
    id: Str = None
    url: Str = None
    events: list[str] | SkipJsonSchema[None] = None
    description: str | None = None
    createdAt: Timestamp = None
    secret: Str = Field(default=None, description="whsec_...; in the creation reply only")


class Webhooks(Reply):
    webhooks: list[Webhook] | SkipJsonSchema[None] = None


class WebhookDeleted(Reply):
    id: Str = None
    deleted: Bool = None


class Delivery(Reply):
    id: Str = None
    eventId: Str = None
    type: Str = None
    status: Literal["pending", "delivered", "failed"] | SkipJsonSchema[None] = None
    attempts: Int = None
    lastStatus: int | None = None
    lastError: str | None = None
    nextAttemptAt: Timestamp = None
    waitingFor: str | None = None
    deliveredAt: Timestamp = None
    createdAt: Timestamp = None


class WebhookDeliveries(Reply):
    deliveries: list[Delivery] | SkipJsonSchema[None] = None


class WebhookTest(Reply):
    id: Str = None
    eventId: Str = None
    delivered: Bool = None
    status: int | None = None
    error: Str = None


RESPONSES: tuple[type[BaseModel], ...] = (
    Error, Token, RoomStatus, RoomSummary, RoomDestroyed, Moderation, RoomList, Sessions, Balance, TutorAnswer,
    TutorSummary, TutorUsageReply, Transcript, AgentUsage, RecordingJob, RecordingList, RecordingDownloads,
    RecordingsDeleted, Webhooks, WebhookDeleted, WebhookDeliveries, WebhookTest)
