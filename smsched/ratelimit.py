"""Rate limits shared by every worker thread of a run, adapting to what the provider accepts.

A ``RateLimiter`` spaces sends 1/rate apart after an initial burst, and never lets more than
``rate`` through in any one-second window (a sliding log of the last ``rate`` send times).

When the provider throttles (HTTP 429, Twilio 20429, Meta 130429/80007), the rate adapts:
multiplicative decrease (half, and never above what the provider actually accepted in the last
second) plus a pause of ``Retry-After`` (or a short default), once per congestion event — an
answer to a request sent before the last decrease is old news and changes nothing. Each
accepted message then wins a little back (additive increase: 5% of the last good rate per
second), never above the configured rate. The clock and the sleep are injected.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

MIN_RATE = 0.5          # messages/second: the floor of the decrease
DECREASE = 0.7      # as CUBIC: a gentler cut keeps the average nearer the limit
INCREASE_SHARE = 0.05   # of the rate before the last decrease, won back per second


class RateLimiter:
    def __init__(self, rate: float, burst: int | None = None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep):
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.configured = float(rate)  # the provider's whole rate; `rate` is this process's part
        self.effective = float(rate)
        self.burst = max(1, int(burst if burst is not None else 1))
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.tat = 0.0  # theoretical arrival time (GCRA)
        self.window: collections.deque[float] = collections.deque()
        # Accepted answers this second and the one before: what the provider takes, cheaply.
        self.accepted_second, self.accepted_now, self.accepted_before = 0, 0, 0
        self.waited = 0.0
        self.last_decrease = float("-inf")
        self.good_rate = float(rate)
        self.throttled = 0
        self.decreases = 0
        self.paused_until = float("-inf")

    def _reserve(self) -> float:
        """Reserve the next slot; returns when it is (monotonic seconds)."""
        now = self.clock()
        interval = 1.0 / self.effective
        tolerance = (self.burst - 1) * interval
        slot = max(now, self.tat - tolerance, self.paused_until)
        if self.window:
            slot = max(slot, self.window[-1])  # slots stay in order even after a decrease
        cap = max(1, int(self.effective))
        if len(self.window) >= cap:
            # The send `cap` places back must be more than a second before this one.
            slot = max(slot, self.window[-cap] + 1.0)
        self.tat = max(self.tat, slot) + interval
        self.window.append(slot)
        while len(self.window) > cap * 2:
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

    def share(self, parts: int) -> None:
        """``parts`` dispatchers send through this provider at once: keep to one part of its rate
        (lowered at once; raised again by the additive increase when others stop)."""
        with self.lock:
            rate = self.configured / max(1, parts)
            if rate != self.rate:
                self.rate = rate
                self.effective = min(self.effective, rate)
                self.good_rate = min(self.good_rate, rate)

    def accepted(self) -> None:
        """Additive increase, up to the configured rate."""
        second = int(self.clock())
        with self.lock:
            if second != self.accepted_second:
                self.accepted_before = self.accepted_now if second == self.accepted_second + 1 else 0
                self.accepted_now, self.accepted_second = 0, second
            self.accepted_now += 1
            if self.effective < self.rate:
                self.effective = min(self.rate, self.effective + INCREASE_SHARE * self.good_rate / self.effective)

    def _accepted_last_second(self, now: float) -> float:
        second = int(now)
        if second == self.accepted_second:
            return self.accepted_now + self.accepted_before * (1.0 - (now - second))
        if second == self.accepted_second + 1:
            return self.accepted_now * (1.0 - (now - second))
        return 0.0

    def throttled_answer(self, sent_at: float, retry_after: float | None, default_pause: float = 1.0) -> bool:
        """The provider said "slow down" to a request sent at ``sent_at``; True when the rate changed."""
        with self.lock:
            self.throttled += 1
            if sent_at < self.last_decrease:
                return False  # sent before we slowed down: the same congestion event
            now = self.clock()
            accepted_last_second = self._accepted_last_second(now)
            self.good_rate = max(MIN_RATE, min(self.effective, accepted_last_second or self.effective))
            self.effective = max(MIN_RATE, min(self.effective * DECREASE, self.good_rate))
            pause = retry_after if retry_after is not None else default_pause
            self.paused_until = max(self.paused_until, now + pause)
            self.last_decrease = now + pause  # what leaves before the pause ends is the same event
            self.tat = max(self.tat, self.paused_until)
            self.window.clear()
            self.decreases += 1
            return True


class Limits:
    """One limiter per provider account, and one per (provider, sender) where configured."""

    def __init__(self, sleep: Callable[[float], object] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.limiters: dict[tuple[str, str], RateLimiter] = {}
        self.lock = threading.Lock()
        self.sleep, self.clock = sleep, clock

    def for_key(self, provider: str, sender: str, rate: float, burst: int) -> RateLimiter:
        key = (provider, sender)
        limiter = self.limiters.get(key)
        if limiter is None:
            with self.lock:
                limiter = self.limiters.get(key)
                if limiter is None:
                    limiter = self.limiters[key] = RateLimiter(rate, burst, clock=self.clock, sleep=self.sleep)
        return limiter

    @property
    def waited(self) -> float:
        return sum(limiter.waited for limiter in self.limiters.values())
