"""Dispatch: claim due messages and send each one once, on time, within the provider's limits.

Where things are:
- ``run.py``: one run — the lock, signals, and the loop (claim, screen, mark, send, record);
- ``claim_policy.py``: what a run claims next (everything due in order, or the seed's cycle);
- ``screen.py``: what must not be sent now (opted out, expired, cancelled, quiet hours);
- ``sender.py``: the worker threads, rate limits and the last checks before the wire;
- ``breaker.py``: the circuit breaker that opens on outages and recovers with a probe;
- ``decide.py``: what a provider's answer means for a message (pure), ``retry_policy.py`` beside it;
- ``summary.py``: what a run did, its bottleneck, and its record for ``stats`` and ``check``;
- ``lock.py``: one dispatcher at a time, unless asked to share.
Every SQL statement that moves a message is in ``smsched.queue``; the states are in ``smsched.states``.
"""

from __future__ import annotations

import sqlite_utils

from smsched import clock as clock_lib
from smsched import queue
from smsched.dispatch.options import DispatchOptions
from smsched.dispatch.run import Run, dispatch
from smsched.dispatch.summary import RunSummary, lag_percentiles, name_bottleneck

__all__ = ["DispatchOptions", "Run", "RunSummary", "dispatch", "lag_percentiles", "name_bottleneck", "preview_due"]


def preview_due(db: sqlite_utils.Database, *, now: float, limit: int = 5) -> dict:
    """What a dispatch would send now: counts per campaign and the first messages. Changes nothing."""
    per_campaign, first = queue.preview_due(db, now=now, limit=limit)
    campaigns = [{"campaign_id": r[0], "campaign": r[1], "user": r[2], "due": r[3], "oldest_due": clock_lib.iso_utc(r[4])}
                 for r in per_campaign]
    return {
        "now": clock_lib.iso_utc(now), "due": sum(c["due"] for c in campaigns), "campaigns": campaigns,
        "first": [{"id": r[0], "campaign_id": r[1], "phone": r[2], "channel": r[3], "body": r[4],
                   "scheduled_at": clock_lib.iso_utc(r[5])} for r in first],
    }
