"""The message queue: every statement that moves a message from one state to another, and the
reads the dispatch engine plans with.

Each UPDATE here is guarded by the states its move may start from (``smsched.states``), so a
message can never be moved from a state the rules do not allow: a claim takes only
'scheduled' rows, a 'sending' mark only rows this run claimed, an outcome only rows this run
marked. Campaigns, opt-outs, the operator's retry and the engine all come here.

A claim is one ``UPDATE`` statement, so any number of processes can claim from one database
without ever sharing a message; the claimed rows are then read back by the claim's own lease. Order: priority, then the minute a message falls
due, then its position in its campaign, so that every campaign due in a minute gets its first
message out before any gets its second (one user's 100,000 do not hold back another's 100).
"""

from __future__ import annotations

import json
import time
from itertools import chain
from typing import Iterable, Mapping, NamedTuple

import sqlite_utils

from smsched.states import GAVE_UP, MessageState, S, sources
from smsched.states import Change


class QueuedMessage(NamedTuple):
    """A claimed message, as the engine carries it from the claim to its outcome."""

    id: int
    campaign_id: int
    user_id: int
    lead_id: int | None
    phone: str
    channel: str
    body: str
    params: str | None
    tz: str
    priority: int
    seq: int
    scheduled_at: int
    expires_at: int
    attempts: int
    provider: str = ""  # who sends it in this run (from its channel)


_FIELDS = ("id, campaign_id, user_id, lead_id, phone, channel, body, params, tz, priority, seq,"
           " scheduled_at, expires_at, attempts")


def _claim(db, picks: list[tuple[str, list]], order: str, limit: int, *, now: float, owner: str,
           lease_until: float, route: Mapping[str, str] | None) -> list[QueuedMessage]:
    """scheduled -> claimed for the first ``limit`` of ``picks`` (candidate queries, each ordered
    and limited) in ``order``: one statement, the backend's (see SqliteDialect / PgDialect)."""
    rows = db.dialect.claim(db, picks, order, limit, fields=_FIELDS, now=now, owner=owner, lease_until=lease_until,
                            claimable=_in(sources(S.CLAIMED, S.SCHEDULED)))
    if route is None:
        return [QueuedMessage(*row) for row in rows]
    return [QueuedMessage(*row, route.get(row[5], "")) for row in rows]


def _in(states: Iterable[MessageState]) -> str:
    return "(" + ", ".join(f"'{s}'" for s in states) + ")"


def _channel_filter(channels: list[str] | None) -> tuple[str, list]:
    if channels is None:
        return "", []
    return f" AND channel IN ({','.join('?' * len(channels)) or 'NULL'})", list(channels)


# ---- claiming --------------------------------------------------------------------------


def claim_due(db: sqlite_utils.Database, *, now: float, limit: int, owner: str, lease_until: float,
              channels: list[str] | None = None, route: Mapping[str, str] | None = None) -> list[QueuedMessage]:
    """Claim up to ``limit`` messages due at ``now`` (scheduled -> claimed), in dispatch order.

    ``lease_until`` (wall clock) must differ from this owner's earlier claims: it names the claim.
    ``route`` maps a channel to the provider that sends it in this run."""
    channel_sql, channel_params = _channel_filter(channels)
    picks = [  # one per priority, each a walk of the due index
        ("SELECT id, priority, scheduled_at / 60 AS minute, seq FROM messages"
         " WHERE state = 'scheduled' AND priority = ? AND scheduled_at / 60 <= ? AND scheduled_at <= ?"
         f"{channel_sql} ORDER BY scheduled_at / 60, seq LIMIT ?",
         [priority, int(now) // 60, int(now), *channel_params, limit])
        for priority in (0, 1, 2)]
    messages = _claim(db, picks, "priority, minute, seq", limit, now=now, owner=owner, lease_until=lease_until,
                      route=route)
    messages.sort(key=lambda m: (m.priority, m.scheduled_at // 60, m.seq, m.id))
    return messages


def claim_campaign(db: sqlite_utils.Database, campaign_id: int, *, now: float, limit: int, owner: str,
                   lease_until: float, route: Mapping[str, str] | None = None) -> list[QueuedMessage]:
    """Claim up to ``limit`` due messages of one campaign (the seed's cycle claims this way)."""
    pick = ("SELECT id, scheduled_at, seq FROM messages WHERE campaign_id = ? AND state = 'scheduled'"
            " AND scheduled_at <= ? ORDER BY scheduled_at, seq LIMIT ?", [campaign_id, int(now), limit])
    messages = _claim(db, [pick], "scheduled_at, seq", limit, now=now, owner=owner, lease_until=lease_until,
                      route=route)
    return sorted(messages, key=lambda m: (m.scheduled_at, m.seq))


def renew_leases(db: sqlite_utils.Database, *, owner: str, lease_until: float) -> int:
    """Keep this run's claims from being recovered by a concurrent run while it still holds them."""
    return db.conn.execute(
        f"UPDATE messages SET lease_until = ? WHERE state IN {_in((S.CLAIMED, S.SENDING))} AND claimed_by = ?",
        (lease_until, owner)).rowcount


# ---- recording moves -------------------------------------------------------------------

_APPLY_SET = (
    " UPDATE messages SET state = r.target, attempts = messages.attempts + r.attempted,"
    " sent_at = coalesce(r.sent_at, messages.sent_at), provider = coalesce(r.provider, messages.provider),"
    " provider_id = coalesce(r.provider_id, messages.provider_id),"
    f" error = CASE WHEN r.target = '{S.SENT}' THEN NULL ELSE coalesce(r.error, messages.error) END,"
    " scheduled_at = coalesce(r.scheduled_at, messages.scheduled_at),"
    # A claim's lease stays with it until it ends: it is what recovery looks for.
    f" lease_until = CASE WHEN r.target IN {_in((S.CLAIMED, S.SENDING))} THEN coalesce(r.lease_until, messages.lease_until) END,"
    f" sending_at = CASE WHEN r.target = '{S.SENDING}' THEN ? ELSE messages.sending_at END,"
    f" claimed_by = CASE WHEN r.target IN {_in((S.CLAIMED, S.SENDING))} THEN messages.claimed_by END,"
    " updated_at = ? FROM r WHERE messages.id = r.id AND messages.state = r.source AND messages.claimed_by = ?"
)
_ROW = "(?,?,?,?,?,?,?,?,?,?,?)"
# The first row names the types (PostgreSQL takes a VALUES list's types from them; SQLite only
# applies the affinity).
_TYPED_ROW = ("(CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION),"
              " CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION),"
              " CAST(? AS DOUBLE PRECISION))")


def _apply_sql(rows: int) -> str:
    # The moves travel as bound values, every field of a Change in order (hold_until is not
    # stored): nothing to encode, decode or rearrange.
    return ("WITH r(id, source, target, attempted, sent_at, provider, provider_id, error, scheduled_at, lease_until,"
            f" hold_until) AS (VALUES {','.join([_TYPED_ROW] + [_ROW] * (rows - 1))})" + _APPLY_SET)


def apply(db: sqlite_utils.Database, changes: list[Change], *, owner: str, now: float,
          wall: float | None = None) -> int:
    """Record a run's moves in one statement; returns how many moved.

    Each move applies only if the message is still in the state it starts from and still held
    by ``owner``: a 'sending' mark on a message another run recovered in the meantime does not
    take (when fewer moved than were asked, :func:`held` tells which), and the caller must not
    send it. ``wall`` is the machine's time of a 'sending' mark (reconciliation compares it with
    the provider's clock, never with a simulated one).
    """
    if not changes:
        return 0
    params = list(chain.from_iterable(changes))
    params += (wall if wall is not None else time.time(), now, owner)
    return db.dialect.changes(db.conn, _apply_sql(len(changes)), params)


def held(db: sqlite_utils.Database, ids: list[int], *, owner: str, state: MessageState) -> set[int]:
    """Which of these messages this owner holds in ``state`` (after an apply that moved fewer)."""
    in_ids, param = db.dialect.in_list("id", ids)
    return {r[0] for r in db.conn.execute(
        f"SELECT id FROM messages WHERE {in_ids} AND state = ? AND claimed_by = ?", (param, str(state), owner))}


def first_look(db: sqlite_utils.Database, *, before: float, run_id: int | None, providers: list[str]) -> dict:
    """What a run must see to before it claims, in one read: orphaned claims (lease ended before
    ``before``), runs still marked running (other than this one), 'unknown' messages of these
    providers."""
    orphaned, orphan_params = db.dialect.orphaned(before)
    orphans, running, unknown = db.conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM messages WHERE state IN {_in((S.CLAIMED, S.SENDING))} AND {orphaned}),"
        " EXISTS (SELECT 1 FROM runs WHERE status = 'running' AND id IS DISTINCT FROM ?),"
        f" EXISTS (SELECT 1 FROM messages WHERE state = 'unknown' AND provider IN ({','.join('?' * len(providers)) or 'NULL'}))",
        (*orphan_params, run_id, *providers)).fetchone()
    return {"orphans": bool(orphans), "running": bool(running), "unknown": bool(unknown)}


def recover(db: sqlite_utils.Database, *, before: float, now: float) -> dict:
    """Put back what dead runs left: claimed -> scheduled (never sent), sending -> unknown (or
    sent, when a delivery receipt already named the provider's id for it).

    ``before`` is an instant on the lease clock: claims whose lease ended earlier are orphans
    (and, on a shared database, claims whose dispatcher is gone: see the dialect).
    """
    orphaned, params = db.dialect.orphaned(before)
    back = db.conn.execute(
        f"UPDATE messages SET state = '{S.SCHEDULED}', lease_until = NULL, claimed_by = NULL, updated_at = ?"
        f" WHERE state IN {_in(sources(S.SCHEDULED, S.CLAIMED))} AND {orphaned}", (now, *params)).rowcount
    confirmed = db.conn.execute(
        f"UPDATE messages SET state = '{S.SENT}', lease_until = NULL, claimed_by = NULL, attempts = attempts + 1,"
        " sent_at = coalesce(sent_at, delivery_at, sending_at), error = NULL, updated_at = ?"
        f" WHERE state IN {_in(sources(S.SENT, S.SENDING))} AND {orphaned} AND provider_id IS NOT NULL",
        (now, *params)).rowcount
    lost = db.conn.execute(
        f"UPDATE messages SET state = '{S.UNKNOWN}', lease_until = NULL, claimed_by = NULL, attempts = attempts + 1,"
        " error = 'interrupted while sending: the provider may have it (smsched reconcile, or smsched retry --unknown to resend)',"
        f" updated_at = ? WHERE state IN {_in(sources(S.UNKNOWN, S.SENDING))} AND {orphaned}",
        (now, *params)).rowcount
    return {"claimed_to_scheduled": back, "sending_to_unknown": lost, "sending_to_sent": confirmed}


# ---- resolving 'unknown' (reconciliation, receipts) ---------------------------------------


def unknown_messages(db: sqlite_utils.Database, provider: str, *, sent_before: float) -> list[dict]:
    """A provider's 'unknown' messages whose request left before ``sent_before`` (wall clock)."""
    rows = db.conn.execute(
        "SELECT m.id, m.phone, m.channel, m.body, m.params, m.campaign_id, m.lead_id, m.scheduled_at,"
        " coalesce(m.sending_at, m.updated_at), c.template, u.sender"
        " FROM messages m JOIN campaigns c ON c.id = m.campaign_id JOIN users u ON u.id = m.user_id"
        " WHERE m.state = 'unknown' AND m.provider = ? AND coalesce(m.sending_at, m.updated_at) < ?"
        " ORDER BY coalesce(m.sending_at, m.updated_at), m.id", (provider, sent_before)).fetchall()
    keys = ("id", "phone", "channel", "body", "params", "campaign_id", "lead_id", "scheduled_at", "sending_at",
            "template", "sender")
    return [dict(zip(keys, r)) for r in rows]


def known_provider_ids(db: sqlite_utils.Database, provider_ids: Iterable[str]) -> set[str]:
    """Which of these provider message ids already belong to one of our messages."""
    in_ids, param = db.dialect.in_list("provider_id", sorted(set(provider_ids)))
    return {r[0] for r in db.conn.execute(f"SELECT provider_id FROM messages WHERE {in_ids}", (param,))}


def resolve_unknown(db: sqlite_utils.Database, *, found: list[tuple[int, str, float]], absent: list[int],
                    unresolved: list[tuple[int, str]], now: float) -> tuple[int, int]:
    """What reconciliation learnt: found -> 'sent' with the provider's id; provably absent ->
    'scheduled', due now (sent once by the next dispatch); unresolved keep 'unknown' with the reason."""
    sent = sum(db.conn.execute(
        f"UPDATE messages SET state = '{S.SENT}', provider_id = ?, sent_at = ?, error = NULL, updated_at = ?"
        f" WHERE id = ? AND state = '{S.UNKNOWN}'", (provider_id, sent_at, now, message_id)).rowcount
        for message_id, provider_id, sent_at in found)
    requeued = 0
    if absent:
        in_ids, param = db.dialect.in_list("id", absent)
        requeued = db.conn.execute(
            f"UPDATE messages SET state = '{S.SCHEDULED}', scheduled_at = ?, lease_until = NULL, claimed_by = NULL,"
            " error = 'reconciled: the provider never received it; sent again', updated_at = ?"
            f" WHERE {in_ids} AND state = '{S.UNKNOWN}'", (int(now), now, param)).rowcount
    for message_id, reason in unresolved:
        db.conn.execute(f"UPDATE messages SET error = ?, updated_at = ? WHERE id = ? AND state = '{S.UNKNOWN}'",
                        (reason, now, message_id))
    return sent, requeued


def provider_has(db: sqlite_utils.Database, message_id: int, provider_id: str, *, at: float, now: float) -> str | None:
    """A receipt proves the provider has this message. Returns the state it is in afterwards.

    'unknown', 'scheduled' (a retry or a resend waiting) or 'claimed' become 'sent' — it must
    not go out again; a 'sending' one (a run is waiting for the answer, or died) keeps its state
    and learns the provider's id, which recovery then trusts.
    """
    moved = db.conn.execute(
        f"UPDATE messages SET state = '{S.SENT}', provider_id = coalesce(provider_id, ?), sent_at = coalesce(sent_at, ?),"
        f" error = NULL, lease_until = NULL, claimed_by = NULL, updated_at = ?"
        f" WHERE id = ? AND state IN {_in(sources(S.SENT, S.UNKNOWN, S.SCHEDULED, S.CLAIMED))} RETURNING state",
        (provider_id, at, now, message_id)).fetchone()
    if moved:
        return moved[0]
    row = db.conn.execute(
        "UPDATE messages SET provider_id = coalesce(provider_id, ?) WHERE id = ? RETURNING state",
        (provider_id, message_id)).fetchone()
    return row[0] if row else None


# ---- moves made by people (campaigns, opt-outs, retry) ------------------------------------


def move_campaign(db: sqlite_utils.Database, campaign_id: int, target: MessageState,
                  from_states: tuple[MessageState, ...], *, now: float) -> int:
    """Pause, resume or cancel a campaign's waiting messages."""
    return db.conn.execute(
        f"UPDATE messages SET state = ?, updated_at = ? WHERE campaign_id = ? AND state IN {_in(sources(target, *from_states))}",
        (str(target), now, campaign_id)).rowcount


def suppress_numbers(db: sqlite_utils.Database, numbers: list[str], scope: int, *, now: float) -> int:
    """The numbers' messages not yet sent become 'suppressed' (scope 0: every user's)."""
    if not numbers:
        return 0
    in_phones, param = db.dialect.in_list("phone", sorted(set(numbers)))
    sql = (
        f"UPDATE messages SET state = '{S.SUPPRESSED}', error = 'opted out', updated_at = ?"
        f" WHERE {in_phones} AND state IN {_in(sources(S.SUPPRESSED, S.SCHEDULED, S.PAUSED))}"
    )
    params: list = [now, param]
    if scope:
        sql += " AND user_id = ?"
        params.append(scope)
    return db.conn.execute(sql, params).rowcount


# A failure after retries says so (decide.py); any other failure is the provider's final word.
_PERMANENT = f"(state = '{S.FAILED}' AND coalesce(error, '') NOT LIKE '{GAVE_UP}%')"


def permanent_failures(db: sqlite_utils.Database, *, campaign: int | None = None) -> int:
    sql, params = f"SELECT count(*) FROM messages WHERE {_PERMANENT}", []
    if campaign is not None:
        sql += " AND campaign_id = ?"
        params.append(campaign)
    return db.conn.execute(sql, params).fetchone()[0]


def requeue(db: sqlite_utils.Database, from_states: list[MessageState], *, at: int, valid_for: int,
            campaign: int | None = None, permanent_too: bool = False) -> int:
    """Unknown or failed messages go out again at ``at`` (the operator's word): attempts start over.
    Failures the provider gave as final (invalid number, landline, ...) only with ``permanent_too``."""
    sql = (
        f"UPDATE messages SET state = '{S.SCHEDULED}', scheduled_at = ?,"
        f" expires_at = {db.dialect.greatest('expires_at', 'CAST(? AS BIGINT) + CAST(? AS BIGINT)')},"
        f" attempts = 0, lease_until = NULL, claimed_by = NULL, provider_id = NULL, delivery = NULL,"
        f" delivery_at = NULL, delivered_at = NULL, delivery_error = NULL, updated_at = ?"
        f" WHERE state IN {_in(sources(S.SCHEDULED, *from_states))}"
    )
    params: list = [at, at, valid_for, at]
    if campaign is not None:
        sql += " AND campaign_id = ?"
        params.append(campaign)
    if not permanent_too:
        sql += f" AND NOT {_PERMANENT}"
    return db.conn.execute(sql, params).rowcount


# ---- reads the engine plans with ---------------------------------------------------------


def next_due(db: sqlite_utils.Database, channels: list[str] | None = None) -> float | None:
    """When the next scheduled message falls due (an index look-up, whatever the table's size)."""
    channel_sql, channel_params = _channel_filter(channels)
    row = db.conn.execute(
        f"SELECT scheduled_at FROM messages WHERE state = 'scheduled'{channel_sql} ORDER BY scheduled_at LIMIT 1",
        channel_params).fetchone()
    return row[0] if row else None


def due_count(db: sqlite_utils.Database, now: float, channels: list[str] | None = None) -> int:
    channel_sql, channel_params = _channel_filter(channels)
    return db.conn.execute(
        f"SELECT count(*) FROM messages WHERE state = 'scheduled' AND scheduled_at <= ?{channel_sql}",
        [int(now), *channel_params]).fetchone()[0]


def due_campaigns(db: sqlite_utils.Database, now: float, limit: int | None,
                  channels: list[str] | None = None) -> list[int]:
    channel_sql, channel_params = _channel_filter(channels)
    sql = ("SELECT campaign_id FROM messages WHERE state = 'scheduled' AND scheduled_at <= ?"
           f"{channel_sql} GROUP BY campaign_id ORDER BY min(priority), min(scheduled_at), campaign_id")
    params: list = [int(now), *channel_params]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [r[0] for r in db.conn.execute(sql, params)]


def campaigns_info(db: sqlite_utils.Database, ids: Iterable[int]) -> dict[int, dict]:
    """What sending needs of each campaign: status, window, template, user and sender."""
    in_ids, param = db.dialect.in_list("c.id", sorted(set(ids)))
    return {
        row[0]: {"name": row[1], "status": row[2], "quiet_hours": row[3], "template": row[4], "lang": row[5],
                 "user": row[6], "sender": row[7], "user_id": row[8]}
        for row in db.conn.execute(
            "SELECT c.id, c.name, c.status, c.quiet_hours, c.template, c.lang, u.name, u.sender, c.user_id"
            f" FROM campaigns c JOIN users u ON u.id = c.user_id WHERE {in_ids}", (param,))
    }


def optout_scopes(db: sqlite_utils.Database, phones: Iterable[str]) -> dict[str, set[int]]:
    """For each number on the do-not-contact list: the scopes it is opted out of (0: everyone)."""
    scopes: dict[str, set[int]] = {}
    in_phones, param = db.dialect.in_list("phone", sorted(set(phones)))
    for phone, scope in db.conn.execute(f"SELECT phone, scope FROM optouts WHERE {in_phones}", (param,)):
        scopes.setdefault(phone, set()).add(scope)
    return scopes


def lead_fields(db: sqlite_utils.Database, lead_ids: Iterable[int]) -> dict[int, dict]:
    ids = sorted({i for i in lead_ids if i})
    if not ids:
        return {}
    in_ids, param = db.dialect.in_list("id", ids)
    return {row[0]: json.loads(row[1]) for row in db.conn.execute(f"SELECT id, fields FROM leads WHERE {in_ids}", (param,))}


def preview_due(db: sqlite_utils.Database, *, now: float, limit: int = 5) -> tuple[list[tuple], list[tuple]]:
    """Counts per campaign and the first messages a dispatch would send at ``now``. Reads only."""
    per_campaign = db.conn.execute(
        "SELECT m.campaign_id, c.name, u.name, count(*), min(m.scheduled_at) FROM messages m"
        " JOIN campaigns c ON c.id = m.campaign_id JOIN users u ON u.id = m.user_id"
        " WHERE m.state = 'scheduled' AND m.scheduled_at <= ? GROUP BY m.campaign_id, c.name, u.name"
        " ORDER BY min(m.priority), min(m.scheduled_at)", (int(now),)).fetchall()
    first = db.conn.execute(
        "SELECT id, campaign_id, phone, channel, body, scheduled_at FROM messages WHERE state = 'scheduled'"
        " AND scheduled_at <= ? ORDER BY priority, scheduled_at / 60, seq LIMIT ?", (int(now), limit)).fetchall()
    return per_campaign, first
