"""Leads: importing a user's phone list from CSV, and reading it back.

An import streams the file into a temporary staging table (merging duplicates as it goes,
later fields winning) without touching the user's leads, then applies the staged rows in one
short transaction. A crash or Ctrl-C before that commit leaves the database as it was, and
other writers (a running dispatch) are blocked only for the final step.
"""

from __future__ import annotations

import csv
import json
import json.encoder
import multiprocessing
import os
import signal
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

import sqlite_utils

from smsched import phones
from smsched.csvfiles import CsvSource, normalise_key, open_csv
from smsched.errors import ImportFailed
from smsched.outfiles import AtomicFile, check_destination, spreadsheet_safe
from smsched.storage import now_s, transaction

PHONE_HEADERS = ("phone", "telefone", "celular", "whatsapp", "mobile", "fone", "numero", "number", "tel", "cel")
NAME_HEADERS = ("name", "nome")
USER_HEADERS = ("user", "usuario", "account", "conta", "tenant")
_CHUNK_ROWS = 5000
# Below this size the process pool costs more than it saves.
_PARALLEL_MIN_BYTES = 4 << 20

Progress = Callable[[int, int], None]


@dataclass
class ImportReport:
    file: str
    encoding: str
    delimiter: str
    phone_column: str
    name_column: str | None
    fields: list[str]
    read: int = 0
    blank: int = 0
    invalid: int = 0
    duplicates: int = 0
    imported: int = 0
    updated: int = 0
    unknown_user: int = 0  # import-many only: rows naming no known user
    landlines: int = 0  # valid numbers typed as fixed lines (an SMS campaign leaves them out)
    users: int = 0  # how many users' leads the file held
    rejects_file: str | None = None
    invalid_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["delimiter"] = {"\t": "tab"}.get(self.delimiter, self.delimiter)
        return data


def _match_header(keys: list[str], wanted: Iterable[str]) -> int | None:
    wanted = tuple(wanted)
    for index, key in enumerate(keys):
        if key in wanted:
            return index
    for index, key in enumerate(keys):  # 'telefone_celular', 'mobile_phone', 'nome_completo'
        if any(token in wanted for token in key.split("_")):
            return index
    return None


def _pick_column(headers: list[str], keys: list[str], given: str, what: str, source: str) -> int:
    for index, header in enumerate(headers):
        if header.strip() == given.strip():
            return index
    wanted = normalise_key(given)
    for index, key in enumerate(keys):
        if key == wanted:
            return index
    raise ImportFailed(
        f"{source}: no {what} column {given!r}; the headers are: {', '.join(h for h in headers)}"
    )


def _field_keys(keys: list[str], skip: set[int]) -> list[str | None]:
    """Unique lead-field keys for the non-phone, non-name columns ('cidade', 'cidade_2')."""
    result: list[str | None] = []
    seen: set[str] = set()
    for index, key in enumerate(keys):
        if index in skip:
            result.append(None)
            continue
        base = key or f"column_{index + 1}"
        candidate, n = base, 2
        while candidate in seen or candidate in ("name", "phone"):
            candidate, n = f"{base}_{n}", n + 1
        seen.add(candidate)
        result.append(candidate)
    return result


def _normalize_chunk(pairs: list[tuple[str, str]]) -> list[tuple]:
    # Plain tuples: they cross the process boundary several times cheaper than named ones.
    return [tuple(phones.normalize(raw, region)) for raw, region in pairs]


def _worker_ignores_ctrl_c() -> None:
    # Ctrl-C reaches the whole process group: only the main process stops the import (and
    # terminates the workers); a worker dying mid-chunk would leave the main one waiting forever.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Normalizer:
    """Normalises chunks of numbers in order, on every core when the file is large."""

    def __init__(self, parallel: bool):
        self.pool = None
        if parallel and (os.cpu_count() or 1) > 1:
            self.pool = multiprocessing.get_context("fork").Pool(os.cpu_count(), initializer=_worker_ignores_ctrl_c)
        self.pending: deque = deque()

    def submit(self, chunk: list) -> None:
        pairs = [(row[1], row[4]) for row in chunk]
        if self.pool is None:
            self.pending.append((chunk, _normalize_chunk(pairs)))
        else:
            self.pending.append((chunk, self.pool.apply_async(_normalize_chunk, (pairs,))))

    def ready(self, backlog: int) -> Iterable[tuple[list, list[tuple]]]:
        while len(self.pending) > backlog:
            chunk, result = self.pending.popleft()
            yield chunk, (result if isinstance(result, list) else result.get())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def import_leads(
    db: sqlite_utils.Database,
    user: dict,
    path: str,
    *,
    phone_column: str | None = None,
    name_column: str | None = None,
    region: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    rejects: str | None = None,
    progress: Progress | None = None,
    now: float | None = None,
) -> ImportReport:
    """Import one user's leads."""
    region = phones.check_region(region or user["region"])
    if rejects:
        check_destination(rejects, what="--rejects", inputs=(path,))
    source = open_csv(path, encoding=encoding, delimiter=delimiter)
    owners = lambda record: (user["id"], region)  # noqa: E731 - every row is this user's
    try:
        return _import(db, source, owners, None, phone_column, name_column, rejects, progress, now)
    finally:
        source.binary.close()


def import_leads_many(
    db: sqlite_utils.Database,
    path: str,
    *,
    user_column: str | None = None,
    phone_column: str | None = None,
    name_column: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    rejects: str | None = None,
    progress: Progress | None = None,
    now: float | None = None,
) -> ImportReport:
    """Import leads for many users from one file: a column names each row's user (name or id)."""
    if rejects:
        check_destination(rejects, what="--rejects", inputs=(path,))
    source = open_csv(path, encoding=encoding, delimiter=delimiter)
    known: dict[str, tuple[int, str] | None] = {}
    by_name = {name: (uid, region) for uid, name, region in db.conn.execute("SELECT id, name, region FROM users")}
    by_id = {str(value[0]): value for value in by_name.values()}

    def owners(ref: str):
        ref = ref.strip()
        if ref not in known:
            known[ref] = by_name.get(ref) or by_id.get(ref)
        return known[ref]

    try:
        return _import(db, source, owners, user_column, phone_column, name_column, rejects, progress, now,
                       multi_user=True)
    finally:
        source.binary.close()


def _import(db, source: CsvSource, owners, user_column, phone_column, name_column, rejects, progress, now,
            multi_user: bool = False):
    rows = source.rows()
    try:
        _, headers = next(rows)
    except StopIteration:
        raise ImportFailed(f"{source.name} has no header line") from None
    headers = [h.strip() for h in headers]
    if not any(headers):
        raise ImportFailed(f"{source.name}: the first line is empty; it must name the columns")
    keys = [normalise_key(h) for h in headers]
    user_index = None
    if user_column:
        user_index = _pick_column(headers, keys, user_column, "user", source.name)
    elif multi_user:
        user_index = _match_header(keys, USER_HEADERS)
        if user_index is None:
            raise ImportFailed(
                f"{source.name}: no user column among the headers {', '.join(repr(h) for h in headers)}; "
                "name it with --user-column"
            )
    if phone_column:
        phone_index = _pick_column(headers, keys, phone_column, "phone", source.name)
    else:
        phone_index = _match_header([k if i != user_index else "" for i, k in enumerate(keys)], PHONE_HEADERS)
        if phone_index is None:
            raise ImportFailed(
                f"{source.name}: no phone column among the headers "
                f"{', '.join(repr(h) for h in headers)}; name it with --phone-column"
            )
    if name_column:
        name_index = _pick_column(headers, keys, name_column, "name", source.name)
    else:
        name_index = _match_header(
            [k if i not in (phone_index, user_index) else "" for i, k in enumerate(keys)], NAME_HEADERS
        )
    skip = {phone_index} | {i for i in (name_index, user_index) if i is not None}
    field_keys = _field_keys(keys, skip)
    report = ImportReport(
        file=source.name,
        encoding=source.encoding,
        delimiter=source.delimiter,
        phone_column=headers[phone_index],
        name_column=headers[name_index] if name_index is not None else None,
        fields=[k for k in field_keys if k],
    )
    stamp = int(now or now_s())
    conn = db.conn
    conn.execute("DROP TABLE IF EXISTS import_stage")
    conn.execute(
        "CREATE TEMP TABLE import_stage (user_id INTEGER NOT NULL, phone TEXT NOT NULL, name TEXT,"
        " fields TEXT NOT NULL, tz TEXT, line_type TEXT, PRIMARY KEY (user_id, phone))"
    )
    fields_json = _fields_encoder(field_keys)
    rejects_out = _Rejects(rejects, headers) if rejects else None
    normalizer = _Normalizer(parallel=source.size >= _PARALLEL_MIN_BYTES)
    valid = 0
    try:
        conn.execute("BEGIN")  # the temp table only: the main database is not locked yet
        chunk: list = []

        def reject(line, reason, record) -> None:
            if rejects_out:
                rejects_out.write(line, reason, record)

        def apply(ready) -> None:
            nonlocal valid
            batch = []
            for chunk_rows, results in ready:
                for (line, raw, record, user_id, _region), (phone, tz, reason, line_type) in zip(chunk_rows, results):
                    if phone is None:
                        kind = "blank" if reason == "blank" else "invalid"
                        setattr(report, kind, getattr(report, kind) + 1)
                        if kind == "invalid":
                            report.invalid_reasons[reason] = report.invalid_reasons.get(reason, 0) + 1
                        reject(line, reason if kind == "invalid" else "no phone number", record)
                        continue
                    valid += 1
                    name = record[name_index].strip() if name_index is not None and name_index < len(record) else ""
                    batch.append((user_id, phone, name or None, fields_json(record), tz, line_type))
            if batch:
                conn.executemany(
                    "INSERT INTO import_stage (user_id, phone, name, fields, tz, line_type) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (user_id, phone) DO UPDATE SET"
                    " name = coalesce(excluded.name, import_stage.name),"
                    f" fields = {db.dialect.json_merge('import_stage.fields', 'excluded.fields')}",
                    batch,
                )

        for line, record in rows:
            if not record:
                continue  # an empty line is not a row; ';;;' is, and counts as blank
            report.read += 1
            owner = owners(record[user_index] if user_index is not None and user_index < len(record) else "")
            if owner is None:
                report.unknown_user += 1
                reject(line, "unknown user", record)
                continue
            raw = record[phone_index] if phone_index < len(record) else ""
            chunk.append((line, raw, record, owner[0], owner[1]))
            if len(chunk) >= _CHUNK_ROWS:
                normalizer.submit(chunk)
                chunk = []
                apply(normalizer.ready(backlog=4))
                if progress:
                    progress(source.position(), source.size)
        if chunk:
            normalizer.submit(chunk)
        apply(normalizer.ready(backlog=0))
        if progress:
            progress(source.size, source.size)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if rejects_out:
            rejects_out.discard()
        conn.execute("DROP TABLE IF EXISTS import_stage")
        raise
    finally:
        normalizer.close()

    distinct = conn.execute("SELECT count(*) FROM import_stage").fetchone()[0]
    report.duplicates = valid - distinct
    report.users = conn.execute("SELECT count(DISTINCT user_id) FROM import_stage").fetchone()[0]
    report.landlines = conn.execute("SELECT count(*) FROM import_stage WHERE line_type = ?",
                                    (phones.LANDLINE,)).fetchone()[0]
    try:
        merged = db.dialect.json_merge("leads.fields", "excluded.fields")
        with transaction(db):
            report.updated = conn.execute(
                "SELECT count(*) FROM import_stage s JOIN leads l"
                " ON l.user_id = s.user_id AND l.phone = s.phone"
            ).fetchone()[0]
            report.imported = distinct - report.updated
            conn.execute(
                "INSERT INTO leads (user_id, phone, name, fields, tz, line_type, created_at, updated_at)"
                " SELECT user_id, phone, name, fields, tz, line_type, ?, ? FROM import_stage WHERE true"
                " ON CONFLICT (user_id, phone) DO UPDATE SET"
                "  name = coalesce(excluded.name, leads.name),"
                f"  fields = {merged},"
                "  tz = excluded.tz,"
                "  line_type = excluded.line_type,"
                "  updated_at = excluded.updated_at"
                " WHERE coalesce(excluded.name, leads.name) IS DISTINCT FROM leads.name"
                f"  OR {db.dialect.json_differs(merged, 'leads.fields')}"
                "  OR excluded.tz IS DISTINCT FROM leads.tz OR excluded.line_type IS DISTINCT FROM leads.line_type",
                (stamp, stamp),
            )
            if rejects_out:  # in place before the commit: if it cannot be, nothing is imported
                report.rejects_file = rejects_out.keep()
    except BaseException:
        if rejects_out:
            rejects_out.discard()
        raise
    finally:
        conn.execute("DROP TABLE IF EXISTS import_stage")
    return report


def _fields_encoder(field_keys: list[str | None]):
    """A row's non-empty fields as a JSON object, the keys encoded once per file (a million rows
    through json.dumps cost seconds)."""
    keyed = [(i, json.dumps(key, ensure_ascii=False) + ":") for i, key in enumerate(field_keys) if key]
    quote = json.encoder.encode_basestring  # the C encoder json.dumps itself uses

    def encode(record: list[str]) -> str:
        parts = []
        for index, key in keyed:
            if index < len(record):
                value = record[index].strip()
                if value:
                    parts.append(key + quote(value))
        return "{" + ",".join(parts) + "}"

    return encode


class _Rejects:
    """The rejected rows as CSV, safe to open in a spreadsheet; kept only if the import is."""

    def __init__(self, path: str, headers: list[str]):
        self.out = AtomicFile(path, newline="")
        self.writer = csv.writer(self.out.file)
        self.writer.writerow(["line", "reason", *map(spreadsheet_safe, headers)])

    def write(self, line: int, reason: str, record: list[str]) -> None:
        self.writer.writerow([line, spreadsheet_safe(reason), *map(spreadsheet_safe, record)])

    def keep(self) -> str:
        return self.out.keep()

    def discard(self) -> None:
        self.out.discard()


def list_leads(db: sqlite_utils.Database, user: dict, limit: int | None = None) -> list[dict]:
    sql = "SELECT id, phone, name, fields, tz, created_at, updated_at, line_type FROM leads WHERE user_id = ? ORDER BY id"
    params: list = [user["id"]]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [
        {"id": r[0], "phone": r[1], "name": r[2], "fields": json.loads(r[3]), "tz": r[4],
         "created_at": r[5], "updated_at": r[6], "line_type": r[7]}
        for r in db.conn.execute(sql, params)
    ]
