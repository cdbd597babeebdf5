"""The tables of a run's state file (see `batchopt.execute.state`)."""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS submissions (
    tag TEXT PRIMARY KEY,          -- also sent to the provider as batch metadata
    round INTEGER NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    batch_id TEXT UNIQUE,          -- NULL until the provider has answered the create call
    state TEXT NOT NULL,           -- submitting | pending | collected | failed | lost
    raw_status TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS items (
    tag TEXT NOT NULL REFERENCES submissions(tag),
    key TEXT NOT NULL,
    outcome TEXT,                  -- NULL while pending; succeeded | errored | expired | canceled
    error TEXT,
    PRIMARY KEY (tag, key)
);
CREATE INDEX IF NOT EXISTS items_key ON items(key);
CREATE TABLE IF NOT EXISTS calls (  -- every call this run id sent: see batchopt.run.calls
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    tier TEXT,
    provider TEXT,
    model TEXT,
    kind TEXT,                     -- first | escalation | judge | retry
    mode TEXT NOT NULL,            -- online | batch
    tag TEXT,                      -- the batch submission that carried it
    status TEXT NOT NULL,          -- sent_unconfirmed | confirmed | not_billed
    input_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    estimated_usd REAL,
    request_id TEXT,
    batch_id TEXT,
    sent_at REAL,
    answered_at REAL
);
CREATE INDEX IF NOT EXISTS calls_key ON calls(key);
"""
TABLES = ("meta", "submissions", "items", "calls")  # in the order a copy must insert them
CALL_FIELDS = ("id", "key", "tier", "provider", "model", "kind", "mode", "tag", "status",
               "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
               "cost_usd", "estimated_usd", "request_id", "batch_id", "sent_at", "answered_at")
