"""Building databases full of due messages quickly, through the library's public functions."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from smsched import campaigns, leads, storage, users


def phones(count: int, start: int = 0) -> list[str]:
    return [f"+55119{(start + i) // 10000 % 10000:04d}{(start + i) % 10000:04d}" for i in range(count)]


def seed_users(db_path: Path, tmp_path: Path, sizes: list[int], *, at: str, now: float, prefix: str = "user",
               priority: str = "normal", quiet_hours: str = "off", start: int = 0, **spec) -> list[int]:
    """One user per size, each with that many leads and one campaign at `at`; returns campaign ids."""
    db = storage.connect(db_path)
    ids, offset = [], start
    for index, size in enumerate(sizes):
        owner = users.add(db, f"{prefix}{index}", quiet_hours=quiet_hours, now=now)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["nome", "telefone"])
        writer.writerows([f"Lead {i}", phone] for i, phone in enumerate(phones(size, offset)))
        path = tmp_path / f"{prefix}{index}.csv"
        path.write_text(buffer.getvalue())
        leads.import_leads(db, owner, str(path), now=now)
        offset += size
        report = campaigns.create(db, owner, campaigns.CampaignSpec(
            at=at, message=f"Oi {{name}} from {prefix}{index}", priority=priority, **spec), now=now)
        ids.append(report["id"])
    db.conn.close()
    return ids


def states(db_path: Path) -> dict[str, int]:
    db = storage.connect(db_path)
    try:
        return dict(db.conn.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())
    finally:
        db.conn.close()


def rows(db_path: Path, sql: str, params=()) -> list[tuple]:
    db = storage.connect(db_path)
    try:
        return db.conn.execute(sql, params).fetchall()
    finally:
        db.conn.close()


def fingerprint(db_path) -> str:
    """What a database holds, to compare before and after: a SQLite file's bytes; every row of
    every table of a PostgreSQL one."""
    import hashlib

    if not str(db_path).startswith("postgresql://"):
        return hashlib.sha256(Path(db_path).read_bytes()).hexdigest()
    db = storage.connect(db_path)
    try:
        digest = hashlib.sha256()
        for table in ("users", "leads", "optouts", "campaigns", "messages", "runs", "receipts", "smsched_schema"):
            for row in db.conn.execute(f"SELECT * FROM {table} ORDER BY 1"):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        db.conn.close()
