"""The do-not-contact list. Each entry records when, why and from where, so consent is demonstrable.

An opt-out without a user covers every user (scope 0); with one, only that user's campaigns.
Adding one also suppresses the number's messages that are still waiting to be sent.
"""

from __future__ import annotations

import json

import sqlite_utils

from smsched import phones, queue
from smsched.csvfiles import normalise_key, open_csv
from smsched.errors import ImportFailed, UsageError
from smsched.leads import PHONE_HEADERS, _match_header
from smsched.storage import now_s, transaction


def add(
    db: sqlite_utils.Database,
    numbers: list[str],
    *,
    user: dict | None = None,
    reason: str | None = None,
    source: str = "cli",
    region: str = "BR",
    now: float | None = None,
) -> dict:
    """Opt numbers out; returns counts of added, already present, and messages suppressed."""
    region = user["region"] if user else region
    normalized = [phones.normalize_or_fail(n, region) for n in numbers]
    if not normalized:
        raise UsageError("give at least one phone number")
    with transaction(db):
        return add_normalized(db, normalized, user["id"] if user else 0, reason, source, now)


def add_normalized(db, numbers: list[str], scope: int, reason, source, now) -> dict:
    """Numbers already in E.164 join the list (scope 0: every user); their waiting messages are suppressed."""
    stamp = int(now or now_s())
    conn = db.conn
    added = conn.executemany(  # rows inserted (DB-API: summed over the rows)
        "INSERT INTO optouts (phone, scope, reason, source, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (phone, scope) DO NOTHING",
        [(n, scope, reason, source, stamp) for n in dict.fromkeys(numbers)],
    ).rowcount
    suppressed = queue.suppress_numbers(db, numbers, scope, now=stamp)
    return {"added": added, "already": len(set(numbers)) - added, "suppressed_messages": suppressed}


def import_file(
    db: sqlite_utils.Database,
    path: str,
    *,
    user: dict | None = None,
    reason: str | None = None,
    now: float | None = None,
) -> dict:
    """A CSV with a phone column (or a plain list, one number per line)."""
    region = user["region"] if user else "BR"
    source = open_csv(path)
    numbers, invalid = [], []
    try:
        rows = source.rows()
        first = next(rows, None)
        if first is None:
            raise ImportFailed(f"{source.name} has no rows")
        keys = [normalise_key(h) for h in first[1]]
        column = _match_header(keys, PHONE_HEADERS)
        data = rows if column is not None else _chain([first], rows)
        column = column or 0
        for line, record in data:
            if not record or column >= len(record) or not record[column].strip():
                continue
            result = phones.normalize(record[column], region)
            if result.phone is None:
                invalid.append({"line": line, "value": record[column], "reason": result.reason})
            else:
                numbers.append(result.phone)
    finally:
        source.binary.close()
    if not numbers:
        raise ImportFailed(f"{source.name}: no valid phone number found")
    with transaction(db):
        counts = add_normalized(db, numbers, user["id"] if user else 0, reason, f"import:{source.name}", now)
    counts["invalid"] = invalid
    return counts


def _chain(first, rest):
    yield from first
    yield from rest


def remove(db: sqlite_utils.Database, numbers: list[str], *, user: dict | None = None) -> int:
    region = user["region"] if user else "BR"
    normalized = [phones.normalize_or_fail(n, region) for n in numbers]
    scope = user["id"] if user else 0
    with transaction(db):
        in_phones, param = db.dialect.in_list("phone", normalized)
        return db.conn.execute(f"DELETE FROM optouts WHERE scope = ? AND {in_phones}", (scope, param)).rowcount


def list_all(db: sqlite_utils.Database, *, user: dict | None = None) -> list[dict]:
    sql = (
        "SELECT o.phone, o.scope, u.name, o.reason, o.source, o.created_at FROM optouts o"
        " LEFT JOIN users u ON u.id = o.scope"
    )
    params: list = []
    if user:
        sql += " WHERE o.scope IN (0, ?)"
        params.append(user["id"])
    sql += " ORDER BY o.created_at, o.id"
    return [
        {"phone": r[0], "user": r[2] if r[1] else None, "reason": r[3], "source": r[4], "created_at": r[5]}
        for r in db.conn.execute(sql, params)
    ]


def opted_out(db: sqlite_utils.Database, user_id: int) -> set[str]:
    """Every number this user may not contact: global opt-outs and the user's own."""
    return {r[0] for r in db.conn.execute("SELECT phone FROM optouts WHERE scope IN (0, ?)", (user_id,))}
