"""The database: one place that opens it (SQLite here, PostgreSQL in :mod:`smsched.pg` for a
postgresql:// URL), sets its pragmas and migrates its schema (:mod:`smsched.schema`); and the
SQLite side of the backend interface (:mod:`smsched.dialect`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterator

import sqlite_utils

from smsched.dialect import is_postgres
from smsched.errors import DatabaseError, NotSmschedDatabase, SmschedError
from smsched.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

# Long enough for 50 concurrent CLI writers queued behind one another and a running dispatch.
BUSY_TIMEOUT_S = 120.0
DEFAULT_DB = "smsched.db"


def connect(path: str | os.PathLike, *, trace: Callable[[str], None] | None = None,
            readonly: bool = False):
    """Open the database ``path`` names: a postgresql:// URL (:mod:`smsched.pg`), else a SQLite
    file (see :func:`connect_sqlite`). Either way ``db.conn.execute(sql, params)`` runs portable
    SQL and ``db.dialect`` says the rest."""
    if is_postgres(str(path)):
        from smsched import pg

        return pg.connect(str(path), trace=trace, readonly=readonly)
    return connect_sqlite(path, trace=trace, readonly=readonly)


def connect_sqlite(path: str | os.PathLike, *, trace: Callable[[str], None] | None = None,
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
        db.dialect, db.target = SQLITE, str(path)
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


def transaction(db):
    """One write transaction that holds the write lock from its first statement (either backend)."""
    return db.dialect.transaction(db)


@contextlib.contextmanager
def savepoint(db) -> Iterator:
    """A nested step of a transaction that can fail alone (the same SQL on both backends)."""
    db.conn.execute("SAVEPOINT step")
    try:
        yield db
    except BaseException:
        db.conn.execute("ROLLBACK TO SAVEPOINT step")
        db.conn.execute("RELEASE SAVEPOINT step")
        raise
    db.conn.execute("RELEASE SAVEPOINT step")


@contextlib.contextmanager
def write_transaction(db, begin: str, *then: tuple) -> Iterator:
    """``begin``, then the statements (with their parameters) that take the write lock, then the
    caller's work; rolled back on any error, committed otherwise."""
    conn = db.conn
    conn.execute(begin)
    try:
        for sql, params in then:
            conn.execute(sql, params)
        yield db
    except BaseException:
        if conn.in_transaction:  # an I/O error may already have rolled it back
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteDialect:
    """SQLite's side of :mod:`smsched.dialect`."""

    name = "sqlite"
    # One dispatcher at a time unless --concurrent (a file lock says who); claims read back by lease.
    shares_claims = False

    def transaction(self, db):
        return write_transaction(db, "BEGIN IMMEDIATE")

    def in_list(self, column: str, values) -> tuple[str, str]:
        return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(list(values))

    def greatest(self, a: str, b: str) -> str:
        return f"max({a}, {b})"

    def json_merge(self, a: str, b: str) -> str:
        return f"json_patch({a}, {b})"

    def json_differs(self, a: str, b: str) -> str:
        return f"{a} IS NOT {b}"

    def changes(self, conn, sql: str, params) -> int:
        before = conn.total_changes  # (rowcount is not kept for a statement that starts WITH)
        conn.execute(sql, params)
        return conn.total_changes - before

    def claim(self, db, picks: list[tuple[str, list]], order: str, limit: int, *, fields: str, now: float,
              owner: str, lease_until: float, claimable: str) -> list[tuple]:
        """One UPDATE claims (writers take turns: no two can pick the same rows); the claimed rows
        are read back by the claim's lease, as one JSON document (one step of a statement instead
        of one per row: each step lets go of the GIL, and a busy thread pool makes taking it back slow)."""
        union = " UNION ALL ".join(f"SELECT * FROM ({sql})" for sql, _ in picks)
        params = [lease_until, owner, now, *(p for _, pick_params in picks for p in pick_params), limit]
        claimed = db.conn.execute(
            "UPDATE messages SET state = 'claimed', lease_until = ?, claimed_by = ?, updated_at = ?"
            f" WHERE state IN {claimable} AND id IN (SELECT id FROM ({union}) ORDER BY {order} LIMIT ?)", params).rowcount
        if not claimed:
            return []
        return json.loads(db.conn.execute(
            f"SELECT json_group_array(json_array({fields})) FROM messages"
            " WHERE state = 'claimed' AND lease_until = ? AND claimed_by = ?", (lease_until, owner)).fetchone()[0])

    def orphaned(self, before: float) -> tuple[str, list]:
        """Claims whose lease ended before ``before`` (math.inf: every claim, when alone)."""
        return "lease_until < ?", [before]

    def owner_alive(self, column: str) -> str:
        return "0"  # a file lock cannot say which runs are alive: only the exclusive holder judges

    def run_lock(self, db, owner: str):
        from smsched.dispatch.lock import RunLock

        return RunLock(db.target)

    def live_dispatchers(self, db) -> int | None:
        return None  # unknown: with --concurrent, divide the rate in the configuration

    def wall(self, db) -> float:
        return time.time()

    def change_file(self, db) -> str | None:
        """A file whose stat changes when anyone writes (an idle dispatcher watches it, not the tables)."""
        return f"{db.target}-wal"


SQLITE = SqliteDialect()


def now_s() -> int:
    return int(time.time())
