"""What a run claims next. One loop, two policies:

- ``DueOrder`` (the default): everything due, in dispatch order (priority, due minute, position
  in campaign), as fast as the limits allow; the run keeps going until its time budget.
- ``SeedCycle``: the original design's cycle — at most N campaigns × M messages, P campaigns at
  a time, each batch sent before the next is claimed, a pause between batches — then the run ends.
"""

from __future__ import annotations

from smsched import queue
from smsched.queue import QueuedMessage


class DueOrder:
    one_cycle = False       # the run goes on until its time budget
    drain_between = False   # claim while earlier claims are still being sent
    pause = 0.0
    mode = "due-order"

    def __init__(self, claim_size: int):
        self.claim_size = claim_size

    def claim(self, db, *, now: float, owner: str, lease_until: float, route: dict[str, str]) -> list[QueuedMessage] | None:
        """Up to claim_size due messages ([] when none is due now; never None: there may be more later)."""
        return queue.claim_due(db, now=now, limit=self.claim_size, owner=owner, lease_until=lease_until,
                               channels=_channels(route), route=route)


class SeedCycle:
    one_cycle = True
    drain_between = True
    mode = "seed-cycle"

    def __init__(self, *, max_campaigns: int | None, max_per_campaign: int | None, parallel: int, pause: float):
        self.max_campaigns, self.parallel, self.pause = max_campaigns, parallel, pause
        self.per_campaign = max_per_campaign or 10**9
        self.campaigns: list[int] | None = None

    def claim(self, db, *, now: float, owner: str, lease_until: float, route: dict[str, str]) -> list[QueuedMessage] | None:
        """The next P campaigns' messages; None once the cycle's campaigns are done."""
        if self.campaigns is None:
            self.campaigns = queue.due_campaigns(db, now, self.max_campaigns, _channels(route))
        if not self.campaigns:
            return None
        batch, self.campaigns = self.campaigns[:self.parallel], self.campaigns[self.parallel:]
        return [m for campaign_id in batch for m in queue.claim_campaign(
            db, campaign_id, now=now, limit=self.per_campaign, owner=owner, lease_until=lease_until, route=route)]


def _channels(route: dict[str, str]) -> list[str] | None:
    """The channels to claim: None (no filter) when every channel has a provider."""
    return None if len(route) == 2 else sorted(route)
