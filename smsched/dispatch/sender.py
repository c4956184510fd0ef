"""The sender: worker threads that put marked messages on the wire, within each provider's rate
limit and circuit breaker, and hand back one outcome per message.

A worker checks, right before each request: is the run stopping, is the provider's breaker
open, and (after waiting for the rate limiter) is it still inside the recipient's sending
window — a message claimed at 21:59:59 never goes out at 22:00:01. What it could not send it
hands back as "not sent", so the run can put it back without using an attempt.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple

from smsched import quiet_hours
from smsched.dispatch.breaker import Breaker
from smsched.dispatch.decide import DEFERRED, NOT_SENT_UNAVAILABLE, NOT_SENT_STOPPING
from smsched.http import MaybeSent, NotSent, Transport
from smsched.providers import ACCEPTED, RETRY, UNKNOWN, OutMessage, Outcome, Provider
from smsched.queue import QueuedMessage
from smsched.ratelimit import Limits, RateLimiter


@dataclass
class Route:
    """One provider as a run uses it: its breaker (and, once sending starts, its rate limiter)."""

    provider: Provider
    breaker: Breaker
    throttle_pause: float = 1.0
    limiter: RateLimiter | None = None


class Result(NamedTuple):
    message: QueuedMessage
    outcome: Outcome
    finished: float  # the run's clock


class Results:
    """Outcomes handed from the workers to the run: the run takes all there are at once."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.put = self.queue.put

    def take(self, timeout: float) -> list[Result]:
        """Every result there is, waiting up to ``timeout`` for the first."""
        get = self.queue.get_nowait
        try:
            items = [self.queue.get(timeout=timeout) if timeout > 0 else get()]
        except queue.Empty:
            return []
        try:
            while True:
                items.append(get())
        except queue.Empty:
            return items


class Sender:
    def __init__(self, *, routes: dict[str, Route], transport: Transport, limits: Limits, workers: int,
                 now: Callable[[], float], campaigns: dict[int, dict], fields: dict[int, dict],
                 local: quiet_hours.LocalMinutes, stopping: threading.Event):
        self.routes, self.transport, self.limits = routes, transport, limits
        self.now, self.campaigns, self.fields, self.local = now, campaigns, fields, local
        self.stopping = stopping
        self.work: queue.SimpleQueue = queue.SimpleQueue()
        self.results = Results()
        self.http_seconds = [0.0] * workers
        self.limit_seconds = [0.0] * workers
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True, name=f"send-{i}")
                        for i in range(workers)]

    def start(self) -> None:
        for name, route in self.routes.items():  # one limiter per provider account, shared by all threads
            route.limiter = self.limits.for_key(name, "", route.provider.rate, route.provider.burst)
        for thread in self.threads:
            thread.start()

    def put(self, message: QueuedMessage) -> None:
        self.work.put(message)

    def stop(self, timeout: float) -> None:
        """Let every worker finish its request, then end (bounded by ``timeout`` in all)."""
        for _ in self.threads:
            self.work.put(None)
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _sender_limiter(self, route: Route, out: OutMessage) -> RateLimiter | None:
        p = route.provider
        return self.limits.for_key(p.name, p.sender_for(out), p.sender_rate, 1) if p.sender_rate else None

    def out_message(self, m: QueuedMessage) -> OutMessage:
        campaign = self.campaigns.get(m.campaign_id, {})
        return OutMessage(
            id=m.id, phone=m.phone, channel=m.channel, body=m.body, params=json.loads(m.params) if m.params else None,
            template=campaign.get("template"), lang=campaign.get("lang"), campaign_id=m.campaign_id,
            user=campaign.get("user"), sender=campaign.get("sender"), fields=self.fields.get(m.lead_id, {}),
        )

    def _work(self, index: int) -> None:
        put, get, now, stopping, routes = self.results.put, self.work.get, self.now, self.stopping, self.routes
        while True:
            m = get()
            if m is None:
                return
            if stopping.is_set():
                put(Result(m, NOT_SENT_STOPPING, now()))
                continue
            route = routes[m.provider]
            if not route.breaker.allow():
                put(Result(m, NOT_SENT_UNAVAILABLE, now()))
                continue
            out = self.out_message(m)
            limiter, sender_limiter = route.limiter, self._sender_limiter(route, out)
            if limiter.paused_until > limiter.clock():  # the provider asked us to wait: not now
                route.breaker.abandon_probe()
                put(Result(m, NOT_SENT_UNAVAILABLE, now()))
                continue
            waited = limiter.acquire()
            if sender_limiter is not None:
                waited += sender_limiter.acquire()
            if waited:
                self.limit_seconds[index] += waited
            if stopping.is_set():
                route.breaker.abandon_probe()
                put(Result(m, NOT_SENT_STOPPING, now()))
                continue
            # Quiet hours once more, at the very moment of sending.
            window = self.campaigns.get(m.campaign_id, {}).get("window")
            if window is not None and not self.local.allows(window, m.tz, now()):
                route.breaker.abandon_probe()
                put(Result(m, DEFERRED, now()))
                continue
            outcome = self._send(route, out, index, limiter)
            put(Result(m, outcome, now()))

    def _send(self, route: Route, out: OutMessage, index: int, limiter: RateLimiter) -> Outcome:
        provider = route.provider
        request = provider.build(out)
        sent_at = limiter.clock()
        started = time.perf_counter()
        try:
            response = self.transport.send(request)
            outcome = provider.classify(response.status, response.headers, response.body)
        except NotSent as exc:
            outcome = Outcome(RETRY, code="network", reason=f"not sent: {exc}", outage=True)
        except MaybeSent as exc:
            outcome = Outcome(UNKNOWN, code="network", reason=f"no answer: {exc}", outage=True)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the outcome of a sent request
            outcome = Outcome(UNKNOWN, code="error", reason=f"{type(exc).__name__}: {exc}")
        self.http_seconds[index] += time.perf_counter() - started
        route.breaker.record(outcome.outage)
        if outcome.throttled:
            limiter.throttled_answer(sent_at, outcome.retry_after, route.throttle_pause)
        elif outcome.kind == ACCEPTED:
            limiter.accepted()
        return outcome
