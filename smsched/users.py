"""Users: the tenants (client accounts) whose leads and campaigns smsched schedules."""

from __future__ import annotations

import sqlite3

import sqlite_utils

from smsched import clock, phones
from smsched.errors import NotFound, UsageError
from smsched.names import check_name, check_sender
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
    name = check_name(name, "a user's name")
    if name.isdigit():
        raise UsageError(f"user name {name!r} is all digits, which reads as an id; choose another")
    clock.zone(tz)
    region = phones.check_region(region)
    sender = check_sender(sender, region)
    parse_window(quiet_hours)
    try:
        (user_id,) = db.conn.execute(
            "INSERT INTO users (name, tz, region, sender, quiet_hours, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (name, tz, region, sender, quiet_hours, int(now or now_s())),
        ).fetchone()
    except sqlite3.IntegrityError:
        raise UsageError(f"user {name!r} already exists; pick another name") from None
    return get(db, str(user_id))


def import_csv(db: sqlite_utils.Database, path: str, *, now: float | None = None) -> dict:
    """Many users from one CSV (name, and optionally tz, region, sender, quiet_hours), all or none.

    Names that already exist are left as they are, so importing the same file twice is harmless.
    """
    from smsched.csvfiles import normalise_key, open_csv
    from smsched.errors import ImportFailed
    from smsched.storage import transaction

    source = open_csv(path)
    bad, rows = [], []
    try:
        records = source.rows()
        header = next(records, None)
        if header is None:
            raise ImportFailed(f"{source.name} has no header line")
        keys = [normalise_key(h) for h in header[1]]
        if "name" not in keys:
            raise ImportFailed(f"{source.name}: no 'name' column; the headers are {', '.join(header[1])}")
        for line, record in records:
            if not record:
                continue
            values = {k: (record[i].strip() if i < len(record) else "") for i, k in enumerate(keys) if k}
            try:
                name = check_name(values.get("name", ""), "a user's name")
                if name.isdigit():
                    raise UsageError(f"invalid user name {name!r}: all digits reads as an id")
                tz = values.get("tz") or DEFAULT_TZ
                clock.zone(tz)
                region = phones.check_region(values.get("region") or DEFAULT_REGION)
                window = values.get("quiet_hours") or DEFAULT_QUIET_HOURS
                parse_window(window)
                rows.append((name, tz, region, check_sender(values.get("sender") or None, region), window))
            except UsageError as exc:
                bad.append(f"{source.name}: line {line}: {exc}")
    finally:
        source.binary.close()
    if bad:
        raise ImportFailed(f"{len(bad)} bad row(s) in {source.name}; nothing was created", details=bad)
    stamp = int(now or now_s())
    with transaction(db):
        created = db.conn.executemany(  # rows inserted (DB-API: summed over the rows)
            "INSERT INTO users (name, tz, region, sender, quiet_hours, created_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            [(*row, stamp) for row in rows],
        ).rowcount
    return {"read": len(rows), "created": created, "existing": len(rows) - created}


def get(db: sqlite_utils.Database, ref: str | int) -> dict:
    """A user by id or by unique name."""
    ref = str(ref).strip()
    row = None
    if ref.isdigit() and int(ref) < 2**63:
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
