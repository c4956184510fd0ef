"""The SQLite database: one place that opens it, sets its pragmas and migrates its schema.

Every time is stored as UTC Unix seconds (INTEGER for schedules, REAL where sub-second
precision matters: when a message was sent, how long a run took).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterator

import sqlite_utils

from smsched.errors import DatabaseError, NotSmschedDatabase

# "SMSC": marks a file as ours, so we never migrate somebody else's database.
APPLICATION_ID = 0x534D5343
# Long enough for 50 concurrent CLI writers queued behind one another and a running dispatch.
BUSY_TIMEOUT_S = 120.0
DEFAULT_DB = "smsched.db"

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            tz TEXT NOT NULL,
            region TEXT NOT NULL,
            sender TEXT,
            quiet_hours TEXT NOT NULL DEFAULT '08:00-22:00',
            created_at INTEGER NOT NULL
        );
        CREATE TABLE leads (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            phone TEXT NOT NULL,
            name TEXT,
            fields TEXT NOT NULL DEFAULT '{}',
            tz TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE (user_id, phone)
        );
        CREATE TABLE optouts (
            id INTEGER PRIMARY KEY,
            phone TEXT NOT NULL,
            -- 0 for an opt-out that covers every user, else the user's id
            scope INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            source TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            UNIQUE (phone, scope)
        );
        CREATE TABLE campaigns (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            name TEXT NOT NULL,
            channel TEXT NOT NULL,
            priority INTEGER NOT NULL,
            message TEXT,
            template TEXT,
            lang TEXT,
            params TEXT,
            session INTEGER NOT NULL DEFAULT 0,
            tz TEXT NOT NULL,
            quiet_hours TEXT NOT NULL,
            rrule TEXT,
            valid_for INTEGER NOT NULL,
            gsm7 INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'active',
            scheduled_at INTEGER NOT NULL,
            materialized_until INTEGER,
            encoding TEXT,
            segments_per_message INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
            user_id INTEGER NOT NULL,
            lead_id INTEGER,
            phone TEXT NOT NULL,
            channel TEXT NOT NULL,
            body TEXT NOT NULL,
            params TEXT,
            tz TEXT NOT NULL,
            priority INTEGER NOT NULL,
            -- position inside its campaign: claims take seq 0 of every due campaign, then seq 1...
            seq INTEGER NOT NULL,
            occurrence INTEGER NOT NULL,
            scheduled_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            state TEXT NOT NULL,
            lease_until REAL,
            claimed_by TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            sent_at REAL,
            provider TEXT,
            provider_id TEXT,
            error TEXT,
            updated_at REAL
        );
        CREATE INDEX messages_due ON messages (priority, scheduled_at / 60, seq)
            WHERE state = 'scheduled';
        CREATE INDEX messages_campaign ON messages (campaign_id, state);
        CREATE INDEX messages_phone ON messages (phone);
        CREATE INDEX messages_inflight ON messages (state, lease_until)
            WHERE state IN ('claimed', 'sending');
        CREATE INDEX messages_sent ON messages (sent_at) WHERE sent_at IS NOT NULL;
        CREATE INDEX campaigns_user ON campaigns (user_id);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            pid INTEGER NOT NULL,
            mode TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            clock_start REAL NOT NULL,
            claimed INTEGER NOT NULL DEFAULT 0,
            sent INTEGER NOT NULL DEFAULT 0,
            retried INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            unknown INTEGER NOT NULL DEFAULT 0,
            suppressed INTEGER NOT NULL DEFAULT 0,
            expired INTEGER NOT NULL DEFAULT 0,
            deferred INTEGER NOT NULL DEFAULT 0,
            duration REAL,
            rate REAL,
            lag_p50 REAL,
            lag_p95 REAL,
            lag_p99 REAL,
            lag_max REAL,
            time_db REAL,
            time_provider REAL,
            time_rate_limit REAL,
            time_idle REAL,
            bottleneck TEXT,
            summary TEXT
        );
        CREATE INDEX runs_started ON runs (started_at);
        """,
    ),
    (
        "0002_next_due_and_run_facts",
        """
        -- When does the next message fall due: one index step, whatever the table's size.
        CREATE INDEX messages_next_due ON messages (scheduled_at) WHERE state = 'scheduled';
        -- A message changes state three times on its way out (claimed, sending, sent): indexes
        -- that hold the state pay for each change. A campaign's messages are found by campaign
        -- alone (a few thousand rows at most), and a run's claims by their lease, which only
        -- claimed and sending messages have.
        DROP INDEX messages_campaign;
        CREATE INDEX messages_campaign ON messages (campaign_id);
        DROP INDEX messages_inflight;
        CREATE INDEX messages_inflight ON messages (lease_until) WHERE lease_until IS NOT NULL;
        -- The facts a run's bottleneck is named from.
        ALTER TABLE runs ADD COLUMN time_cpu REAL;
        ALTER TABLE runs ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN bottleneck_detail TEXT;
        """,
    ),
    (
        "0003_delivery_and_receipts",
        """
        -- When the last request for a message left (wall clock): reconciliation's time window.
        ALTER TABLE messages ADD COLUMN sending_at REAL;
        -- What the provider's delivery receipts said last, by the provider's own order.
        ALTER TABLE messages ADD COLUMN delivery TEXT;
        ALTER TABLE messages ADD COLUMN delivery_at REAL;
        ALTER TABLE messages ADD COLUMN delivered_at REAL;
        ALTER TABLE messages ADD COLUMN delivery_error TEXT;
        CREATE INDEX messages_unknown ON messages (provider, sending_at) WHERE state = 'unknown';
        CREATE INDEX messages_provider_id ON messages (provider_id) WHERE provider_id IS NOT NULL;
        -- Every receipt as it came, once (a replay is ignored); message_id is NULL until it matches.
        CREATE TABLE receipts (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            provider_message_id TEXT NOT NULL,
            message_id INTEGER,
            status TEXT NOT NULL,
            error_code TEXT,
            error_text TEXT,
            occurred_at REAL,
            received_at REAL NOT NULL,
            UNIQUE (provider, provider_message_id, status)
        );
        CREATE INDEX receipts_unmatched ON receipts (provider_message_id) WHERE message_id IS NULL;
        """,
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str | os.PathLike, *, trace: Callable[[str], None] | None = None) -> sqlite_utils.Database:
    """Open (creating if needed) and migrate the database at ``path``.

    The connection is in autocommit mode: every multi-statement write goes through
    :func:`transaction`, which takes the write lock up front. ``trace`` sees every statement
    from the first one (dispatch counts them).
    """
    path = Path(path)
    if path.is_dir():
        raise DatabaseError(f"{path} is a directory, not a database file; pass --db FILE")
    _refuse_foreign_file(path)
    try:
        # The busy timeout: long enough for dozens of CLI writers queued behind a dispatch.
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        if trace is not None:
            conn.set_trace_callback(trace)
        # Identify the file before any pragma that writes to it (journal_mode does).
        identity = _check_identity(conn, path)
        if identity["journal_mode"] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        # FULL (SQLite's default, checked here): a committed 'sending' mark must survive a power
        # cut, or a message could be sent twice. Dispatch commits a few times per thousand
        # messages, so it costs little.
        if identity["synchronous"] != 2:
            conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -32000")
    except (NotSmschedDatabase, DatabaseError):
        raise
    except sqlite3.DatabaseError as exc:
        raise NotSmschedDatabase(
            f"{path} is not an smsched database ({exc}); pass --db with another file"
        ) from None
    db = sqlite_utils.Database(conn, execute_plugins=False)
    if identity["user_version"] < SCHEMA_VERSION:
        try:
            _migrate(db, path)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise DatabaseError(f"cannot use database {path}: {exc}") from None
    return db


def _refuse_foreign_file(path: Path) -> None:
    """Reject, without writing a byte, a file that is not an SQLite database."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        raise NotSmschedDatabase(
            f"{path} is not an smsched database (not an SQLite file); "
            "pass --db with another file"
        )


def _check_identity(conn: sqlite3.Connection, path: Path) -> dict:
    """What the file says it is, in one read: whose, which schema, which journal."""
    app_id, version, journal, synchronous, tables = conn.execute(
        "SELECT (SELECT application_id FROM pragma_application_id), (SELECT user_version FROM pragma_user_version),"
        " (SELECT journal_mode FROM pragma_journal_mode), (SELECT synchronous FROM pragma_synchronous),"
        " (SELECT count(*) FROM sqlite_master)").fetchone()
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
        conn.close()
        raise NotSmschedDatabase(
            f"{path} is an SQLite database but not an smsched one; pass --db with another file"
        )
    if version > SCHEMA_VERSION:
        conn.close()
        raise DatabaseError(
            f"{path} was written by a newer smsched (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade smsched"
        )
    return {"user_version": version, "journal_mode": journal, "synchronous": synchronous}


def _migrate(db: sqlite_utils.Database, path: Path) -> None:
    conn = db.conn
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, (name, sql) in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        with transaction(db):
            # Another process may have migrated while we waited for the lock.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current >= number:
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {number}")


def _statements(sql: str) -> list[str]:
    # executescript() would commit our transaction; split on complete statements instead.
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    return [s for s in statements if s]


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One write transaction that holds the write lock from its first statement."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:  # an I/O error may already have rolled it back
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def now_s() -> int:
    return int(time.time())
