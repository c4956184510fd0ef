"""Dispatch: claim due messages atomically and send each one once, on time, within limits.

Message states::

    scheduled -> claimed -> sending -> sent
                                    -> scheduled (retry later, with back-off)
                                    -> failed    (permanent, or out of attempts)
                                    -> unknown   (may have been sent: never resent automatically)
    scheduled -> paused | cancelled | expired | suppressed (opted out)

A claim is one UPDATE ... RETURNING statement, so any number of processes can claim from one
database without ever sharing a message. The 'sending' mark is committed before any request of
its group leaves, in the same statement that records the previous group's outcomes: after a
kill -9, 'claimed' rows were never sent (back to scheduled) and 'sending' rows might have been
(unknown). Order: priority, then the minute a message falls due, then its position in its
campaign, so that every campaign due in a minute gets its first message out before any gets
its second (one user's 100,000 do not hold back another's 100).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import queue
import random
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import sqlite_utils

from smsched import campaigns as campaigns_lib
from smsched import clock as clock_lib
from smsched import optouts as optouts_lib
from smsched import quiet_hours
from smsched.config import Config
from smsched.errors import ExitCode, UsageError
from smsched.http import MaybeSent, NotSent, Transport
from smsched.providers import ACCEPTED, CONFIG, PERMANENT, RETRY, UNKNOWN, OutMessage, Outcome, Provider
from smsched.ratelimit import Limits
from smsched.storage import transaction

CAMPAIGN_CACHE_TTL_S = 30.0
DEFERRED = Outcome("deferred")  # not sent: quiet hours began between the claim and the send


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
    now: float | None = None
    batch: int | None = None

    @property
    def seed_cycle(self) -> bool:
        return any(v is not None for v in (self.max_campaigns, self.max_per_campaign, self.parallel))


@dataclass
class _Message:
    id: int
    campaign_id: int
    user_id: int
    lead_id: int | None
    phone: str
    channel: str
    body: str
    params: str | None
    tz: str
    priority: int
    seq: int
    scheduled_at: int
    expires_at: int
    attempts: int
    provider: str = ""
    marked_sending: bool = False


@dataclass
class RunSummary:
    run_id: int | None = None
    status: str = "finished"
    message: str | None = None
    exit_code: int = ExitCode.SUCCESS
    started_at: float = 0.0
    clock_start: float = 0.0
    duration: float = 0.0
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    suppressed: int = 0
    expired: int = 0
    deferred: int = 0
    released: int = 0
    cancelled: int = 0
    recovered: dict = field(default_factory=dict)
    materialised: int = 0
    lags: list = field(default_factory=list)
    time_db: float = 0.0
    time_http: float = 0.0
    time_rate_limit: float = 0.0
    time_idle: float = 0.0
    workers: int = 0
    sql_statements: int = 0
    per_campaign: dict = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)
    providers: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.duration if self.duration > 0 else 0.0

    def lag(self) -> dict:
        return lag_percentiles(self.lags)

    def time_split(self) -> dict:
        workers = max(1, self.workers)
        return {
            "database": round(self.time_db, 3),
            "provider": round(self.time_http / workers, 3),
            "rate_limit": round(self.time_rate_limit / workers, 3),
            "idle": round(self.time_idle, 3),
        }

    def bottleneck(self) -> tuple[str, str]:
        return name_bottleneck(self.duration, self.time_split(), self.sent + self.failed + self.unknown + self.retried)

    def as_dict(self) -> dict:
        name, words = self.bottleneck()
        return {
            "run_id": self.run_id, "status": self.status, "message": self.message,
            "started_at": clock_lib.iso_utc(self.started_at), "clock": clock_lib.iso_utc(self.clock_start),
            "claimed": self.claimed, "sent": self.sent, "retried": self.retried, "failed": self.failed,
            "unknown": self.unknown, "suppressed": self.suppressed, "expired": self.expired,
            "deferred": self.deferred, "released": self.released, "cancelled": self.cancelled,
            "recovered": self.recovered, "materialised": self.materialised,
            "duration": round(self.duration, 3), "messages_per_second": round(self.rate, 1),
            "lag": self.lag(), "time": self.time_split(), "bottleneck": name, "bottleneck_detail": words,
            "workers": self.workers, "sql_statements": self.sql_statements,
            "sql_statements_per_1000": round(1000 * self.sql_statements / self.sent, 1) if self.sent else None,
            "failures": dict(self.failures.most_common(10)), "providers": self.providers,
        }


def lag_percentiles(lags: list[float]) -> dict:
    if not lags:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(lags)

    def pick(q: float) -> float:  # nearest rank: the smallest value with at least q of them at or below it
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": round(ordered[-1], 3), "count": len(ordered)}


def name_bottleneck(duration: float, split: dict, handled: int) -> tuple[str, str]:
    """The bottleneck of a run, from where its time went, in words an operator can act on."""
    if duration <= 0 or handled == 0:
        return "idle", "nothing was due"
    if duration < 1.0:
        return "none", f"none: a short run ({handled} message(s) in {duration:.2f}s)"
    share = {k: v / duration for k, v in split.items()}
    if share["rate_limit"] >= 0.5:
        return "rate_limit", (f"provider rate limit: {share['rate_limit']:.0%} of the run waited for tokens "
                              "— raise the rate or add senders")
    if share["database"] >= 0.5:
        return "database", f"database: {share['database']:.0%} of the run was spent in SQLite — check disk and concurrent writers"
    if share["provider"] >= 0.5:
        return "provider", (f"provider latency: workers spent {share['provider']:.0%} of the run waiting on HTTP "
                            "— add --workers if the provider allows more concurrency")
    if share["idle"] >= 0.5:
        return "idle", f"idle: {share['idle']:.0%} of the run waited for messages to fall due"
    return "cpu", "client CPU: the sending loop itself (HTTP client overhead) is the limit — run a second --concurrent dispatcher"


def _row(message_id: int, state: str, *, sent_at: float | None = None, provider: str | None = None,
         provider_id: str | None = None, error: str | None = None, attempts: int = 0,
         scheduled_at: int | None = None, lease: float | None = None) -> list:
    """One message's change, in the order Dispatcher._WRITE reads it (attempts is a delta)."""
    return [message_id, state, sent_at, provider, provider_id, error, attempts, scheduled_at, lease]


class _Lock:
    """A kernel lock on a file beside the database: released by the kernel even on kill -9."""

    def __init__(self, db_path: str):
        self.path = f"{db_path}.dispatch.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.mode: str | None = None

    def try_lock(self, exclusive: bool) -> bool:
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.mode = "exclusive" if exclusive else "shared"
        if exclusive:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def holder(self) -> str:
        try:
            return os.pread(self.fd, 32, 0).decode().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


Progress = Callable[[str, RunSummary, dict], None]


class Dispatcher:
    def __init__(self, db: sqlite_utils.Database, db_path: str, config: Config, options: DispatchOptions,
                 progress: Progress | None = None):
        self.db, self.db_path, self.config, self.options = db, db_path, config, options
        self.progress = progress or (lambda event, summary, extra: None)
        self.clock = clock_lib.Clock(options.now)
        self.summary = RunSummary()
        self.stop_event = threading.Event()
        self.fatal: str | None = None
        self.workers = int(options.parallel or options.workers or config.dispatch("workers"))
        self.lease = options.lease if options.lease is not None else config.seconds("lease")
        budget = options.time_budget if options.time_budget is not None else config.seconds("time_budget")
        self.time_budget = max(0.0, budget)
        self.max_attempts = int(config.dispatch("max_attempts"))
        self.retry_base = config.seconds("retry_base")
        self.retry_cap = config.seconds("retry_cap")
        self.ambiguous_retry = config.dispatch("ambiguous") == "retry"
        self.breaker_threshold = int(config.dispatch("breaker_threshold"))
        self.transport = Transport(pool_size=self.workers, connect_timeout=config.seconds("connect_timeout"),
                                   read_timeout=config.seconds("read_timeout"), client=config.dispatch("http_client"))
        self.limits = Limits()
        self.providers: dict[str, Provider] = {}
        self.routes: dict[str, str] = {}
        self.unroutable: dict[str, str] = {}
        self.breaker: dict[str, int] = Counter()
        self.breaker_lock = threading.Lock()
        self.breaker_open: set[str] = set()
        self.campaigns: dict[int, dict] = {}
        self.campaigns_loaded_at = 0.0
        self._local_minutes: dict[tuple[str, int], int] = {}
        self.random = random.Random()
        self.run_tag = f"{os.getpid()}-{int(time.time() * 1000) % 10**9}"
        self._setup_routes()

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
        provider = self.providers.get(name) or self.config.provider(name)
        missing = provider.missing_settings()
        if missing:
            self.unroutable[channel] = (f"{channel} goes through {name}, which is missing {', '.join(missing)} "
                                        f"(see `smsched config show`)")
            return
        if self.options.rate:
            provider.rate = float(self.options.rate)
        self.providers[name] = provider
        self.routes[channel] = name
        self.summary.providers.setdefault(name, {"rate": provider.rate, "sent": 0, "breaker": False})

    def _timed(self, fn, *args):
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.summary.time_db += time.perf_counter() - started

    def _count_statement(self, _sql: str) -> None:
        self.summary.sql_statements += 1

    # ---- the run -------------------------------------------------------------------------
    def run(self) -> RunSummary:
        if self.options.dry_run:
            raise UsageError("use preview_due() for --dry-run")
        lock = _Lock(self.db_path)
        alone = lock.try_lock(exclusive=True)
        if not alone and not self.options.concurrent:
            holder = lock.holder()
            lock.release()
            self.summary.status = "skipped"
            self.summary.message = (f"another smsched dispatch is running (pid {holder}); exiting. "
                                    "Pass --concurrent to share the work")
            return self.summary
        if not alone:
            lock.try_lock(exclusive=False)
        previous = self._install_signals()
        affinity = self._pin_cpu()
        self.db.conn.set_trace_callback(self._count_statement)
        try:
            return self._run(alone)
        finally:
            self.db.conn.set_trace_callback(None)
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
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _restore_signals(self, previous) -> None:
        for signum, handler in (previous or {}).items():
            signal.signal(signum, handler)

    def _on_signal(self, signum, _frame) -> None:
        if self.stop_event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting
        self.stop_event.set()
        self.summary.status = "interrupted"
        self.summary.exit_code = ExitCode.CTRL_C if signum == signal.SIGINT else ExitCode.TERMINATED

    def _run(self, alone: bool) -> RunSummary:
        s = self.summary
        s.workers = self.workers
        s.started_at = time.time()
        s.clock_start = self.clock.now()
        wall_start = time.perf_counter()
        s.run_id = self._timed(self._record_start, alone)
        s.recovered = self._timed(self._recover, alone)
        s.materialised = self._timed(campaigns_lib.extend_repeating, self.db, self.clock.now())
        deadline = s.clock_start + self.time_budget
        threads = [threading.Thread(target=self._worker, daemon=True, name=f"send-{i}") for i in range(self.workers)]
        self.work: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.worker_stats = [[0.0, 0.0] for _ in threads]  # http seconds, rate-limit seconds
        for index, thread in enumerate(threads):
            thread._smsched_index = index  # type: ignore[attr-defined]
            thread.start()
        try:
            if self.options.seed_cycle:
                self._seed_cycle()
            else:
                self._loop(deadline)
        finally:
            for _ in threads:
                self.work.put(None)
            for thread in threads:
                thread.join(timeout=self.transport.read_timeout + self.transport.connect_timeout + 5)
            s.duration = time.perf_counter() - wall_start
            s.time_http = sum(w[0] for w in self.worker_stats)
            s.time_rate_limit = sum(w[1] for w in self.worker_stats)
            if self.fatal:
                s.status, s.message, s.exit_code = "config_error", self.fatal, ExitCode.ERROR
            elif self.unroutable and self._due_unroutable():
                s.message = "; ".join(self.unroutable.values())
                s.exit_code = ExitCode.ERROR
            for name in self.breaker_open:
                s.providers[name]["breaker"] = True
            self._record_finish()
        return s

    # ---- database steps ------------------------------------------------------------------
    def _record_start(self, alone: bool) -> int:
        mode = "seed-cycle" if self.options.seed_cycle else ("concurrent" if not alone else "exclusive")
        cursor = self.db.conn.execute(
            "INSERT INTO runs (pid, mode, status, started_at, clock_start) VALUES (?, ?, 'running', ?, ?)",
            (os.getpid(), mode, self.summary.started_at, self.summary.clock_start),
        )
        return cursor.lastrowid

    def _recover(self, alone: bool) -> dict:
        """Put back what dead runs left: claimed -> scheduled (never sent), sending -> unknown."""
        now = time.time()
        # Holding the exclusive lock proves no other dispatcher is alive: every orphan is stale.
        cutoff = float("inf") if alone else now
        orphans = self.db.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE state IN ('claimed', 'sending') AND lease_until < ?)"
            " OR EXISTS (SELECT 1 FROM runs WHERE status = 'running' AND id != ? AND ?)",
            (cutoff, self.summary.run_id, int(alone))).fetchone()[0]
        if not orphans:  # the usual case: one cheap look instead of a write transaction
            return {"claimed_to_scheduled": 0, "sending_to_unknown": 0}
        with transaction(self.db):
            back = self.db.conn.execute(
                "UPDATE messages SET state = 'scheduled', lease_until = NULL, claimed_by = NULL, updated_at = ?"
                " WHERE state = 'claimed' AND lease_until < ?", (now, cutoff)).rowcount
            unknown = self.db.conn.execute(
                "UPDATE messages SET state = 'unknown', lease_until = NULL,"
                " error = 'interrupted while sending: the provider may have it (smsched retry --unknown to resend)',"
                " updated_at = ? WHERE state = 'sending' AND lease_until < ?", (now, cutoff)).rowcount
            if alone:  # runs still marked running died without a word
                self.db.conn.execute("UPDATE runs SET status = 'crashed' WHERE status = 'running' AND id != ?",
                                     (self.summary.run_id,))
        return {"claimed_to_scheduled": back, "sending_to_unknown": unknown}

    def _channel_filter(self) -> tuple[str, list]:
        channels = sorted(self.routes)
        if len(channels) == 2:
            return "", []
        return f" AND channel IN ({','.join('?' * len(channels))})", channels

    _RETURNING = ("id, campaign_id, user_id, lead_id, phone, channel, body, params, tz, priority, seq,"
                  " scheduled_at, expires_at, attempts")

    def _claim(self, limit: int, now: float) -> list[_Message]:
        if not self.routes:
            return []
        channel_sql, channel_params = self._channel_filter()
        branches, params = [], []
        for priority in (0, 1, 2):
            branches.append(
                "SELECT * FROM (SELECT id, priority, scheduled_at / 60 AS minute, seq FROM messages"
                " WHERE state = 'scheduled' AND priority = ? AND scheduled_at / 60 <= ? AND scheduled_at <= ?"
                f"{channel_sql} ORDER BY scheduled_at / 60, seq LIMIT ?)")
            params += [priority, int(now) // 60, int(now), *channel_params, limit]
        sql = (
            f"UPDATE messages SET state = 'claimed', lease_until = ?, claimed_by = ?, updated_at = ?"
            f" WHERE id IN (SELECT id FROM ({' UNION ALL '.join(branches)}) ORDER BY priority, minute, seq LIMIT ?)"
            f" RETURNING {self._RETURNING}"
        )
        rows = self.db.conn.execute(sql, [time.time() + self.lease, self.run_tag, self.clock.now(), *params, limit]).fetchall()
        messages = [_Message(*row) for row in rows]
        messages.sort(key=lambda m: (m.priority, m.scheduled_at // 60, m.seq, m.id))
        return messages

    def _claim_campaign(self, campaign_id: int, limit: int) -> list[_Message]:
        now = self.clock.now()
        rows = self.db.conn.execute(
            "UPDATE messages SET state = 'claimed', lease_until = ?, claimed_by = ?, updated_at = ?"
            " WHERE id IN (SELECT id FROM messages WHERE campaign_id = ? AND state = 'scheduled'"
            " AND scheduled_at <= ? ORDER BY scheduled_at, seq LIMIT ?)"
            f" RETURNING {self._RETURNING}",
            (time.time() + self.lease, self.run_tag, now, campaign_id, int(now), limit)).fetchall()
        return sorted((_Message(*row) for row in rows), key=lambda m: (m.scheduled_at, m.seq))

    def _due_campaigns(self, limit: int | None) -> list[int]:
        channel_sql, channel_params = self._channel_filter()
        sql = ("SELECT campaign_id FROM messages WHERE state = 'scheduled' AND scheduled_at <= ?"
               f"{channel_sql} GROUP BY campaign_id ORDER BY min(priority), min(scheduled_at), campaign_id")
        params: list = [int(self.clock.now()), *channel_params]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [r[0] for r in self.db.conn.execute(sql, params)]

    def _next_due(self) -> float | None:
        branches = []
        for priority in (0, 1, 2):
            branches.append(
                "SELECT min(scheduled_at) AS t FROM messages WHERE state = 'scheduled' AND priority = {p}"
                " AND scheduled_at / 60 = (SELECT scheduled_at / 60 FROM messages WHERE state = 'scheduled'"
                " AND priority = {p} ORDER BY scheduled_at / 60 LIMIT 1)".format(p=priority))
        row = self.db.conn.execute(f"SELECT min(t) FROM ({' UNION ALL '.join(branches)})").fetchone()
        return row[0]

    def _due_unroutable(self) -> bool:
        channels = list(self.unroutable)
        row = self.db.conn.execute(
            f"SELECT count(*) FROM messages WHERE state = 'scheduled' AND scheduled_at <= ?"
            f" AND channel IN ({','.join('?' * len(channels))})", (int(self.clock.now()), *channels)).fetchone()
        return row[0] > 0

    def _load_campaigns(self, ids: set[int]) -> None:
        stale = time.monotonic() - self.campaigns_loaded_at > CAMPAIGN_CACHE_TTL_S
        wanted = ids if not stale else ids | set(self.campaigns)
        missing = [i for i in wanted if stale or i not in self.campaigns]
        if not missing:
            return
        for row in self.db.conn.execute(
            "SELECT c.id, c.name, c.status, c.quiet_hours, c.template, c.lang, u.name, u.sender, c.user_id"
            " FROM campaigns c JOIN users u ON u.id = c.user_id WHERE c.id IN (SELECT value FROM json_each(?))",
            (json.dumps(missing),),
        ):
            self.campaigns[row[0]] = {
                "name": row[1], "status": row[2], "window": quiet_hours.parse_window(row[3]),
                "template": row[4], "lang": row[5], "user": row[6], "sender": row[7], "user_id": row[8],
            }
        if stale:
            self.campaigns_loaded_at = time.monotonic()

    def _optouts_for(self, messages: list[_Message]) -> dict[str, set[int]]:
        scopes: dict[str, set[int]] = {}
        for phone, scope in self.db.conn.execute(
            "SELECT phone, scope FROM optouts WHERE phone IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted({m.phone for m in messages})),),
        ):
            scopes.setdefault(phone, set()).add(scope)
        return scopes

    def _fields_for(self, messages: list[_Message]) -> dict[int, dict]:
        ids = sorted({m.lead_id for m in messages if m.lead_id})
        if not ids:
            return {}
        return {row[0]: json.loads(row[1]) for row in self.db.conn.execute(
            "SELECT id, fields FROM leads WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))}

    _WRITE = (
        "WITH r AS (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS state,"
        " json_extract(value, '$[2]') AS sent_at, json_extract(value, '$[3]') AS provider,"
        " json_extract(value, '$[4]') AS provider_id, json_extract(value, '$[5]') AS error,"
        " json_extract(value, '$[6]') AS attempts, json_extract(value, '$[7]') AS scheduled_at,"
        " json_extract(value, '$[8]') AS lease FROM json_each(?))"
        " UPDATE messages SET state = r.state, sent_at = coalesce(r.sent_at, messages.sent_at),"
        " provider = coalesce(r.provider, messages.provider), provider_id = coalesce(r.provider_id, messages.provider_id),"
        " error = CASE WHEN r.state = 'sent' THEN NULL ELSE coalesce(r.error, messages.error) END,"
        " attempts = messages.attempts + r.attempts, scheduled_at = coalesce(r.scheduled_at, messages.scheduled_at),"
        " lease_until = r.lease, updated_at = ? FROM r WHERE messages.id = r.id"
    )

    def _write(self, rows: list[list]) -> None:
        """One statement: the previous group's outcomes and the next group's 'sending' marks."""
        if rows:
            self._timed(self.db.conn.execute, self._WRITE, (json.dumps(rows), self.clock.now()))

    # ---- deciding, before sending ----------------------------------------------------------
    def _screen(self, messages: list[_Message], records: list[list]) -> list[_Message]:
        """Drop what must not be sent now: opted out, expired, outside quiet hours, cancelled."""
        if not messages:
            return []
        self._timed(self._load_campaigns, {m.campaign_id for m in messages})
        scopes = self._timed(self._optouts_for, messages)
        now = self.clock.now()
        keep = []
        for m in messages:
            campaign = self.campaigns.get(m.campaign_id, {})
            self._tally(m, None)
            if campaign.get("status") == "cancelled":
                records.append(_row(m.id, "cancelled", error="campaign cancelled"))
                self.summary.cancelled += 1
            elif m.phone in scopes and (0 in scopes[m.phone] or m.user_id in scopes[m.phone]):
                records.append(_row(m.id, "suppressed", error="opted out"))
                self.summary.suppressed += 1
            elif now > m.expires_at:
                due = clock_lib.iso_utc(m.scheduled_at)
                records.append(_row(m.id, "expired", error=f"not sent within its validity (due {due})"))
                self.summary.expired += 1
            else:
                window = campaign.get("window")
                placed = int(now) if window is None or self._allowed_now(m.tz, window) else \
                    quiet_hours.place(int(now), m.tz, window)
                if placed > now:
                    if placed > m.expires_at:
                        records.append(_row(m.id, "expired", error="quiet hours until after its validity"))
                        self.summary.expired += 1
                    else:
                        records.append(_row(m.id, "scheduled", error="deferred: quiet hours", scheduled_at=placed))
                        self.summary.deferred += 1
                    continue
                m.provider = self.routes.get(m.channel, "")
                keep.append(m)
        return keep

    def _tally(self, m: _Message, key: str | None) -> None:
        entry = self.summary.per_campaign.setdefault(m.campaign_id, Counter())
        entry["claimed" if key is None else key] += 1

    # ---- the sending loop ----------------------------------------------------------------
    def _group_size(self) -> int:
        rate = sum(p.rate for p in self.providers.values()) or 100.0
        return int(min(200, max(8, rate * 0.5)))

    def _loop(self, deadline: float) -> None:
        s = self.summary
        group = self._group_size()
        total_rate = sum(p.rate for p in self.providers.values())
        # A claim holds at most ~10 s of sending, so claimed messages never wait long for a slot.
        claim_size = int(self.options.batch or min(int(self.config.dispatch("batch")), max(2 * group, int(total_rate * 10))))
        max_inflight = 2 * group
        pending: deque[_Message] = deque()
        records: list[list] = []
        inflight = 0
        claiming = True
        last_flush = time.monotonic()
        while True:
            if self.stop_event.is_set() or self.fatal:
                claiming = False
            if claiming and not pending and inflight < max_inflight:
                # What fell due by the end of the budget is drained even past it; nothing later.
                cutoff = min(self.clock.now(), deadline)
                claimed = self._timed(self._claim, claim_size, cutoff)
                if claimed:
                    s.claimed += len(claimed)
                    pending.extend(self._screen(claimed, records))
                    self.progress("batch", s, {"claimed": len(claimed)})
                elif self.clock.now() >= deadline:
                    claiming = False
                elif inflight == 0 and not records:
                    if not self._wait_for_due(deadline):
                        claiming = False
                    continue
            if not claiming and pending:
                # Stopping: what was claimed but not marked 'sending' goes back untouched.
                while pending:
                    m = pending.popleft()
                    records.append(_row(m.id, "scheduled"))
                    s.released += 1
            if self.breaker_open and pending:
                for m in [m for m in pending if m.provider in self.breaker_open]:
                    pending.remove(m)
                    records.append(_row(m.id, "scheduled"))
                    s.released += 1
            if claiming and not self.routes:
                claiming = False
            if pending and inflight + min(group, len(pending)) <= max_inflight:
                batch = [pending.popleft() for _ in range(min(group, len(pending)))]
                lease = time.time() + self.lease
                for m in batch:
                    m.marked_sending = True
                    records.append(_row(m.id, "sending", provider=m.provider, attempts=1, lease=lease))
                self._write(records)
                records, last_flush = [], time.monotonic()
                self._enqueue(batch)
                inflight += len(batch)
            got = self._collect(records, block=inflight > 0 and (not pending or inflight >= max_inflight))
            inflight -= got
            if got:
                self.progress("tick", s, {})  # the live display moves between claims too
            if records and (len(records) >= group or time.monotonic() - last_flush > 0.5 or (inflight == 0 and not pending)):
                self._write(records)
                records, last_flush = [], time.monotonic()
            if not claiming and not pending and inflight == 0:
                self._write(records)
                return

    def _wait_for_due(self, deadline: float) -> bool:
        """Sleep until the next message falls due inside the budget; False when none will."""
        next_due = self._timed(self._next_due)
        now = self.clock.now()
        if next_due is None or next_due > deadline:
            return False
        pause = max(0.0, next_due - now)
        # Wake in time for the due second, and often enough to notice signals and new work.
        pause = min(pause, 1.0, max(0.0, deadline - now))
        started = time.perf_counter()
        self.stop_event.wait(pause if pause > 0 else 0.05)
        self.summary.time_idle += time.perf_counter() - started
        return True

    def _seed_cycle(self) -> None:
        """The seed's loop: N campaigns × M phones per cycle, P at a time, a pause between batches."""
        s = self.summary
        per_campaign = self.options.max_per_campaign or 10**9
        parallel = max(1, self.options.parallel or self.workers)
        campaigns = self._timed(self._due_campaigns, self.options.max_campaigns)
        for start in range(0, len(campaigns), parallel):
            if self.stop_event.is_set() or self.fatal:
                break
            records: list[list] = []
            batch: list[_Message] = []
            for campaign_id in campaigns[start:start + parallel]:
                claimed = self._timed(self._claim_campaign, campaign_id, per_campaign)
                s.claimed += len(claimed)
                batch += self._screen(claimed, records)
            lease = time.time() + self.lease
            for m in batch:
                m.marked_sending = True
                records.append(_row(m.id, "sending", provider=m.provider, attempts=1, lease=lease))
            self._write(records)
            records = []
            self._enqueue(batch)
            remaining = len(batch)
            while remaining:
                remaining -= self._collect(records, block=True)
            self._write(records)
            self.progress("batch", s, {"claimed": len(batch)})
            if self.options.batch_delay and start + parallel < len(campaigns):
                started = time.perf_counter()
                self.stop_event.wait(self.options.batch_delay)
                s.time_idle += time.perf_counter() - started

    def _enqueue(self, batch: list[_Message]) -> None:
        needs_fields = any(self.providers[m.provider].name == "webhook" for m in batch)
        fields = self._timed(self._fields_for, batch) if needs_fields else {}
        for m in batch:
            campaign = self.campaigns.get(m.campaign_id, {})
            out = OutMessage(
                id=m.id, phone=m.phone, channel=m.channel, body=m.body,
                params=json.loads(m.params) if m.params else None,
                template=campaign.get("template"), lang=campaign.get("lang"), campaign_id=m.campaign_id,
                user=campaign.get("user"), sender=campaign.get("sender"), fields=fields.get(m.lead_id, {}),
            )
            self.work.put((m, out))

    # ---- workers -------------------------------------------------------------------------
    def _worker(self) -> None:
        index = threading.current_thread()._smsched_index  # type: ignore[attr-defined]
        stats = self.worker_stats[index]
        while True:
            item = self.work.get()
            if item is None:
                return
            m, out = item
            provider = self.providers[m.provider]
            if self.fatal or provider.name in self.breaker_open:
                self.results.put((m, None, 0.0))
                continue
            limiter = self.limits.for_key(provider.name, "", provider.rate, provider.burst)
            stats[1] += limiter.acquire()
            if provider.sender_rate:
                sender_limiter = self.limits.for_key(provider.name, provider.sender_for(out), provider.sender_rate, 1)
                stats[1] += sender_limiter.acquire()
            # Quiet hours once more at the very moment of sending: a claim made at 21:59:59
            # must not go out at 22:00:01.
            window = self.campaigns.get(m.campaign_id, {}).get("window")
            if window is not None and not self._allowed_now(m.tz, window):
                self.results.put((m, DEFERRED, self.clock.now()))
                continue
            request = provider.build(out)
            request.headers["X-Smsched-Message-Id"] = str(m.id)
            started = time.perf_counter()
            try:
                response = self.transport.send(request)
                outcome = provider.classify(response.status, response.headers, response.body)
            except NotSent as exc:
                outcome = Outcome(RETRY, code="network", reason=f"not sent: {exc}")
            except MaybeSent as exc:
                outcome = Outcome(UNKNOWN, code="network", reason=f"no answer: {exc}")
            except Exception as exc:  # noqa: BLE001 - a bug must not lose the outcome of a sent request
                outcome = Outcome(UNKNOWN, code="error", reason=f"{type(exc).__name__}: {exc}")
            stats[0] += time.perf_counter() - started
            if outcome.kind == RETRY and outcome.code in ("429", "20429", "130429"):
                limiter.slow_down()
            elif outcome.kind == ACCEPTED:
                limiter.speed_up()
            self._count_for_breaker(provider.name, outcome)
            self.results.put((m, outcome, self.clock.now()))

    def _count_for_breaker(self, provider: str, outcome: Outcome) -> None:
        """K consecutive 'retry later' answers open the breaker, seen at once by every worker."""
        later = outcome.kind == RETRY or (outcome.kind == UNKNOWN and self.ambiguous_retry)
        with self.breaker_lock:
            if later:
                self.breaker[provider] += 1
                if self.breaker[provider] >= self.breaker_threshold:
                    self.breaker_open.add(provider)
            elif outcome.kind != CONFIG:
                self.breaker[provider] = 0

    def _allowed_now(self, tz: str, window) -> bool:
        now = self.clock.now()
        key = (tz, int(now) // 60)
        minute = self._local_minutes.get(key)
        if minute is None:
            local = clock_lib.local_datetime(now, tz)
            minute = self._local_minutes[key] = local.hour * 60 + local.minute
        return quiet_hours.allows(window, minute)

    def _collect(self, records: list[list], block: bool) -> int:
        """Turn finished sends into records; returns how many came back."""
        got = 0
        try:
            item = self.results.get(timeout=0.25) if block else self.results.get_nowait()
        except queue.Empty:
            return 0
        while True:
            got += 1
            self._outcome(*item, records)
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                return got

    def _outcome(self, m: _Message, outcome: Outcome | None, finished: float, records: list[list]) -> None:
        s = self.summary
        if outcome is None or outcome.kind == CONFIG:
            # Not sent (breaker open, run stopping) or refused for our credentials: untouched.
            records.append(_row(m.id, "scheduled", attempts=-1))
            s.released += 1
            if outcome is not None and not self.fatal:
                self.fatal = (f"{m.provider} refused our configuration ({outcome.error}); stopping with messages "
                              "left scheduled — check the credentials with `smsched config check`")
            return
        if outcome is DEFERRED:
            placed = quiet_hours.place(int(finished), m.tz, self.campaigns.get(m.campaign_id, {}).get("window"))
            if placed > m.expires_at:
                records.append(_row(m.id, "expired", error="quiet hours until after its validity", attempts=-1))
                s.expired += 1
            else:
                records.append(_row(m.id, "scheduled", error="deferred: quiet hours", attempts=-1,
                                    scheduled_at=max(placed, int(finished) + 1)))
                s.deferred += 1
            return
        provider_stats = s.providers[m.provider]
        kind = outcome.kind
        if kind == UNKNOWN and self.ambiguous_retry:
            kind = RETRY
        if m.provider in self.breaker_open and m.provider in self.routes.values():
            # Claim nothing more for its channels in this run.
            self.routes = {c: p for c, p in self.routes.items() if p != m.provider}
            self.progress("breaker", s, {"provider": m.provider, "after": self.breaker_threshold})
        attempts = m.attempts + 1
        if kind == ACCEPTED:
            records.append(_row(m.id, "sent", sent_at=finished, provider=m.provider, provider_id=outcome.provider_id))
            s.sent += 1
            provider_stats["sent"] += 1
            s.lags.append(max(0.0, finished - m.scheduled_at))
            self._tally(m, "sent")
        elif kind == RETRY and attempts < self.max_attempts:
            delay = min(self.retry_cap, self.retry_base * (2 ** (attempts - 1)))
            delay = max(delay * (0.8 + 0.4 * self.random.random()), outcome.retry_after or 0)
            records.append(_row(m.id, "scheduled", provider=m.provider, error=outcome.error,
                                scheduled_at=int(finished + delay) + 1))
            s.retried += 1
            s.failures[outcome.error or "retry"] += 1
            self._tally(m, "retried")
        elif kind == RETRY:
            records.append(_row(m.id, "failed", provider=m.provider,
                                error=f"gave up after {attempts} attempts: {outcome.error}"))
            s.failed += 1
            s.failures[outcome.error or "retry"] += 1
            self._tally(m, "failed")
        elif kind == PERMANENT:
            records.append(_row(m.id, "failed", provider=m.provider, error=outcome.error))
            s.failed += 1
            s.failures[outcome.error or "failed"] += 1
            self._tally(m, "failed")
            if outcome.opt_out:
                self._opt_out(m, outcome)
        else:
            records.append(_row(m.id, "unknown", provider=m.provider, error=outcome.error))
            s.unknown += 1
            s.failures[outcome.error or "unknown"] += 1
            self._tally(m, "unknown")

    def _opt_out(self, m: _Message, outcome: Outcome) -> None:
        # A STOP blocks the sender it was sent to: the user's own sender, else the shared one (everyone).
        campaign = self.campaigns.get(m.campaign_id, {})
        scope = m.user_id if campaign.get("sender") else 0

        def apply():
            optouts_lib._add_normalized(self.db, [m.phone], scope, f"provider {m.provider}: {outcome.error}",
                                        f"provider:{m.provider}", self.clock.now())

        self._timed(apply)

    # ---- bookkeeping ---------------------------------------------------------------------
    def _record_finish(self) -> None:
        # Times in `runs` follow the run's clock (shifted by --now), so stats and check agree with it.
        s = self.summary
        lag = s.lag()
        split = s.time_split()
        name, _ = s.bottleneck()
        data = s.as_dict()
        self.db.conn.execute(
            "UPDATE runs SET status = ?, finished_at = ?, claimed = ?, sent = ?, retried = ?, failed = ?, unknown = ?,"
            " suppressed = ?, expired = ?, deferred = ?, duration = ?, rate = ?, lag_p50 = ?, lag_p95 = ?, lag_p99 = ?,"
            " lag_max = ?, time_db = ?, time_provider = ?, time_rate_limit = ?, time_idle = ?, bottleneck = ?, summary = ?"
            " WHERE id = ?",
            (s.status, s.clock_start + s.duration, s.claimed, s.sent, s.retried, s.failed, s.unknown, s.suppressed, s.expired,
             s.deferred, s.duration, s.rate, lag["p50"], lag["p95"], lag["p99"], lag["max"], split["database"],
             split["provider"], split["rate_limit"], split["idle"], name, json.dumps(data), s.run_id),
        )


def dispatch(db: sqlite_utils.Database, db_path: str, config: Config, options: DispatchOptions,
             progress: Progress | None = None) -> RunSummary:
    return Dispatcher(db, db_path, config, options, progress).run()


def preview_due(db: sqlite_utils.Database, *, now: float | None = None, limit: int = 5) -> dict:
    """What a dispatch would send now: counts per campaign and the first messages. Changes nothing."""
    at = int(now if now is not None else time.time())
    per_campaign = [
        {"campaign_id": r[0], "campaign": r[1], "user": r[2], "due": r[3], "oldest_due": clock_lib.iso_utc(r[4])}
        for r in db.conn.execute(
            "SELECT m.campaign_id, c.name, u.name, count(*), min(m.scheduled_at) FROM messages m"
            " JOIN campaigns c ON c.id = m.campaign_id JOIN users u ON u.id = m.user_id"
            " WHERE m.state = 'scheduled' AND m.scheduled_at <= ? GROUP BY m.campaign_id"
            " ORDER BY min(m.priority), min(m.scheduled_at)", (at,))
    ]
    first = [
        {"id": r[0], "campaign_id": r[1], "phone": r[2], "channel": r[3], "body": r[4],
         "scheduled_at": clock_lib.iso_utc(r[5])}
        for r in db.conn.execute(
            "SELECT id, campaign_id, phone, channel, body, scheduled_at FROM messages WHERE state = 'scheduled'"
            " AND scheduled_at <= ? ORDER BY priority, scheduled_at / 60, seq LIMIT ?", (at, limit))
    ]
    return {"now": clock_lib.iso_utc(at), "due": sum(c["due"] for c in per_campaign),
            "campaigns": per_campaign, "first": first}
