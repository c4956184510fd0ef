"""A circuit breaker per provider that recovers.

``threshold`` consecutive outages (5xx answers, network errors, timeouts) open it: no request
goes to that provider. After ``cooldown`` one probe request is let through (half-open); an
answer that is not an outage closes it, another outage opens it for another cooldown.
Throttling ("slow down") and definite refusals are answers, not outages: they never open it.
Thread-safe; the clock is injected.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    def __init__(self, threshold: int, cooldown: float, *, clock: Callable[[], float] = time.monotonic):
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.lock = threading.Lock()
        self.state = CLOSED
        self.failures = 0
        self.open_until = 0.0
        self.opened = 0  # how many times it opened (a probe failing re-opens it)
        self.probes = 0

    def allow(self) -> bool:
        """May a request go out now? In half-open, exactly one (the probe) may."""
        if self.state == CLOSED:
            return True
        with self.lock:
            if self.state == OPEN and self.clock() >= self.open_until:
                self.state = HALF_OPEN
                self.probes += 1
                return True
            return self.state == CLOSED

    def record(self, outage: bool) -> None:
        """The answer to a request that went out: an outage, or anything else."""
        if not outage:
            if self.state != CLOSED or self.failures:
                with self.lock:
                    self.state, self.failures = CLOSED, 0
            return
        with self.lock:
            self.failures += 1
            if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
                self.state = OPEN
                self.open_until = self.clock() + self.cooldown
                self.opened += 1

    def abandon_probe(self) -> None:
        """The probe slot was taken but no request left (the run is stopping): free it."""
        with self.lock:
            if self.state == HALF_OPEN:
                self.state = OPEN

    @property
    def is_open(self) -> bool:
        return self.state != CLOSED

    def reopens_at(self) -> float:
        return self.open_until
