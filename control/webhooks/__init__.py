"""Webhooks that lose nothing (issue 17): an organization's endpoints, the outbox, signed deliveries with retries.

An event is written to the outbox (`webhook_events`, plus one `webhook_deliveries` row per subscribed endpoint) in
the same database transaction as the change it announces, so a crash can lose neither the change without its
event nor the event without its change. The dispatcher then delivers it, Standard Webhooks style, retrying with
exponential backoff for `CLASSCAST_WEBHOOK_RETRY_WINDOW` (24 h); per endpoint and room one delivery is in flight
at a time, so a receiver sees each room's events in order, each at least once under a stable `webhook-id`.
"""

from __future__ import annotations

EVENT_TYPES = (
    "room_started",
    "room_finished",
    "participant_joined",
    "participant_left",
    "recording_started",
    "recording_ready",
    "recording_failed",
    "credits_low",
)
