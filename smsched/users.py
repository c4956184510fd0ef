"""Users: the tenants (client accounts) whose leads and campaigns smsched schedules."""

from __future__ import annotations

import sqlite3

import sqlite_utils

from smsched import clock, phones
from smsched.errors import NotFound, UsageError
from smsched.quiet_hours import parse_window
from smsched.storage import now_s

DEFAULT_TZ = "America/Sao_Paulo"
DEFAULT_REGION = "BR"
DEFAULT_QUIET_HOURS = "08:00-22:00"
COLUMNS = "id, name, tz, region, sender, quiet_hours, created_at"


def add(
    db: sqlite_utils.Database,
    name: str,
    *,
    tz: str = DEFAULT_TZ,
    region: str = DEFAULT_REGION,
    sender: str | None = None,
    quiet_hours: str = DEFAULT_QUIET_HOURS,
    now: float | None = None,
) -> dict:
    name = (name or "").strip()
    if not name:
        raise UsageError("a user needs a name")
    if name.isdigit():
        raise UsageError(f"user name {name!r} is all digits, which reads as an id; choose another")
    clock.zone(tz)
    region = phones.check_region(region)
    parse_window(quiet_hours)
    try:
        cursor = db.conn.execute(
            "INSERT INTO users (name, tz, region, sender, quiet_hours, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, tz, region, sender, quiet_hours, int(now or now_s())),
        )
    except sqlite3.IntegrityError:
        raise UsageError(f"user {name!r} already exists; pick another name") from None
    return get(db, str(cursor.lastrowid))


def get(db: sqlite_utils.Database, ref: str | int) -> dict:
    """A user by id or by unique name."""
    ref = str(ref).strip()
    row = None
    if ref.isdigit():
        row = db.conn.execute(f"SELECT {COLUMNS} FROM users WHERE id = ?", (int(ref),)).fetchone()
    if row is None:
        row = db.conn.execute(f"SELECT {COLUMNS} FROM users WHERE name = ?", (ref,)).fetchone()
    if row is None:
        raise NotFound(f"no user {ref!r}: see `smsched users list`, or add it with `smsched users add`")
    return _as_dict(row)


def list_all(db: sqlite_utils.Database) -> list[dict]:
    rows = db.conn.execute(f"SELECT {COLUMNS} FROM users ORDER BY id").fetchall()
    return [_as_dict(r) for r in rows]


def _as_dict(row: tuple) -> dict:
    keys = [c.strip() for c in COLUMNS.split(",")]
    return dict(zip(keys, row))
