"""What differs between the storage backends, in one small interface.

smsched keeps its data in SQLite (a file: the default) or PostgreSQL (a server shared by many
hosts). The rest of the code writes portable SQL — ``?`` placeholders, ``RETURNING``,
``UPDATE ... FROM``, ``INSERT ... ON CONFLICT``, ``IS DISTINCT FROM`` — on ``db.conn`` and asks
the database's dialect (``db.dialect``) for the few things that are spelt or done differently:

- ``transaction(db)``: one write transaction that holds the write lock from its start
  (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock taken by the transaction);
- ``in_list(column, values)``: ``column IN (the values)`` with the values as one parameter;
- ``greatest(a, b)``, ``json_merge(a, b)``: scalar functions with other names;
- ``changes(conn, sql, params)``: run a statement, return how many rows it changed;
- ``claim(...)``: the claim statement (SQLite: one UPDATE, read back by its lease; PostgreSQL:
  ``FOR UPDATE SKIP LOCKED`` with ``RETURNING``);
- ``run_lock(db)``: one dispatcher at a time, or a shared one (a file lock; an advisory lock);
- ``live_dispatchers(db)``: how many dispatchers share the work right now (a provider's rate is
  divided among them);
- ``wall(db)``: the clock leases are read on (the machine's; the database server's).

One module per backend implements it: :mod:`smsched.storage` (SQLite) and :mod:`smsched.pg`.
"""

from __future__ import annotations

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target) -> bool:
    """Does this --db / SMSCHED_DB name a PostgreSQL database?"""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def shown(target) -> str:
    """A database's name as people may see it: a URL's secrets hidden (password, query values)."""
    text = str(target)
    if is_postgres(text):
        from smsched import redact

        return redact.url(text)
    return text
