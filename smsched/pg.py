"""The PostgreSQL database: one server that many hosts share (``--db postgresql://user@host/db``).

The driver is psycopg 3 (``pip install 'smsched[postgres]'``), imported only when such a URL is
given. What differs from SQLite lives here, behind the interface in :mod:`smsched.dialect`:

- statements arrive in the portable spelling (``?`` placeholders) and are passed on as psycopg's
  (``%s``); the connection is in autocommit mode, as SQLite's is;
- the schema is the same named steps as SQLite's (:mod:`smsched.schema`), read with PostgreSQL's
  types; the steps applied are recorded in ``smsched_schema``, and a database of a newer smsched
  is refused;
- a write transaction takes an advisory lock first: like SQLite's ``BEGIN IMMEDIATE``, one at a
  time (claims and outcomes are single statements and never wait for it);
- a claim is one statement whose candidate rows are taken ``FOR UPDATE SKIP LOCKED``: any number
  of dispatchers on any number of hosts claim at once, never the same message;
- every dispatcher holds a session advisory lock named after it while it runs. The server drops
  it when the session dies (kill -9, a host lost), so a claim whose dispatcher no longer holds
  its lock is an orphan at once, whatever its lease says; and the locks held tell how many
  dispatchers share each provider's rate;
- leases are read on the server's clock (``clock_timestamp()``): hosts with skewed clocks cannot
  take each other's live work.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from decimal import Decimal
from functools import lru_cache
from typing import Callable

from smsched.dialect import shown
from smsched.errors import DatabaseError, NotSmschedDatabase, UsageError
from smsched.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

WRITE_LOCK = (APPLICATION_ID, 1)    # advisory lock of a write transaction (one at a time)
OWNER_LOCK_CLASS = APPLICATION_ID + 1  # (this, hashtext(owner)): a dispatcher is alive
_THIS_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())"
_OWNER_LOCKS = ("SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
                f" AND classid = {OWNER_LOCK_CLASS} AND objsubid = 2 AND database = {_THIS_DATABASE}")
SCHEMA_TABLE = ("CREATE TABLE IF NOT EXISTS smsched_schema (step INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at DOUBLE PRECISION NOT NULL)")
# The tables `db migrate-to` copies, parents first.
TABLES = ("users", "leads", "optouts", "campaigns", "messages", "runs", "receipts")


def connect(url: str, *, trace: Callable[[str], None] | None = None, readonly: bool = False) -> "PgDatabase":
    try:
        import psycopg
    except ImportError:
        raise UsageError("--db names a PostgreSQL database, and its driver is not installed: "
                         "pip install 'smsched[postgres]'") from None
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="smsched")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else type(exc).__name__
        raise DatabaseError(f"cannot connect to {shown(url)}: {reason}; check the URL, that the server runs "
                            "and that it lets this user in (pg_hba.conf)") from None
    _numbers_as_python(raw)
    db = PgDatabase(raw, url, trace)
    try:
        version = _identity(db)
        if version is None:
            if readonly:
                raise DatabaseError(f"{shown(url)}: no smsched schema in this database (a command that only reads "
                                    "does not create it); check --db or SMSCHED_DB")
            version = 0
        if version > SCHEMA_VERSION:
            raise DatabaseError(f"{shown(url)} was written by a newer smsched (schema {version}, this one knows "
                                f"{SCHEMA_VERSION}); upgrade smsched")
        if version < SCHEMA_VERSION:
            _migrate(db)
    except BaseException:
        raw.close()
        raise
    return db


class PgDatabase:
    """What the rest of smsched sees of a PostgreSQL database: ``conn`` and ``dialect``."""

    def __init__(self, raw, url: str, trace: Callable[[str], None] | None):
        self.conn = PgConnection(raw, trace)
        self.dialect = POSTGRES
        self.target = url
        self.clock_offset: float | None = None  # server clock minus this machine's


class PgConnection:
    """A psycopg connection that takes the portable SQL (``?`` placeholders) and raises the DB-API
    exceptions the rest of the code catches, as :mod:`sqlite3` names them."""

    def __init__(self, raw, trace: Callable[[str], None] | None):
        self.raw, self.trace = raw, trace

    def execute(self, sql: str, params=()):
        if self.trace is not None:
            self.trace(sql)
        try:
            if params:
                return self.raw.execute(_translate(sql), params)
            return self.raw.execute(_translate_bare(sql))
        except Exception as exc:  # psycopg's errors, raised as sqlite3's (below)
            raise _as_dbapi_error(exc) from None

    def executemany(self, sql: str, seq):
        if self.trace is not None:
            self.trace(sql)
        cursor = self.raw.cursor()
        try:
            cursor.executemany(_translate(sql), [list(row) for row in seq])
        except Exception as exc:
            raise _as_dbapi_error(exc) from None
        return cursor

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def set_trace_callback(self, trace: Callable[[str], None] | None) -> None:
        self.trace = trace

    def close(self) -> None:
        self.raw.close()

    def __enter__(self):  # `with db.conn:` as sqlite3 has it: autocommit already commits each statement
        return self

    def __exit__(self, *exc) -> None:
        return None


@lru_cache(maxsize=4096)
def _translate(sql: str) -> str:
    """``?`` -> ``%s`` and ``%`` -> ``%%`` (psycopg's placeholders), outside quoted strings for ``?``."""
    out, quoted = [], False
    for char in sql:
        if char == "'":
            quoted = not quoted
            out.append(char)
        elif char == "%":
            out.append("%%")
        elif char == "?" and not quoted:
            out.append("%s")
        else:
            out.append(char)
    return _translate_bare("".join(out))


def _translate_bare(sql: str) -> str:
    return "BEGIN" if sql == "BEGIN IMMEDIATE" else sql


def _as_dbapi_error(exc: Exception) -> Exception:
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return exc
    text = str(exc).strip()
    if isinstance(exc, psycopg.IntegrityError):
        return sqlite3.IntegrityError(text)
    if isinstance(exc, psycopg.OperationalError):
        return sqlite3.OperationalError(text)
    return sqlite3.DatabaseError(text)


def _numbers_as_python(raw) -> None:
    """Numbers as SQLite has them: sum() and avg() answer NUMERIC, read as int when whole, else
    float; a Python bool goes in as 0 or 1 (the schema's flags are integers)."""
    from psycopg.adapt import Dumper, Loader

    class NumericLoader(Loader):
        def load(self, data):
            value = Decimal(bytes(data).decode())
            return int(value) if value == value.to_integral_value() else float(value)

    class BoolAsInteger(Dumper):
        oid = raw.adapters.types["int8"].oid

        def dump(self, obj):
            return b"1" if obj else b"0"

    raw.adapters.register_loader("numeric", NumericLoader)
    raw.adapters.register_dumper(bool, BoolAsInteger)


# ---- the schema -------------------------------------------------------------------------------

def _identity(db: PgDatabase) -> int | None:
    """The schema step this database is at; None when it is empty; a foreign one is refused."""
    ours, tables = db.conn.execute(
        "SELECT to_regclass('smsched_schema') IS NOT NULL,"
        " (SELECT count(*) FROM pg_tables WHERE schemaname = current_schema())").fetchone()
    if ours:
        return db.conn.execute("SELECT coalesce(max(step), 0) FROM smsched_schema").fetchone()[0]
    if tables:
        raise NotSmschedDatabase(f"{shown(db.target)} holds tables but is not an smsched database; "
                                 "give --db an empty database (or an smsched one)")
    return None


def _migrate(db: PgDatabase) -> None:
    with POSTGRES.transaction(db):  # DDL is transactional here: a step applies whole or not at all
        db.conn.execute(SCHEMA_TABLE)
        current = db.conn.execute("SELECT coalesce(max(step), 0) FROM smsched_schema").fetchone()[0]
        for number, (name, sql) in enumerate(MIGRATIONS, start=1):
            if number <= current:
                continue
            for statement in _statements(ddl(sql)):
                db.conn.execute(statement)
            db.conn.execute("INSERT INTO smsched_schema (step, name, applied_at) VALUES (?, ?, ?)",
                            (number, name, time.time()))


def ddl(sql: str) -> str:
    """A schema step in PostgreSQL's types: the same step, read with its words."""
    sql = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    return re.sub(r"\b(\w+ / \d+)\b", r"(\1)", sql)  # an expression in an index goes in parentheses


def _statements(sql: str) -> list[str]:
    text = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [part.strip() for part in text.split(";") if part.strip()]


# ---- the dialect -------------------------------------------------------------------------------

class PgDialect:
    """PostgreSQL's side of :mod:`smsched.dialect`."""

    name = "postgresql"
    shares_claims = True  # dispatchers share the work with no flag

    def transaction(self, db):
        from smsched.storage import write_transaction

        return write_transaction(db, "BEGIN", ("SELECT pg_advisory_xact_lock(?, ?)", WRITE_LOCK))

    def in_list(self, column: str, values) -> tuple[str, list]:
        return f"{column} = ANY(?)", list(values)

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})"

    def json_merge(self, a: str, b: str) -> str:
        return f"(({a})::jsonb || ({b})::jsonb)::text"

    def json_differs(self, a: str, b: str) -> str:
        return f"({a})::jsonb IS DISTINCT FROM ({b})::jsonb"

    def changes(self, conn, sql: str, params) -> int:
        return conn.execute(sql, params).rowcount

    def claim(self, db, picks: list[tuple[str, list]], order: str, limit: int, *, fields: str, now: float,
              owner: str, lease_until: float, claimable: str) -> list[tuple]:
        """The candidates are locked as they are read, skipping rows another claim holds: claims
        from any number of hosts run at once and never take the same message."""
        branches = " UNION ALL ".join(f"SELECT * FROM ({sql} FOR UPDATE SKIP LOCKED) AS pick{i}"
                                      for i, (sql, _) in enumerate(picks))
        returning = ", ".join(f"messages.{name.strip()}" for name in fields.split(","))
        params = [lease_until, owner, now, *(p for _, pick_params in picks for p in pick_params), limit]
        return db.conn.execute(
            "UPDATE messages SET state = 'claimed', lease_until = ?, claimed_by = ?, updated_at = ?"
            f" FROM (SELECT id FROM ({branches}) AS candidates ORDER BY {order} LIMIT ?) AS chosen"
            f" WHERE messages.id = chosen.id AND messages.state IN {claimable} RETURNING {returning}", params).fetchall()

    def orphaned(self, before: float) -> tuple[str, list]:
        """Claims whose lease ended before ``before``, or whose dispatcher's session is gone."""
        return f"(lease_until < ? OR NOT {self.owner_alive('claimed_by')})", [before]

    def owner_alive(self, column: str) -> str:
        return f"coalesce(hashtext({column})::bigint & 4294967295, -1) IN ({_OWNER_LOCKS})"  # no owner: dead

    def run_lock(self, db, owner: str) -> "_OwnerLock":
        return _OwnerLock(db, owner)

    def live_dispatchers(self, db) -> int:
        return db.conn.execute(f"SELECT count(*) FROM ({_OWNER_LOCKS}) AS live").fetchone()[0]

    def wall(self, db) -> float:
        if db.clock_offset is None:
            before = time.time()
            server = db.conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
            db.clock_offset = server - (before + time.time()) / 2
        return time.time() + db.clock_offset

    def change_file(self, db) -> None:
        return None  # no file to watch: an idle dispatcher asks once per poll


POSTGRES = PgDialect()


class _OwnerLock:
    """A dispatcher's session lock: held while it runs, dropped by the server when it dies."""

    def __init__(self, db: PgDatabase, owner: str):
        self.db, self.owner, self.held = db, owner, False

    def try_exclusive(self) -> bool:
        self.held = bool(self.db.conn.execute("SELECT pg_try_advisory_lock(?, hashtext(?))",
                                              (OWNER_LOCK_CLASS, self.owner)).fetchone()[0])
        return False  # never alone: the work is shared, and dead dispatchers are known by their lock

    def try_shared(self) -> bool:
        return self.held

    def holder(self) -> str:
        return ""

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(sqlite3.Error):
                self.db.conn.execute("SELECT pg_advisory_unlock(?, hashtext(?))", (OWNER_LOCK_CLASS, self.owner))
            self.held = False


# ---- moving an SQLite database here -------------------------------------------------------------

def migrate_to(source, url: str, *, progress: Callable[[str, int], None] | None = None) -> dict:
    """Copy an smsched SQLite database into an empty PostgreSQL one, in one transaction, and
    verify it by counting every table on both sides."""
    target = connect(url)
    try:
        filled = [t for t in TABLES if target.conn.execute(f"SELECT EXISTS (SELECT 1 FROM {t})").fetchone()[0]]
        if filled:
            raise UsageError(f"{shown(url)} is not empty ({', '.join(filled)} hold rows); give an empty database")
        counts = {}
        with POSTGRES.transaction(target):
            for table in TABLES:
                columns = [row[1] for row in source.conn.execute(f"PRAGMA table_info({table})")]
                names = ", ".join(columns)
                cursor = target.conn.raw.cursor()
                with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in source.conn.execute(f"SELECT {names} FROM {table} ORDER BY id"):
                        copy.write_row(row)
                if "id" in columns:
                    target.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                                        f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)")
                source_count = source.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                copied = target.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                if copied != source_count:
                    raise DatabaseError(f"{table}: {copied} rows arrived of {source_count}; nothing was kept")
                counts[table] = copied
                if progress:
                    progress(table, copied)
        return counts
    finally:
        target.conn.close()

