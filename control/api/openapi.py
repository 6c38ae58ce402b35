"""The OpenAPI 3.1 document served at /v1/openapi.json.

Every JSON body, request or reply, is a model (control/api/models.py) and its schema is generated from it: the
classes that validate a request are the ones that document it. The paths are written here, not generated from the
router: the test that compares them with the registered routes is then a real check that a new route was
documented.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from control.api import models
from control.ids import UID_RE

ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "Validation failed or malformed JSON", 401: "Missing or unknown VF-ORG-ID",
        402: "Insufficient credits", 403: "Forbidden (participant removed, room full)", 404: "Room not found",
        409: "Conflict (roomId already used; recording already running or not running; nothing to play)",
        410: "Room already ended", 413: "Body too large", 415: "Wrong Content-Type",
        412: "If-Match does not match the session's ETag", 422: "ICE restart is not supported",
        429: "Too many room creations or joins (Retry-After)",
        503: "Recorder unavailable, database unavailable, or the server is draining (Retry-After)",
        500: "Internal server error (the AI model did not answer)",
    }
    return {str(s): _resp(meaning[s], ERROR) for s in statuses}


def _json_body(ref: str, required: bool = True) -> dict[str, Any]:
    return {"required": required,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _ok(schema: str) -> dict[str, Any]:
    return _resp("Success", {
        "type": "object",
        "properties": {"success": {"type": "boolean"}, "message": {"type": "string"},
                       "data": {"$ref": f"#/components/schemas/{schema}"}},
    })


ROOM_ID = {
    "name": "roomId", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
}
UID = {"name": "uid", "in": "path", "required": True,
       "schema": {"type": "string", "pattern": UID_RE.pattern, "maxLength": 128}}
WEBHOOK_ID = {"name": "webhookId", "in": "path", "required": True, "schema": {"type": "string"}}
SESSION_ID = {"name": "sessionId", "in": "path", "required": True, "schema": {"type": "string"}}
SDP_BODY = {"required": True, "content": {"application/sdp": {"schema": {"type": "string"}}}}
FRAG_BODY = {"required": True, "content": {"application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}}}
CREATED_SDP = {"description": "The SDP answer; Location names the session, ETag its ICE session",
               "headers": {"Location": {"schema": {"type": "string"}}, "ETag": {"schema": {"type": "string"}}},
               "content": {"application/sdp": {"schema": {"type": "string"}}}}
BOOL = {"type": "boolean"}
STR = {"type": "string"}
INT = {"type": "integer"}
TS = {"type": ["string", "null"], "format": "date-time"}
DATE = {"type": "string", "format": "date"}

PATHS: dict[str, Any] = {
    "/v1/room/create": {"post": {
        "summary": "Create a room and a token for its first participant (reference 2.1)",
        "requestBody": _json_body("CreateRoom"),
        "responses": {"200": _ok("Token"), **_errors(400, 401, 402, 409, 413, 429, 503)}}},
    "/v1/room/{roomId}/join": {"post": {
        "summary": "Issue a join token (reference 2.2)", "parameters": [ROOM_ID], "requestBody": _json_body("JoinRoom"),
        "responses": {"200": _ok("Token"), **_errors(400, 401, 402, 403, 404, 429, 503)}}},
    "/v1/room/{roomId}/status": {"get": {
        "summary": "Room status; 200 with exists:false for an unknown room (reference 2.3)", "parameters": [ROOM_ID],
        "responses": {"200": _ok("RoomStatus"), **_errors(400, 401)}}},
    "/v1/room/{roomId}/summary": {"get": {
        "summary": "Credits, unique participants, average stay (seed 001)", "parameters": [ROOM_ID],
        "responses": {"200": _ok("RoomSummary"), **_errors(400, 401, 404)}}},
    "/v1/room/{roomId}": {"delete": {
        "summary": "End the class now (reference 2.4)", "parameters": [ROOM_ID],
        "responses": {"200": _ok("RoomDestroyed"), **_errors(400, 401, 404, 410)}}},
    "/v1/rooms": {"get": {
        "summary": "List the organization's rooms (classcast addition)",
        "parameters": [
            {"name": "status", "in": "query",
             "schema": {"type": "string", "enum": ["all", "created", "live", "finished"]}},
            {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
        "responses": {"200": _ok("RoomList"), **_errors(400, 401)}}},
    "/v1/participant/sessions": {"post": {
        "summary": "A participant's session history, JSON or CSV (reference 2.10)",
        "requestBody": _json_body("SessionsQuery"),
        "responses": {"200": {"description": "Sessions", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Sessions"}},
            "text/csv": {"schema": {"type": "string"}}}}, **_errors(400, 401, 404)}}},
    "/v1/room/{roomId}/participants/{uid}/remove": {"post": {
        "summary": "Kick a participant; the uid cannot rejoin (classcast addition)", "parameters": [ROOM_ID, UID],
        "requestBody": _json_body("RemoveParticipant", required=False),
        "responses": {"200": _ok("Moderation"), **_errors(400, 401, 404, 410)}}},
    "/v1/room/{roomId}/participants/{uid}/mute": {"post": {
        "summary": "Mute a participant (classcast addition)", "parameters": [ROOM_ID, UID],
        "responses": {"200": _ok("Moderation"), **_errors(400, 401, 403, 404, 410)}}},
    "/v1/room/{roomId}/participants/{uid}/unmute": {"post": {
        "summary": "Unmute a participant (classcast addition)", "parameters": [ROOM_ID, UID],
        "responses": {"200": _ok("Moderation"), **_errors(400, 401, 403, 404, 410)}}},
    "/v1/room/{roomId}/mute-all": {"post": {
        "summary": "Mute every participant, optionally except some uids (classcast addition)", "parameters": [ROOM_ID],
        "requestBody": _json_body("MuteAll", required=False),
        "responses": {"200": _ok("Moderation"), **_errors(400, 401, 404, 410)}}},
    "/v1/room/{roomId}/recording/start": {"post": {
        "summary": "Start recording the room (reference 2.6; `mode: track` is a classcast addition)",
        "parameters": [ROOM_ID], "requestBody": {"required": False, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/RecordingStart"}}}},
        "responses": {"200": _ok("RecordingJob"), **_errors(400, 401, 403, 404, 409, 410, 503)}}},
    "/v1/room/{roomId}/recording/stop": {"post": {
        "summary": "Stop the running recording; its file is finished and kept (reference 2.7)", "parameters": [ROOM_ID],
        "responses": {"200": _ok("RecordingJob"), **_errors(400, 401, 403, 404, 409, 410)}}},
    "/v1/room/{roomId}/recordings": {
        "get": {"summary": "The room's recording jobs with their status (reference 2.8)", "parameters": [ROOM_ID],
                "responses": {"200": _ok("RecordingList"), **_errors(400, 401, 404)}},
        "delete": {"summary": "Delete recordings of the room: the given ids, or every finished one",
                   "parameters": [ROOM_ID], "requestBody": {"required": False, "content": {"application/json": {
                       "schema": {"$ref": "#/components/schemas/RecordingIds"}}}},
                   "responses": {"200": _ok("RecordingsDeleted"), **_errors(400, 401, 404, 409)}}},
    "/v1/room/{roomId}/recordings/download": {"get": {
        "summary": "Signed download links (one hour) of the room's files (reference 2.9)", "parameters": [ROOM_ID],
        "responses": {"200": _ok("RecordingDownloads"), **_errors(400, 401, 404)}}},
    "/v1/recordings": {"delete": {
        "summary": "Bulk delete recordings of the organization by egress id", "requestBody": _json_body("RecordingIds"),
        "responses": {"200": _ok("RecordingsDeleted"), **_errors(400, 401, 409)}}},
    "/v1/billing/balance": {"get": {
        "summary": "Prepaid credit balance (reference 2.11)", "responses": {"200": _ok("Balance"), **_errors(401)}}},
    "/v1/ai-tutor/chat": {"post": {
        "summary": "Ask the AI tutor, with class context (seed 003). VF-ORG-ID or a participant Bearer token",
        "security": [{"orgId": []}, {"participantToken": []}], "requestBody": _json_body("TutorChat"),
        "responses": {"200": _resp("Answer", {"$ref": "#/components/schemas/TutorAnswer"}),
                      **_errors(400, 401, 402, 403, 404, 410, 413, 500)}}},
    "/v1/ai-tutor/chat/stream": {"post": {
        "summary": "The same, streamed as Server-Sent Events: text chunks, a usage chunk, then [DONE] (seed 003)",
        "security": [{"orgId": []}, {"participantToken": []}], "requestBody": _json_body("TutorChat"),
        "responses": {"200": {"description": "SSE stream", "content": {"text/event-stream": {"schema": STR}}},
                      **_errors(400, 401, 402, 403, 404, 410, 413, 500)}}},
    "/v1/ai-tutor/summary/{roomId}": {"get": {
        "summary": "Class summary and the most frequent questions, paraphrases grouped (seed 003)",
        "security": [{"orgId": []}, {"participantToken": []}], "parameters": [ROOM_ID],
        "responses": {"200": _resp("Summary", {"$ref": "#/components/schemas/TutorSummary"}),
                      **_errors(400, 401, 402, 404, 500)}}},
    "/v1/ai-tutor/usage/{roomId}": {"get": {
        "summary": "The room's AI tutor token totals (seed 003); ?studentUid= adds one student's",
        "security": [{"orgId": []}, {"participantToken": []}],
        "parameters": [ROOM_ID, {"name": "studentUid", "in": "query", "schema": STR}],
        "responses": {"200": _resp("Usage", {"$ref": "#/components/schemas/TutorUsageReply"}),
                      **_errors(400, 401, 404)}}},
    "/v1/ai-tutor/transcription": {"post": {
        "summary": "Turn live transcription on or off for the organization, or for one room (classcast addition)",
        "requestBody": _json_body("Transcription"),
        "responses": {"200": _ok("Transcription"), **_errors(400, 401, 403, 404)}}},
    "/v1/room/{roomId}/topic": {"post": {
        "summary": "Set the topic the AI tutor is told about (classcast addition; teachers also use signaling)",
        "parameters": [ROOM_ID], "requestBody": _json_body("Topic"),
        "responses": {"200": _ok("Topic"), **_errors(400, 401, 404, 410)}}},
    "/v1/room/{roomId}/transcript": {"get": {
        "summary": "The room's live transcript (classcast addition)", "parameters": [ROOM_ID],
        "responses": {"200": _ok("Transcript"), **_errors(400, 401, 404)}}},
    "/v1/ai-agent/chat/stream": {"post": {
        "summary": "General assistant, NDJSON text/usage/done lines (reference 2.16)",
        "requestBody": _json_body("AgentChat"),
        "responses": {"200": {"description": "NDJSON stream",
                              "content": {"application/x-ndjson": {"schema": STR}}},
                      **_errors(400, 401, 402, 413, 500)}}},
    "/v1/ai-agent/usage/summary": {"get": {
        "summary": "AI usage of the organization, tutor and agent together (reference 2.17)",
        "parameters": [{"name": "startDate", "in": "query", "schema": DATE},
                       {"name": "endDate", "in": "query", "schema": DATE}],
        "responses": {"200": _ok("AgentUsage"), **_errors(400, 401)}}},
    "/v1/whip/{roomId}": {"post": {
        "summary": "WHIP ingest (RFC 9725): publish an encoder's offer as the class's teacher; needs allowIngress",
        "security": [{"participantToken": []}], "parameters": [ROOM_ID], "requestBody": SDP_BODY,
        "responses": {"201": CREATED_SDP, **_errors(400, 401, 403, 404, 409, 410, 413, 415)}}},
    "/v1/whip/{roomId}/{sessionId}": {
        "patch": {"summary": "Trickle ICE candidates (application/trickle-ice-sdpfrag); ICE restart is 422",
                  "security": [{"participantToken": []}], "parameters": [ROOM_ID, SESSION_ID],
                  "requestBody": FRAG_BODY, "responses": {"204": {"description": "Candidates added"},
                                                          **_errors(400, 401, 403, 404, 412, 415, 422)}},
        "delete": {"summary": "End the WHIP session", "security": [{"participantToken": []}],
                   "parameters": [ROOM_ID, SESSION_ID],
                   "responses": {"200": {"description": "Ended"}, **_errors(401, 403, 404)}}},
    "/v1/whep/{roomId}": {"post": {
        "summary": "WHEP playback: the teacher's camera (else screen) and microphone, receive-only",
        "security": [{"participantToken": []}],
        "parameters": [ROOM_ID, {"name": "quality", "in": "query", "schema": {
            "type": "string", "enum": ["auto", "low", "medium", "high"], "default": "auto"}}],
        "requestBody": SDP_BODY,
        "responses": {"201": CREATED_SDP, **_errors(400, 401, 403, 404, 409, 410, 413, 415)}}},
    "/v1/whep/{roomId}/{sessionId}": {
        "patch": {"summary": "Trickle ICE candidates (application/trickle-ice-sdpfrag); ICE restart is 422",
                  "security": [{"participantToken": []}], "parameters": [ROOM_ID, SESSION_ID],
                  "requestBody": FRAG_BODY, "responses": {"204": {"description": "Candidates added"},
                                                          **_errors(400, 401, 403, 404, 412, 415, 422)}},
        "delete": {"summary": "End the WHEP session", "security": [{"participantToken": []}],
                   "parameters": [ROOM_ID, SESSION_ID],
                   "responses": {"200": {"description": "Ended"}, **_errors(401, 403, 404)}}},
    "/v1/openapi.json": {"get": {"summary": "This document", "security": [],
                                 "responses": {"200": {"description": "OpenAPI 3 document"}}}},
    "/v1/webhooks": {
        "post": {"summary": "Register a webhook endpoint; the reply holds its signing secret, shown only once",
                 "requestBody": _json_body("WebhookCreate"),
                 "responses": {"201": _ok("Webhook"), **_errors(400, 401, 409)}},
        "get": {"summary": "The organization's webhook endpoints (without secrets)",
                "responses": {"200": _ok("Webhooks"), **_errors(401)}}},
    "/v1/webhooks/{webhookId}": {"delete": {
        "summary": "Remove an endpoint; its pending deliveries are dropped", "parameters": [WEBHOOK_ID],
        "responses": {"200": _ok("WebhookDeleted"), **_errors(401, 404)}}},
    "/v1/webhooks/{webhookId}/deliveries": {"get": {
        "summary": "Recent deliveries to the endpoint, newest first", "parameters": [
            WEBHOOK_ID, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
        "responses": {"200": _ok("WebhookDeliveries"), **_errors(400, 401, 404)}}},
    "/v1/webhooks/{webhookId}/test": {"post": {
        "summary": "Send one signed webhook_test event now and report what the receiver answered",
        "parameters": [WEBHOOK_ID], "responses": {"200": _ok("WebhookTest"), **_errors(401, 404)}}},
}

def _with_body_limits(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation that takes a body may answer 413 (aiohttp's limit, or the tutor's own)."""
    for ops in paths.values():
        for op in ops.values():
            if "requestBody" in op:
                op["responses"].setdefault("413", _resp("Body too large", ERROR))
    return paths


def _generated() -> dict[str, Any]:
    """The models' JSON Schemas: requests as they are validated, responses as they are sent."""
    _, defs = models_json_schema([(m, "validation") for m in models.REQUESTS]
                                 + [(m, "serialization") for m in models.RESPONSES],
                                 ref_template="#/components/schemas/{model}")
    return dict(defs["$defs"])


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "classcast API", "version": "1",
             "description": "Verriflo-compatible classroom API. Every /v1 call carries VF-ORG-ID; browsers "
                            "call /v1/ai-tutor with a participant Bearer token instead."},
    "servers": [{"url": "/"}],
    "security": [{"orgId": []}],
    "components": {
        "securitySchemes": {"orgId": {"type": "apiKey", "in": "header", "name": "VF-ORG-ID"},
                            "participantToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": _generated(),
    },
    "paths": _with_body_limits(PATHS),
}


async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", openapi)
