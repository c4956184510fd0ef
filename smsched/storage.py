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

from smsched.errors import DatabaseError, NotSmschedDatabase, SmschedError

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
    (
        "0004_line_types",
        """
        -- libphonenumber's type of each lead's number: an SMS campaign leaves landlines out.
        ALTER TABLE leads ADD COLUMN line_type TEXT;
        ALTER TABLE campaigns ADD COLUMN include_landlines INTEGER NOT NULL DEFAULT 0;
        """,
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str | os.PathLike, *, trace: Callable[[str], None] | None = None,
            readonly: bool = False) -> sqlite_utils.Database:
    """Open (creating if needed, unless ``readonly``) and migrate the database at ``path``.

    The connection is in autocommit mode: every multi-statement write goes through
    :func:`transaction`, which takes the write lock up front. ``trace`` sees every statement
    (dispatch counts them). The file's identity (ours? which schema? WAL?) is read from its
    header before SQLite opens it: a foreign or newer file is refused without a byte written,
    and the usual open costs three statements. A read-only open (``readonly``) is for commands
    that only read: they work on a read-only file or file system.
    """
    path = Path(path)
    header = _header(path)
    if readonly and header is not None and header["user_version"] < SCHEMA_VERSION and _writable(path):
        readonly = False  # an older schema is upgraded first, by whichever command opens it
    if header is None:
        if readonly:
            raise DatabaseError(f"{path}: no such database (it is not created by a command that only reads); "
                                "check --db or SMSCHED_DB")
        _check_creatable(path)
    else:
        _check_identity(header, path)
        if not readonly and not _writable(path):
            raise DatabaseError(f"{path} is read-only ({_why_read_only(path)}); commands that change it need "
                                "write access to the file and its directory")
    conn = _open(path, header, readonly)
    try:
        if trace is not None:
            conn.set_trace_callback(trace)
        if header is not None and header["app_id"] != APPLICATION_ID:
            # Not ours by its header; in WAL mode the header lags behind the log, so ask SQLite
            # (a database another process is creating right now is ours already in the log).
            header |= _identity_by_sql(conn, path)
        if not readonly:
            if header is None or not header["wal"]:
                conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed 'sending' mark must survive a power cut, or a message could be
            # sent twice. Dispatch commits a few times per thousand messages, so it costs little.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -32000")
        db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
        if not readonly and (header is None or header["user_version"] < SCHEMA_VERSION):
            _migrate(db, path)
        return db
    except (NotSmschedDatabase, DatabaseError):
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        if header is None:
            _undo_failed_creation(path, exc)
        raise _environment_error(path, exc) from None


def _header(path: Path) -> dict | None:
    """The identity in an SQLite file's 100-byte header (None: no file yet, or an empty one).

    In WAL mode the header is updated at checkpoints only: its user_version may lag behind (never
    ahead), and a database being created may still show application_id 0."""
    if path.is_dir():
        raise NotSmschedDatabase(f"{path} is a directory, not a database file; pass --db FILE")
    try:
        with open(path, "rb") as f:
            data = f.read(100)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise DatabaseError(f"{path}: permission denied; run as the user that owns it, or pass --db") from None
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot read it ({exc.strerror})") from None
    if not data:
        return None
    if len(data) < 100 or data[:16] != b"SQLite format 3\x00":
        raise NotSmschedDatabase(f"{path} is not an smsched database (not an SQLite file); pass --db with another file")
    return {"wal": data[18] == 2 and data[19] == 2, "user_version": int.from_bytes(data[60:64], "big"),
            "app_id": int.from_bytes(data[68:72], "big")}


def _check_identity(header: dict, path: Path) -> None:
    if header["app_id"] not in (0, APPLICATION_ID):
        raise NotSmschedDatabase(f"{path} is an SQLite database but not an smsched one; pass --db with another file")
    if header["user_version"] > SCHEMA_VERSION:
        raise DatabaseError(
            f"{path} was written by a newer smsched (schema {header['user_version']}, this one knows "
            f"{SCHEMA_VERSION}); upgrade smsched"
        )


def _check_creatable(path: Path) -> None:
    directory = path.absolute().parent
    if not directory.is_dir():
        raise DatabaseError(f"cannot create {path}: the directory {directory} does not exist; create it, or fix --db")
    if not os.access(directory, os.W_OK | os.X_OK) or _read_only_fs(directory):
        raise DatabaseError(f"cannot create {path}: the directory {directory} is read-only; pass --db with a writable place")


def _writable(path: Path) -> bool:
    directory = path.absolute().parent
    return (os.access(path, os.W_OK) and os.access(directory, os.W_OK | os.X_OK)
            and not _read_only_fs(directory))


def _read_only_fs(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _why_read_only(path: Path) -> str:
    if _read_only_fs(path.absolute().parent):
        return "its file system is mounted read-only"
    if not os.access(path, os.W_OK):
        return "the file is not writable by this user"
    return "its directory is not writable by this user (SQLite writes the -wal and -shm files there)"


def _open(path: Path, header: dict | None, readonly: bool) -> sqlite3.Connection:
    try:
        if not readonly or _writable(path):
            # A command that only reads still opens a writable file read-write: SQLite then
            # cleans up its -wal/-shm files on close instead of leaving them behind.
            # The busy timeout: long enough for dozens of CLI writers queued behind a dispatch.
            return sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        uri = f"{path.absolute().as_uri()}?mode=ro"
        if not _writable(path) and header and header["wal"]:
            # A WAL file on a read-only place cannot get its shared-memory index: read it as it is.
            uri += "&immutable=1"
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _environment_error(path, exc) from None


def _environment_error(path: Path, exc: sqlite3.Error) -> DatabaseError:
    """Name the real cause of a failure to open or create a database."""
    text = str(exc)
    if "full" in text or _disk_full(path):
        return DatabaseError(f"{path}: the disk is full ({text}); free some space and try again")
    if "readonly" in text or "read-only" in text:
        return DatabaseError(f"{path} is read-only ({text}); commands that change it need write access")
    if "unable to open" in text:
        return DatabaseError(f"{path}: cannot open it ({text}); check the path, its directory and permissions")
    if "malformed" in text or "not a database" in text:
        return NotSmschedDatabase(f"{path} is damaged or not a database ({text}); restore it from a backup")
    return DatabaseError(f"cannot use database {path}: {text}")


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path.absolute().parent)
        return st.f_bavail * st.f_frsize < 64 * 1024
    except OSError:
        return False


def _undo_failed_creation(path: Path, exc: sqlite3.Error) -> None:
    """A creation that failed for want of space leaves no half-made file behind (the next command
    would call it damaged). Only then, and only if the file is not a finished smsched database:
    another process may be creating the same file successfully."""
    full = "full" in str(exc) or _disk_full(path)
    try:
        header = _header(path)
    except SmschedError:
        return
    finished = header is not None and header["app_id"] == APPLICATION_ID and header["user_version"] > 0
    if finished or not (full or header is None):
        return
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            if leftover.exists() and (full or leftover.stat().st_size == 0):
                leftover.unlink()
        except OSError:
            pass


def _identity_by_sql(conn: sqlite3.Connection, path: Path) -> dict:
    # One statement, one snapshot: read separately, a creation committed in between would show
    # tables without our application id.
    app_id, version, tables = conn.execute(
        "SELECT (SELECT application_id FROM pragma_application_id), (SELECT user_version FROM pragma_user_version),"
        " (SELECT count(*) FROM sqlite_master)").fetchone()
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
        raise NotSmschedDatabase(f"{path} is an SQLite database but not an smsched one; pass --db with another file")
    identity = {"app_id": app_id, "user_version": version}
    _check_identity(identity, path)
    return identity


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
