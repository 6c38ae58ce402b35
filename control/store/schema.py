"""Table definitions for building portable queries with SQLAlchemy Core.

These describe the schema that `migrations.py` creates; they are used for queries only (never `create_all`),
and `tests/control/test_store.py` checks that they match the migrated database column for column.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, MetaData, Table, Text

metadata = MetaData()

meta = Table("meta", metadata, Column("key", Text, primary_key=True), Column("value", Text, nullable=False))

organizations = Table(
    "organizations",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("billing_type", Text, nullable=False),
    Column("logo_url", Text),
    Column("primary_color", Text),
    Column("accent_color", Text),
    Column("slogan", Text),
    Column("created_at", BigInteger, nullable=False),
)

org_domains = Table(
    "org_domains",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("domain", Text, primary_key=True),
    Column("created_at", BigInteger, nullable=False),
)

rooms = Table(
    "rooms",
    metadata,
    Column("sid", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("room_id", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text),
    Column("customization", Text, nullable=False),
    Column("max_participants", Integer, nullable=False),
    Column("empty_timeout", Integer, nullable=False),
    Column("auto_close", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("started_at", BigInteger),
    Column("ended_at", BigInteger),
    Column("end_reason", Text),
    Column("emptied_at", BigInteger),
    Column("credits_debited", BigInteger, nullable=False),
)

participants = Table(
    "participants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("room_sid", Text, nullable=False),
    Column("uid", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("photo_url", Text),
    Column("customization", Text, nullable=False),
    Column("metadata", Text),
    Column("muted", Boolean, nullable=False),
    Column("removed_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("participant_id", Text, nullable=False),
    Column("room_sid", Text, nullable=False),
    Column("org_id", Text, nullable=False),
    Column("uid", Text, nullable=False),
    Column("joined_at", BigInteger, nullable=False),
    Column("left_at", BigInteger),
    Column("leave_reason", Text),
    Column("ip_address", Text),
    Column("node", Text),  # the node whose Hub holds it (NULL: opened before migration 8)
)

recordings = Table(
    "recordings",
    metadata,
    Column("id", Text, primary_key=True),
    Column("room_sid", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("options", Text, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    Column("file_path", Text),
    Column("size", BigInteger),
    Column("duration", Float),
    Column("error", Text),
    Column("deleted_at", BigInteger),
    Column("gaps", Text, nullable=False, server_default="[]"),  # JSON [{started_at, ended_at, reason}], ms
)

recording_files = Table(
    "recording_files",
    metadata,
    Column("id", Text, primary_key=True),
    Column("recording_id", Text, nullable=False),
    Column("path", Text, nullable=False),  # relative to the recordings folder
    Column("label", Text, nullable=False),
    Column("size", BigInteger),
    Column("duration", Float),
    Column("created_at", BigInteger, nullable=False),
)

credit_ledger = Table(
    "credit_ledger",
    metadata,
    Column("id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("room_sid", Text),
    Column("created_at", BigInteger, nullable=False),
)

ai_tutor_usage = Table(
    "ai_tutor_usage",
    metadata,
    Column("id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("room_sid", Text),
    Column("student_uid", Text),
    Column("service", Text, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("question", Text),
    Column("answer", Text),
    Column("created_at", BigInteger, nullable=False),
)

hands = Table(
    "hands",
    metadata,
    Column("room_sid", Text, primary_key=True),
    Column("uid", Text, primary_key=True),
    Column("raised_at", BigInteger, nullable=False),
)

polls = Table(
    "polls",
    metadata,
    Column("id", Text, primary_key=True),
    Column("room_sid", Text, nullable=False),
    Column("question", Text, nullable=False),
    Column("options", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("closed_at", BigInteger),
)

poll_answers = Table(
    "poll_answers",
    metadata,
    Column("poll_id", Text, primary_key=True),
    Column("uid", Text, primary_key=True),
    Column("option_index", Integer, nullable=False),
    Column("answered_at", BigInteger, nullable=False),
)

chat_messages = Table(
    "chat_messages",
    metadata,
    Column("id", Text, primary_key=True),
    Column("room_sid", Text, nullable=False),
    Column("uid", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

room_topics = Table(
    "room_topics",
    metadata,
    Column("room_sid", Text, primary_key=True),
    Column("topic", Text, nullable=False),
    Column("set_by", Text),
    Column("updated_at", BigInteger, nullable=False),
)

transcript_segments = Table(
    "transcript_segments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("room_sid", Text, nullable=False),
    Column("uid", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=False),
)

# room_id "" is the organization-wide setting; a room's own row overrides it.
transcription_settings = Table(
    "transcription_settings",
    metadata,
    Column("org_id", Text, primary_key=True),
    Column("room_id", Text, primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Text, primary_key=True),
    Column("org_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("events", Text, nullable=False),  # JSON list of event types
    Column("description", Text),
    Column("created_at", BigInteger, nullable=False),
)

# The outbox: one row per event, written in the transaction of the change it announces.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", Text, primary_key=True),  # the `webhook-id` every attempt carries
    Column("seq", BigInteger, nullable=False),  # the order events happened in (per room, deliveries keep it)
    Column("org_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("room_sid", Text),
    Column("payload", Text, nullable=False),  # the exact JSON body sent (signed as is)
    Column("created_at", BigInteger, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("endpoint_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("order_key", Text, nullable=False),  # the room sid ('' for organization events): one in flight per key
    Column("status", Text, nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
)
