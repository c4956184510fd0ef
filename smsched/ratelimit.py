"""Rate limits shared by every worker thread of a run.

A ``RateLimiter`` spaces sends 1/rate apart after an initial burst, and never lets more than
``rate`` through in any one-second window (a sliding log of the last ``rate`` send times).
On a 429 the effective rate halves; each later success wins a little of it back (AIMD), so a
run slows down instead of hammering a provider that pushes back.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable


class RateLimiter:
    def __init__(self, rate: float, burst: int | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.effective = float(rate)
        self.burst = max(1, int(burst if burst is not None else 1))
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.tat = 0.0  # theoretical arrival time (GCRA)
        self.window: collections.deque[float] = collections.deque()
        self.waited = 0.0
        self.last_slow_down = float("-inf")

    def _reserve(self) -> float:
        """Reserve the next slot; returns when it is (monotonic seconds)."""
        now = self.clock()
        interval = 1.0 / self.effective
        tolerance = (self.burst - 1) * interval
        slot = max(now, self.tat - tolerance)
        if self.window:
            slot = max(slot, self.window[-1])  # slots stay in order even after slow_down()
        cap = max(1, int(self.effective))
        if len(self.window) >= cap:
            # The send `cap` places back must be more than a second before this one.
            slot = max(slot, self.window[-cap] + 1.0)
        self.tat = max(self.tat, slot) + interval
        self.window.append(slot)
        while len(self.window) > max(cap, 1) * 2:
            self.window.popleft()
        return slot

    def acquire(self) -> float:
        """Block until this caller may send; returns how long it waited."""
        with self.lock:
            slot = self._reserve()
        wait = slot - self.clock()
        if wait > 0:
            self.sleep(wait)
            with self.lock:
                self.waited += wait
            return wait
        return 0.0

    def slow_down(self) -> None:
        """Halve the rate, once per congestion event: 429s that arrive together count once."""
        with self.lock:
            now = self.clock()
            if now - self.last_slow_down < 1.0:
                return
            self.last_slow_down = now
            self.effective = max(1.0, self.effective / 2)

    def speed_up(self) -> None:
        with self.lock:
            if self.effective < self.rate:
                self.effective = min(self.rate, self.effective + max(0.5, self.rate / 50))


class Limits:
    """One limiter per provider account, and one per (provider, sender) where configured."""

    def __init__(self, rate_overrides: dict[str, float] | None = None):
        self.overrides = rate_overrides or {}
        self.limiters: dict[tuple[str, str], RateLimiter] = {}
        self.lock = threading.Lock()

    def for_key(self, provider: str, sender: str, rate: float, burst: int) -> RateLimiter:
        key = (provider, sender)
        with self.lock:
            limiter = self.limiters.get(key)
            if limiter is None:
                limiter = self.limiters[key] = RateLimiter(rate, burst)
            return limiter

    @property
    def waited(self) -> float:
        return sum(limiter.waited for limiter in self.limiters.values())
