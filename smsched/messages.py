"""Who got what: the per-message audit trail, and requeueing on the operator's word."""

from __future__ import annotations

import sqlite_utils

from smsched import clock, queue
from smsched.errors import UsageError
from smsched.states import ALL, MessageState
from smsched.storage import now_s, transaction


def list_messages(
    db: sqlite_utils.Database,
    *,
    campaign: int | None = None,
    user: dict | None = None,
    state: str | None = None,
    phone: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    where, params = [], []
    if campaign is not None:
        where.append("m.campaign_id = ?")
        params.append(campaign)
    if user is not None:
        where.append("m.user_id = ?")
        params.append(user["id"])
    if state is not None:
        if state not in ALL:
            raise UsageError(f"unknown state {state!r}: use one of {', '.join(ALL)}")
        where.append("m.state = ?")
        params.append(state)
    if phone is not None:
        where.append("m.phone = ?")
        params.append(phone)
    sql = (
        "SELECT m.id, m.campaign_id, u.name, m.phone, m.channel, m.state, m.scheduled_at, m.sent_at,"
        " m.attempts, m.provider, m.provider_id, m.error, m.body, m.delivery, m.delivered_at, m.delivery_error"
        " FROM messages m JOIN users u ON u.id = m.user_id"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY m.scheduled_at, m.id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [
        {
            "id": r[0], "campaign_id": r[1], "user": r[2], "phone": r[3], "channel": r[4], "state": r[5],
            "scheduled_at": clock.iso_utc(r[6]), "sent_at": clock.iso_utc(r[7]), "attempts": r[8],
            "provider": r[9], "provider_id": r[10], "error": r[11], "body": r[12],
            "delivery": r[13], "delivered_at": clock.iso_utc(r[14]), "delivery_error": r[15],
        }
        for r in db.conn.execute(sql, params)
    ]


# A requeued message may still go out this long after it is requeued.
REQUEUE_VALID_FOR_S = 6 * 3600


def retry(
    db: sqlite_utils.Database,
    *,
    states: list[str],
    campaign: int | None = None,
    now: float | None = None,
    include_permanent: bool = False,
) -> dict:
    """Requeue unknown and/or failed messages to go out now (opt-outs are checked again at send).

    A failed message the provider refused for good (an invalid number, a landline: no resend can
    fix it) is requeued only with ``include_permanent``; one that ran out of retries always is."""
    if not states:
        raise UsageError("say what to requeue: --unknown, --failed, or both")
    if include_permanent and "failed" not in states:
        raise UsageError("--include-permanent goes with --failed (it requeues failures the provider gave as final)")
    if campaign is not None and db.conn.execute("SELECT 1 FROM campaigns WHERE id = ?", (campaign,)).fetchone() is None:
        raise UsageError(f"no campaign {campaign}: see `smsched campaigns list`")
    stamp = int(now if now is not None else now_s())
    with transaction(db):
        left = 0 if include_permanent or "failed" not in states else queue.permanent_failures(db, campaign=campaign)
        changed = queue.requeue(db, [MessageState(s) for s in states], at=stamp, valid_for=REQUEUE_VALID_FOR_S,
                                campaign=campaign, permanent_too=include_permanent)
    return {"requeued": changed, "states": states, "campaign": campaign, "at": clock.iso_utc(stamp),
            "left_permanent": left}
