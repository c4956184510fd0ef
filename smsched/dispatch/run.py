"""One dispatch run: the lock, the signals, and the loop that claims, screens, marks, hands
messages to the sender and records what happened.

The in-flight window is the real one: a message is marked 'sending' (committed) only when it is
handed to a worker that is about to put it on the wire, and the rows in 'sending' are never
more than 2 × workers (fewer when a provider's rate allows fewer per second). Outcomes and the
next marks are recorded together, in one statement. A claimed message that is not sent (run
stopping, breaker open, throttled) never uses an attempt.

Clocks: schedules, validity and quiet hours follow the run's clock (``--now`` shifts it); lease
times, which other processes compare against, are always the machine's wall clock.
"""

from __future__ import annotations

import gc
import heapq
import math
import os
import signal
import threading
import time
import uuid
from collections import Counter, deque
from typing import Callable

import sqlite_utils

from smsched import campaigns as campaigns_lib
from smsched import clock as clock_lib
from smsched import optouts as optouts_lib
from smsched import queue, quiet_hours, states
from smsched.config import Config
from smsched.dispatch import summary as runs
from smsched.dispatch.breaker import Breaker
from smsched.dispatch.claim_policy import DueOrder, SeedCycle
from smsched.dispatch.decide import DEFERRED, NOT_SENT_UNAVAILABLE, decide
from smsched.dispatch.options import DispatchOptions
from smsched.dispatch.retry_policy import RetryPolicy
from smsched.dispatch.screen import screen
from smsched.dispatch.sender import Result, Route, Sender
from smsched.dispatch.summary import RunSummary
from smsched.errors import ExitCode
from smsched.http import Transport
from smsched.providers import ACCEPTED, CONFIG
from smsched.queue import QueuedMessage
from smsched.ratelimit import Limits
from smsched.states import Change, S
from smsched.storage import transaction

CAMPAIGN_CACHE_TTL_S = 30.0
FLUSH_AFTER_S = 0.25      # outcomes wait at most this long to be recorded when nothing else is written
SHARE_EVERY_S = 5.0        # how often a shared database is asked how many dispatchers share a provider
POLL_S = 1.0              # while idle, look for new work this often (a file stat, not a query)
STALL_LIMIT_S = 30.0      # past the budget, give up on a provider that accepted nothing for this long
MARK_AHEAD_S = 1.0        # mark at most one second of a provider's rate ahead of the wire
RECONCILE_MARGIN_S = 60.0  # 'unknown' messages older than the read timeout plus this are reconciled

Progress = Callable[[str, RunSummary, dict], None]


class Run:
    def __init__(self, db: sqlite_utils.Database, db_path: str, config: Config, options: DispatchOptions,
                 clock: clock_lib.Clock, progress: Progress | None = None,
                 statements: Callable[[], int] | None = None, per_campaign: bool = False):
        self.db, self.db_path, self.config, self.options, self.clock = db, db_path, config, options, clock
        self.per_campaign = per_campaign  # count per campaign (a live display shows them)
        self.progress = progress or (lambda event, summary, extra: None)
        self.statements = statements or (lambda: 0)
        self.summary = RunSummary()
        self.stopping = threading.Event()
        self.fatal: str | None = None
        self.workers = int(options.parallel or options.workers or config.dispatch("workers"))
        self.lease = options.lease if options.lease is not None else config.seconds("lease")
        budget = options.time_budget if options.time_budget is not None else config.seconds("time_budget")
        self.time_budget = max(0.0, budget)
        self.policy = RetryPolicy.from_config(config)
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.local = quiet_hours.LocalMinutes()
        self.campaigns: dict[int, dict] = {}
        self.campaigns_loaded_at = 0.0
        self.fields: dict[int, dict] = {}
        self.routes: dict[str, Route] = {}
        self.channels: dict[str, str] = {}  # channel -> provider name
        self.unroutable: dict[str, str] = {}
        self._breaker_seen: dict[str, int] = {}
        self._last_lease = 0.0
        self._shared_at = 0.0
        self._setup_routes()
        self.transport = Transport(pool_size=self.workers, connect_timeout=config.seconds("connect_timeout"),
                                   read_timeout=config.seconds("read_timeout"), client=config.dispatch("http_client"))
        self.limits = Limits(sleep=self.stopping.wait)
        self.sender = Sender(routes=self.routes, transport=self.transport, limits=self.limits, workers=self.workers,
                             now=self.clock.now, campaigns=self.campaigns, fields=self.fields, local=self.local,
                             stopping=self.stopping)
        if options.seed_cycle:
            self.claims = SeedCycle(max_campaigns=options.max_campaigns, max_per_campaign=options.max_per_campaign,
                                    parallel=max(1, options.parallel or self.workers), pause=options.batch_delay)
        else:
            total_rate = sum(r.provider.rate for r in self.routes.values())
            # A claim holds at most ~10 s of sending, so claimed messages never wait long for a slot.
            size = options.batch or min(int(config.dispatch("batch")), max(4 * self.workers, int(total_rate * 10)))
            self.claims = DueOrder(size)

    # ---- setup ---------------------------------------------------------------------------
    def _setup_routes(self) -> None:
        forced = self.options.provider
        if forced:
            provider = self.config.provider(forced)  # raises on an unknown name
            for channel in ("sms", "whatsapp"):
                if channel in provider.channels:
                    self._route(channel, forced)
            return
        for channel in ("sms", "whatsapp"):
            name = self.config.route(channel)
            if name:
                self._route(channel, name)

    def _route(self, channel: str, name: str) -> None:
        route = self.routes.get(name)
        if route is None:
            provider = self.config.provider(name)
            missing = provider.missing_settings()
            if missing:
                self.unroutable[channel] = (f"{channel} goes through {name}, which is missing {', '.join(missing)} "
                                            f"(see `smsched config show`)")
                return
            if self.options.rate:
                provider.rate = float(self.options.rate)
            breaker = Breaker(int(self.config.dispatch("breaker_threshold")), self.config.seconds("breaker_cooldown"))
            route = self.routes[name] = Route(provider, breaker, throttle_pause=self.policy.throttle_backoff)
            self.summary.providers[name] = {"rate": provider.rate, "sent": 0, "throttled": 0, "breaker": False,
                                            "breaker_opened": 0, "probes": 0}
        self.channels[channel] = name

    def _channel_list(self) -> list[str] | None:
        """None when every channel is routed (no filter), else the routed ones."""
        return None if len(self.channels) == 2 else sorted(self.channels)

    def _timed(self, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.summary.time_db += time.perf_counter() - started

    # ---- the run -------------------------------------------------------------------------
    def execute(self) -> RunSummary:
        lock = self.db.dialect.run_lock(self.db, self.owner)
        alone = lock.try_exclusive()
        if not alone and not (self.options.concurrent or self.db.dialect.shares_claims):
            holder = lock.holder()
            lock.release()
            self.summary.status = "skipped"
            self.summary.message = (f"another smsched dispatch is running (pid {holder}); exiting. "
                                    "Pass --concurrent to share the work")
            return self.summary
        if not alone:
            lock.try_shared()
        previous = self._install_signals()
        affinity = self._pin_cpu()
        try:
            return self._execute(alone)
        finally:
            if affinity:
                os.sched_setaffinity(0, affinity)
            self._restore_signals(previous)
            self.transport.close()
            lock.release()

    def _pin_cpu(self) -> set[int] | None:
        """Run on one core (a different one per process); returns the affinity to restore."""
        if not self.config.dispatch("pin_cpu") or not hasattr(os, "sched_setaffinity"):
            return None
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        os.sched_setaffinity(0, {cpus[os.getpid() % len(cpus)]})
        return set(cpus)

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        return {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}

    def _restore_signals(self, previous) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting
        self.stopping.set()
        self.summary.status = "interrupted"
        self.summary.exit_code = ExitCode.CTRL_C if signum == signal.SIGINT else ExitCode.TERMINATED

    def _execute(self, alone: bool) -> RunSummary:
        s = self.summary
        s.workers = self.workers
        s.started_at = time.time()
        s.clock_start = self.clock.now()
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        mode = self.claims.mode if not alone or self.options.seed_cycle else "exclusive"
        s.run_id = self._timed(runs.record_start, self.db, s, "concurrent" if not alone else mode, self.owner)
        s.commits += 1
        look = self._timed(queue.first_look, self.db, before=math.inf if alone else self._wall(), run_id=s.run_id,
                           providers=self._listing_providers())
        s.recovered = self._timed(self._recover, alone, look)
        s.reconciled = self._reconcile() if look["unknown"] else None
        s.materialised = self._timed(campaigns_lib.extend_repeating, self.db, self.clock.now())
        deadline = s.clock_start + self.time_budget
        self.sender.start()
        self._share_rates()
        # The loop makes and drops a few tuples per message, none in cycles: collecting them
        # thousands of times a second is wasted CPU (what exists at the start is frozen).
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
        try:
            self._loop(deadline)
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            self.stopping.set()
            self.sender.stop(self.transport.read_timeout + self.transport.connect_timeout + 5)
            s.duration = time.perf_counter() - wall_start
            s.time_cpu = time.process_time() - cpu_start
            s.time_http = sum(self.sender.http_seconds)
            s.time_rate_limit = sum(self.sender.limit_seconds)
            if self.fatal:
                s.status, s.message, s.exit_code = "config_error", self.fatal, ExitCode.ERROR
            elif self.unroutable and self._timed(queue.due_count, self.db, self.clock.now(), sorted(self.unroutable)):
                s.message = "; ".join(self.unroutable.values())
                s.exit_code = ExitCode.ERROR
            for name, route in self.routes.items():
                entry = s.providers[name]
                entry["breaker"] = route.breaker.opened > 0
                entry["breaker_opened"] = route.breaker.opened
                entry["probes"] = route.breaker.probes
                limiter = self.limits.limiters.get((name, ""))
                if limiter is not None:
                    entry["throttled"] = limiter.throttled
                    entry["adapted_rate"] = round(limiter.effective, 1)
            s.sql_statements = self.statements()
            self._timed(runs.record_finish, self.db, s)
            s.commits += 1
            s.sql_statements = self.statements()
        return s

    def _recover(self, alone: bool, look: dict) -> dict:
        """Put back what dead runs left. Alone, every orphan is stale; shared, only expired leases
        (and, on PostgreSQL, the claims of dispatchers whose session is gone)."""
        before = math.inf if alone else self._wall()  # leases are read on the lease clock
        shared = self.db.dialect.shares_claims
        if not look["orphans"] and not ((alone or shared) and look["running"]):
            return {"claimed_to_scheduled": 0, "sending_to_unknown": 0, "sending_to_sent": 0}
        with transaction(self.db):
            counts = queue.recover(self.db, before=before, now=self.clock.now())
            if alone or shared:
                runs.mark_crashed(self.db, self.summary.run_id, alone=alone)
        self.summary.commits += 1
        return counts

    def _listing_providers(self) -> list[str]:
        """The routed providers reconciliation can ask (none when it is switched off)."""
        if not self.config.dispatch("reconcile"):
            return []
        return [name for name, route in self.routes.items() if route.provider.can_list]

    def _reconcile(self) -> dict | None:
        """Ask providers that can tell about 'unknown' messages whose requests have certainly finished."""
        names = self._listing_providers()
        if not names:
            return None
        from smsched import reconcile

        started = time.perf_counter()
        result = reconcile.reconcile(self.db, self.config, providers=names, transport=self.transport, now=self.clock.now(),
                                     older_than=self.transport.read_timeout + RECONCILE_MARGIN_S)
        self.summary.time_http += time.perf_counter() - started
        self.summary.commits += len(result.providers)
        if result.errors:
            self.progress("warning", self.summary, {"message": "reconciliation: " + "; ".join(result.errors)})
        return result.as_dict()

    # ---- the loop ------------------------------------------------------------------------
    def _loop(self, deadline: float) -> None:
        s = self.summary
        cap = 2 * self.workers               # rows in 'sending', at most
        refill = max(1, self.workers // 2)   # mark in groups of at least this many
        pending: deque[QueuedMessage] = deque()  # claimed and screened, not marked
        held: list = []                      # heap of (until, n, message): claimed, waiting its turn
        changes: list[Change] = []           # moves to record
        outstanding: Counter = Counter()     # per provider: marked, no outcome yet
        claiming = True
        claim_after = -math.inf              # nothing due before this (run clock): do not ask again
        next_pause = 0.0                     # the seed's cycle: the pause before the next batch
        last_write = time.monotonic()
        last_progress = self.clock.now()
        wal = _WalWatch(self.db.dialect.change_file(self.db))
        n = 0
        while True:
            now = self.clock.now()
            if self.stopping.is_set() or self.fatal:
                claiming = False
            if time.monotonic() - self._shared_at >= SHARE_EVERY_S:
                self._timed(self._share_rates)
            busy = sum(outstanding.values())
            # 1. Claim, when little is left to mark.
            if claim_after > now and wal.changed():
                claim_after = -math.inf  # another process wrote: there may be new work
            if (claiming and len(pending) < self.workers and now >= claim_after
                    and (not self.claims.drain_between or (not busy and not held and not pending))):
                if self.claims.drain_between and next_pause:
                    self._idle(next_pause)
                    now = self.clock.now()
                # What fell due by the end of the budget is drained even past it; nothing later.
                cutoff = now if self.claims.one_cycle else min(now, deadline)
                claim_started = time.perf_counter()
                batch = self._timed(self.claims.claim, self.db, now=cutoff, owner=self.owner,
                                    lease_until=self._lease_until(), route=self.channels)
                s.time_claim += time.perf_counter() - claim_started
                s.commits += 1
                wal.saw_own_write()
                if batch is None:
                    claiming = False
                elif batch:
                    s.claimed += len(batch)
                    keep, screened = self._screen(batch, now)
                    changes += screened
                    pending.extend(keep)
                    next_pause = self.claims.pause
                    self.progress("batch", s, {"claimed": len(batch)})
                    if now >= deadline and len(batch) < getattr(self.claims, "claim_size", 0):
                        claiming = False  # everything due by the end of the budget is claimed
                elif self.claims.one_cycle or now >= deadline:
                    claiming = False
                else:
                    due = self._timed(queue.next_due, self.db, self._channel_list())
                    if due is None or due > deadline:
                        claiming = False
                    else:
                        claim_after = due if due > now else now + POLL_S
            # 2. Held messages whose time has come go back to the front of the line.
            while held and held[0][0] <= now:
                pending.appendleft(heapq.heappop(held)[2])
            # 3. What this run will not send goes back, untouched.
            stop_all = not claiming and (self.stopping.is_set() or self.fatal)
            if (pending or held) and (stop_all or not claiming or self._route_ready_in() > 0):
                give_up = {name for name in self.routes if self._gives_up(name, now, deadline, claiming, last_progress)}
                if stop_all or give_up:
                    changes += self._release(pending, held, only=None if stop_all else give_up)
                if give_up and now >= deadline:
                    claiming = False  # past the budget, a backlog must not keep a dead provider's run alive
            # 4. Mark the next messages, up to the window, and 5. record outcomes and marks together.
            marks = self._marks(pending, outstanding, cap, refill) if pending and not stop_all else []
            if marks or (changes and (len(changes) >= refill or not busy
                                      or time.monotonic() - last_write > FLUSH_AFTER_S)):
                taken = self._write(changes, [states.marked(m.id, m.provider) for m in marks], now)
                changes = []
                last_write = time.monotonic()
                wal.saw_own_write()
                for m in marks:
                    if taken is None or m.id in taken:
                        outstanding[m.provider] += 1
                        self.sender.put(m)
                    else:
                        s.lost_claims += 1  # another run recovered it meanwhile: not ours to send
            busy = sum(outstanding.values())
            if not claiming and not pending and not held and not changes and not busy:
                return
            # 6. Wait for outcomes or the next event, then decide what each means.
            if not busy and not pending and not held:
                if claiming:  # nothing to do until the next message falls due (or new work arrives)
                    self._idle(max(0.0, min(claim_after, deadline, now + POLL_S) - self.clock.now()))
                continue
            results = self.sender.results.take(self._timeout(held, pending, busy, bool(changes), now))
            if not results:
                continue
            now = self.clock.now()
            must_record = False
            for result in results:
                m = result.message
                outstanding[m.provider] -= 1
                change = self._decide(result)
                changes.append(change)
                if change.target == S.CLAIMED:  # throttled, or its breaker is open: wait in this run
                    n += 1
                    heapq.heappush(held, (change.hold_until, n, m))
                    s.held += 1
                    must_record = True
                else:
                    last_progress = now
            for name, route in self.routes.items():
                if route.breaker.opened > self._breaker_seen.get(name, 0):
                    self._breaker_seen[name] = route.breaker.opened
                    self.progress("breaker", s, {"provider": name, "after": route.breaker.threshold,
                                                 "cooldown": route.breaker.cooldown})
            if must_record:  # before the message can be marked again
                self._write(changes, [], now)
                changes = []
                last_write = time.monotonic()
                wal.saw_own_write()
            self.progress("tick", s, {})

    def _marks(self, pending: deque, outstanding: Counter, cap: int, refill: int) -> list[QueuedMessage]:
        busy = sum(outstanding.values())
        free = cap - busy
        if free <= 0 or (free < refill and busy >= refill):
            return []
        room = {name: self._route_room(name, route, outstanding[name], cap) for name, route in self.routes.items()}
        if not any(v > 0 for v in room.values()):
            return []
        picked: list[QueuedMessage] = []
        skipped: list[QueuedMessage] = []
        while pending and len(picked) < free:
            m = pending.popleft()
            if room.get(m.provider, 0) > 0:
                room[m.provider] -= 1
                picked.append(m)
            else:
                skipped.append(m)
                if not any(v > 0 for v in room.values()):
                    break
        pending.extendleft(reversed(skipped))
        return picked

    def _route_room(self, name: str, route: Route, busy: int, cap: int) -> int:
        """How many more of this provider's messages may be marked now."""
        breaker = route.breaker
        if breaker.is_open:
            # Only the probe, once the cooldown is over.
            return 1 if breaker.state == "open" and time.monotonic() >= breaker.reopens_at() and busy == 0 else 0
        limiter = self.limits.limiters.get((name, ""))
        if limiter is None:
            return cap - busy
        if limiter.paused_until > time.monotonic():
            return 0
        # No more than about a second of the provider's rate waits marked in front of the wire.
        ahead = max(1, math.ceil(limiter.effective * MARK_AHEAD_S))
        return max(0, min(cap, ahead) - busy)

    def _gives_up(self, name: str, now: float, deadline: float, claiming: bool, last_progress: float) -> bool:
        """Should this run hand a provider's waiting messages back to the database?

        When the provider will not take them before the budget ends and within what a run holds
        (a long Retry-After), or, past the budget, when its breaker is open or it accepted nothing
        for a while: a run always ends."""
        route = self.routes[name]
        ready_in = self._route_ready_in(only=name)
        if ready_in > self.policy.hold_limit and now + ready_in > deadline:
            return True
        if now < deadline:
            return False
        return route.breaker.is_open or now - last_progress > STALL_LIMIT_S

    def _route_ready_in(self, only: str | None = None) -> float:
        """Seconds until a provider that cannot take messages now (breaker, throttle pause) may."""
        mono, waits = time.monotonic(), []
        for name, route in self.routes.items():
            if only is not None and name != only:
                continue
            if route.breaker.is_open:
                waits.append(route.breaker.reopens_at() - mono)
            limiter = self.limits.limiters.get((name, ""))
            if limiter is not None and limiter.paused_until > mono:
                waits.append(limiter.paused_until - mono)
        return max(0.0, min(waits)) if waits else 0.0

    def _write(self, changes: list[Change], marks: list[Change], now: float) -> set[int] | None:
        """Record moves and 'sending' marks in one statement. Returns None when every move took,
        else the ids of the marks that took (the others belong to another run now)."""
        moved = self._timed(queue.apply, self.db, changes + marks, owner=self.owner, now=now)
        self.summary.commits += 1
        if moved == len(changes) + len(marks):
            return None
        return self._timed(queue.held, self.db, [c.id for c in marks], owner=self.owner, state=S.SENDING)

    def _lease_until(self) -> float:
        """A claim's lease (wall clock), distinct from this run's earlier ones: it names the claim."""
        lease = max(self._wall() + self.lease, self._last_lease + 0.001)
        self._last_lease = lease
        return lease

    def _share_rates(self) -> None:
        """Dispatchers sharing a database share each provider's rate: each sends its part."""
        self._shared_at = time.monotonic()
        live = self.db.dialect.live_dispatchers(self.db)
        if live:
            for route in self.routes.values():
                if route.limiter is not None:
                    route.limiter.share(live)
            self.summary.dispatchers = live

    def _wall(self) -> float:
        """The lease clock: the machine's (SQLite), or the database server's (shared by every host)."""
        return self.db.dialect.wall(self.db)

    def _release(self, pending: deque, held: list, only: set[str] | None) -> list[Change]:
        back = [m for m in pending if only is None or m.provider in only]
        back += [item[2] for item in held if only is None or item[2].provider in only]
        kept = [m for m in pending if only is not None and m.provider not in only]
        pending.clear()
        pending.extend(kept)
        held[:] = [item for item in held if only is not None and item[2].provider not in only]
        heapq.heapify(held)
        self.summary.released += len(back)
        return [states.released(m.id) for m in back]

    def _timeout(self, held: list, pending: deque, busy: int, changes: bool, now: float) -> float:
        limit = POLL_S
        if held:
            limit = min(limit, max(0.0, held[0][0] - now))
        if pending and not busy:  # waiting for a breaker's cooldown or a throttle pause to end
            limit = min(limit, max(0.01, self._route_ready_in()))
        if changes:
            limit = min(limit, FLUSH_AFTER_S)
        return limit

    def _idle(self, seconds: float) -> None:
        started = time.perf_counter()
        self.stopping.wait(seconds)
        self.summary.time_idle += time.perf_counter() - started

    # ---- deciding ------------------------------------------------------------------------
    def _screen(self, batch: list[QueuedMessage], now: float) -> tuple[list[QueuedMessage], list[Change]]:
        self._timed(self._load_campaigns, {m.campaign_id for m in batch})
        scopes = self._timed(queue.optout_scopes, self.db, [m.phone for m in batch])
        keep, changes = screen(batch, self.campaigns, scopes, now, self.local)
        s = self.summary
        for change in changes:
            if change.target == S.SUPPRESSED:
                s.suppressed += 1
            elif change.target == S.CANCELLED:
                s.cancelled += 1
            elif change.target == S.EXPIRED:
                s.expired += 1
            else:
                s.deferred += 1
        for m in batch:
            self._tally(m.campaign_id, "claimed")
        routed = [m for m in keep if m.provider]
        if len(routed) != len(keep):  # a channel with no usable provider: left for the next run
            changes += [states.released(m.id) for m in keep if not m.provider]
            s.released += len(keep) - len(routed)
        if any(self.routes[m.provider].provider.needs_lead_fields for m in routed):
            self.fields.update(self._timed(queue.lead_fields, self.db, [m.lead_id for m in routed]))
        return routed, changes

    def _load_campaigns(self, ids: set[int]) -> None:
        stale = time.monotonic() - self.campaigns_loaded_at > CAMPAIGN_CACHE_TTL_S
        wanted = ids | set(self.campaigns) if stale else {i for i in ids if i not in self.campaigns}
        if not wanted:
            return
        for campaign_id, info in queue.campaigns_info(self.db, wanted).items():
            info["window"] = quiet_hours.parse_window(info["quiet_hours"])
            self.campaigns[campaign_id] = info
        if stale:
            self.campaigns_loaded_at = time.monotonic()

    def _decide(self, result: Result) -> Change:
        m, outcome, s = result.message, result.outcome, self.summary
        ready_at = window = None
        if outcome is NOT_SENT_UNAVAILABLE:
            ready_at = self.clock.now() + self._route_ready_in(only=m.provider)
        elif outcome is DEFERRED:
            window = self.campaigns.get(m.campaign_id, {}).get("window")
        change = decide(m, outcome, result.finished, self.policy, window=window, ready_at=ready_at)
        if outcome.kind == CONFIG and not self.fatal:
            self.fatal = (f"{m.provider} refused our configuration ({outcome.error}); stopping with messages "
                          "left scheduled — check the credentials with `smsched config check`")
            self.stopping.set()
        if outcome.throttled:
            s.throttled += 1
        target = change.target
        if target == S.SENT:
            s.sent += 1
            s.providers[m.provider]["sent"] += 1
            s.lags.append(max(0.0, result.finished - m.scheduled_at))
            self._tally(m.campaign_id, "sent")
        elif target == S.FAILED:
            s.failed += 1
            s.failures[outcome.error or "failed"] += 1
            self._tally(m.campaign_id, "failed")
            if outcome.opt_out:
                self._opt_out(m, outcome)
        elif target == S.UNKNOWN:
            s.unknown += 1
            s.failures[outcome.error or "unknown"] += 1
            self._tally(m.campaign_id, "unknown")
        elif target == S.EXPIRED:
            s.expired += 1
        elif target == S.SCHEDULED and (change.attempted or outcome.throttled):
            s.retried += 1
            s.failures[outcome.error or "retry"] += 1
            self._tally(m.campaign_id, "retried")
        elif target == S.SCHEDULED and change.scheduled_at is not None:
            s.deferred += 1
        elif target == S.SCHEDULED:
            s.released += 1
        return change

    def _opt_out(self, m: QueuedMessage, outcome) -> None:
        # A STOP blocks the sender it was sent to: the user's own sender, else the shared one (everyone).
        campaign = self.campaigns.get(m.campaign_id, {})
        scope = m.user_id if campaign.get("sender") else 0
        self._timed(optouts_lib.add_normalized, self.db, [m.phone], scope, f"provider {m.provider}: {outcome.error}",
                    f"provider:{m.provider}", self.clock.now())

    def _tally(self, campaign_id: int, key: str) -> None:
        if not self.per_campaign:
            return
        entry = self.summary.per_campaign.get(campaign_id)
        if entry is None:
            entry = self.summary.per_campaign[campaign_id] = Counter()
        entry[key] += 1


class _WalWatch:
    """Has another process written to the database since we last looked? A stat of its WAL file
    answers without a query: an idle run costs no SQL while it waits. A database without such a
    file (a server) is assumed to have changed once per POLL_S."""

    def __init__(self, path: str | None):
        self.path = path
        self.seen = self._stamp()

    def _stamp(self):
        if self.path is None:
            return int(time.monotonic() / POLL_S)
        try:
            st = os.stat(self.path)
            return st.st_size, st.st_mtime_ns, st.st_ino
        except OSError:
            return None

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp != self.seen:
            self.seen = stamp
            return True
        return False

    def saw_own_write(self) -> None:
        self.seen = self._stamp()


def dispatch(db: sqlite_utils.Database, db_path: str, config: Config, options: DispatchOptions,
             clock: clock_lib.Clock | None = None, progress: Progress | None = None,
             statements: Callable[[], int] | None = None, per_campaign: bool = False) -> RunSummary:
    return Run(db, db_path, config, options.validate(), clock or clock_lib.Clock(), progress, statements,
               per_campaign).execute()
