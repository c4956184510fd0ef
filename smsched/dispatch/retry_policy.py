"""When a message that was not taken goes out again.

Exponential back-off with jitter (``base × 2^(attempt-1)``, ±20%, capped at ``cap``), never
before the provider's ``Retry-After``; after ``max_attempts`` requests have left, it fails.
Throttling is not here: a throttled request consumed no attempt and waits in the run's own
queue (see ``decide.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from smsched.config import Config


@dataclass
class RetryPolicy:
    base: float = 30.0
    cap: float = 3600.0
    max_attempts: int = 5
    jitter: float = 0.2
    # "retry": an ambiguous answer (the provider may have it) is retried: at-least-once.
    ambiguous_retry: bool = False
    # A throttled message with no Retry-After waits this long in the run's queue...
    throttle_backoff: float = 1.0
    # ...and is handed back to the database instead when the provider asks for longer.
    hold_limit: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_config(cls, config: Config) -> "RetryPolicy":
        return cls(base=config.seconds("retry_base"), cap=config.seconds("retry_cap"),
                   max_attempts=int(config.dispatch("max_attempts")),
                   ambiguous_retry=config.dispatch("ambiguous") == "retry")

    def next_retry(self, attempts: int, retry_after: float | None, now: float) -> int | None:
        """When to try again after ``attempts`` requests have left; None when it is time to give up."""
        if attempts >= self.max_attempts:
            return None
        delay = min(self.cap, self.base * (2 ** (attempts - 1)))
        delay *= 1 - self.jitter + 2 * self.jitter * self.rng.random()
        return int(now + max(delay, retry_after or 0.0)) + 1

    def throttle_wait(self, retry_after: float | None) -> float:
        return retry_after if retry_after is not None else self.throttle_backoff
