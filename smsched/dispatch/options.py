"""The options of one dispatch run, checked before anything is opened or changed."""

from __future__ import annotations

import math
from dataclasses import dataclass

from smsched.errors import UsageError

MAX_WORKERS = 1024


@dataclass
class DispatchOptions:
    provider: str | None = None
    workers: int | None = None
    rate: float | None = None
    time_budget: float | None = None
    max_campaigns: int | None = None
    max_per_campaign: int | None = None
    parallel: int | None = None
    batch_delay: float = 0.0
    lease: float | None = None
    concurrent: bool = False
    dry_run: bool = False
    batch: int | None = None

    @property
    def seed_cycle(self) -> bool:
        return any(v is not None for v in (self.max_campaigns, self.max_per_campaign, self.parallel))

    def validate(self) -> "DispatchOptions":
        """Refuse what cannot make sense, with one line that says what to type instead."""
        if self.workers is not None and not 1 <= self.workers <= MAX_WORKERS:
            raise UsageError(f"--workers {self.workers}: give a number of concurrent requests from 1 to {MAX_WORKERS}")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise UsageError(f"--rate {self.rate:g}: give messages per second as a finite number above 0, e.g. 100")
        for name, value in (("--batch", self.batch), ("--max-campaigns", self.max_campaigns),
                            ("--max-per-campaign", self.max_per_campaign), ("--parallel", self.parallel)):
            if value is not None and value < 1:
                raise UsageError(f"{name} {value}: give a whole number of at least 1")
        if self.parallel is not None and self.parallel > MAX_WORKERS:
            raise UsageError(f"--parallel {self.parallel}: at most {MAX_WORKERS}")
        if self.lease is not None and not (math.isfinite(self.lease) and self.lease > 0):
            raise UsageError("--lease must be longer than 0, e.g. 5m")
        for name, value in (("--time-budget", self.time_budget), ("--batch-delay", self.batch_delay)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be 0 or more, e.g. 55s")
        return self
