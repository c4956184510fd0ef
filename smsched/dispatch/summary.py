"""What a dispatch run did, where its time went, and its record in the ``runs`` table.

``stats`` and ``check`` read runs through this module (never through the engine).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field

import sqlite_utils

from smsched import clock as clock_lib
from smsched.errors import ExitCode

SHORT_RUN_SECONDS = 1.0


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
    throttled: int = 0
    held: int = 0
    lost_claims: int = 0
    recovered: dict = field(default_factory=dict)
    reconciled: dict | None = None
    materialised: int = 0
    lags: list = field(default_factory=list)
    time_db: float = 0.0
    time_claim: float = 0.0  # of time_db: the claim statements
    time_http: float = 0.0
    time_rate_limit: float = 0.0
    time_idle: float = 0.0
    time_cpu: float | None = None
    workers: int = 0
    dispatchers: int = 1  # sharing the database (and each provider's rate) at the last look
    sql_statements: int = 0
    commits: int = 0
    per_campaign: dict = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)
    providers: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.duration if self.duration > 0 else 0.0

    @property
    def handled(self) -> int:
        return self.sent + self.failed + self.unknown + self.retried

    def lag(self) -> dict:
        return lag_percentiles(self.lags)

    def time_split(self) -> dict:
        workers = max(1, self.workers)
        return {
            "database": round(self.time_db, 3),
            "provider": round(self.time_http / workers, 3),
            "rate_limit": round(self.time_rate_limit / workers, 3),
            "idle": round(self.time_idle, 3),
            "cpu": round(self.time_cpu, 3) if self.time_cpu is not None else None,
        }

    def bottleneck(self) -> tuple[str, str]:
        return name_bottleneck(self.duration, self.time_split(), self.handled, throttled=self.throttled,
                               providers=self.providers)

    def as_dict(self) -> dict:
        name, words = self.bottleneck()
        return {
            "run_id": self.run_id, "status": self.status, "message": self.message,
            "started_at": clock_lib.iso_utc(self.started_at), "clock": clock_lib.iso_utc(self.clock_start),
            "claimed": self.claimed, "sent": self.sent, "retried": self.retried, "failed": self.failed,
            "unknown": self.unknown, "suppressed": self.suppressed, "expired": self.expired,
            "deferred": self.deferred, "released": self.released, "cancelled": self.cancelled,
            "throttled": self.throttled, "held": self.held, "lost_claims": self.lost_claims,
            "recovered": self.recovered, "reconciled": self.reconciled, "materialised": self.materialised,
            "duration": round(self.duration, 3), "messages_per_second": round(self.rate, 1),
            "lag": self.lag(), "time": self.time_split(), "bottleneck": name, "bottleneck_detail": words,
            "claim_seconds": round(self.time_claim, 3),
            "workers": self.workers, "dispatchers": self.dispatchers, "sql_statements": self.sql_statements,
            "commits": self.commits,
            "sql_statements_per_1000": round(1000 * self.sql_statements / self.sent, 1) if self.sent else None,
            "commits_per_1000": round(1000 * self.commits / self.sent, 1) if self.sent else None,
            "failures": dict(self.failures.most_common(10)), "providers": self.providers,
        }


def lag_percentiles(lags: list[float]) -> dict:
    if not lags:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    ordered = sorted(lags)

    def pick(q: float) -> float:  # nearest rank: the smallest value with at least q of them at or below it
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": round(ordered[-1], 3), "count": len(ordered)}


def name_bottleneck(duration: float, split: dict, handled: int, *, throttled: int = 0,
                    providers: dict | None = None) -> tuple[str, str]:
    """The limit a run hit, named from measured facts, with advice that is safe to follow.

    The facts: wall time; the process's CPU time (pinned to one core, CPU ÷ wall is how busy
    that core was); how long workers waited for the rate limiter; how long they waited on the
    provider; database time; time spent idle waiting for messages to fall due.
    """
    if handled == 0:
        return "idle", "nothing was due"
    if duration < SHORT_RUN_SECONDS:
        return "none", f"none: a short run ({handled} message(s) in {duration:.2f}s) is too short to name a limit"
    share = {k: (v or 0.0) / duration for k, v in split.items()}
    used = {name: p for name, p in (providers or {}).items() if p.get("sent") or p.get("throttled")} or providers or {}
    rates = ", ".join(f"{name} {p.get('rate'):g}/s" for name, p in used.items() if p.get("rate"))
    if share["rate_limit"] >= 0.3 or throttled:
        words = (f"provider rate limit: workers waited for the rate limit ({rates or 'see [providers]'} configured) "
                 f"{share['rate_limit']:.0%} of the run")
        if throttled:
            adapted = ", ".join(f"{name} {p['adapted_rate']:g}/s" for name, p in used.items() if p.get("adapted_rate"))
            words += (f"; the provider throttled {throttled} request(s): it accepts less than the configured rate, "
                      f"and sending adapted to what it accepts{f' ({adapted} at the end)' if adapted else ''}")
        return "rate_limit", words + (" — raise the rate only as far as your provider account allows, or add "
                                      "senders; a second dispatcher would not send faster")
    if share["idle"] >= 0.5:
        return "idle", f"idle: {share['idle']:.0%} of the run waited for messages to fall due (capacity to spare)"
    if share.get("cpu", 0.0) >= 0.8:
        return "cpu", (f"client CPU: this process kept one core {min(1.0, share['cpu']):.0%} busy, below the "
                       f"configured rate ({rates or 'see [providers]'}) — a second `smsched dispatch --concurrent` "
                       "on another core adds throughput; each process applies the rate on its own, so give each a "
                       "share of it if it is your provider's limit")
    if share["provider"] >= 0.5:
        return "provider", (f"provider latency: workers spent {share['provider']:.0%} of the run waiting on HTTP "
                            "— add --workers if the provider allows more concurrent requests")
    if share["database"] >= 0.3:
        return "database", (f"database: {share['database']:.0%} of the run was spent in the database "
                            "— check the disk and other writers")
    parts = ", ".join(f"{k} {v:.0%}" for k, v in share.items())
    return "mixed", f"no single limit: {parts} of the run"


# ---- the run record --------------------------------------------------------------------


def record_start(db: sqlite_utils.Database, summary: RunSummary, mode: str, owner: str | None = None) -> int:
    return db.conn.execute(
        "INSERT INTO runs (pid, mode, status, started_at, clock_start, owner) VALUES (?, ?, 'running', ?, ?, ?)"
        " RETURNING id", (os.getpid(), mode, summary.started_at, summary.clock_start, owner)).fetchone()[0]


def mark_crashed(db: sqlite_utils.Database, current_run: int | None, *, alone: bool) -> int:
    """Runs still marked running died without a word: all of them, for a run alone (it holds the
    exclusive lock); on a shared database, those whose dispatcher no longer holds its lock."""
    dead = "" if alone else f" AND owner IS NOT NULL AND NOT {db.dialect.owner_alive('owner')}"
    return db.conn.execute(f"UPDATE runs SET status = 'crashed' WHERE status = 'running' AND id IS DISTINCT FROM ?{dead}",
                           (current_run,)).rowcount


def record_finish(db: sqlite_utils.Database, s: RunSummary) -> None:
    # Times in `runs` follow the run's clock (shifted by --now), so stats and check agree with it.
    lag = s.lag()
    split = s.time_split()
    name, words = s.bottleneck()
    db.conn.execute(
        "UPDATE runs SET status = ?, finished_at = ?, claimed = ?, sent = ?, retried = ?, failed = ?, unknown = ?,"
        " suppressed = ?, expired = ?, deferred = ?, duration = ?, rate = ?, lag_p50 = ?, lag_p95 = ?, lag_p99 = ?,"
        " lag_max = ?, time_db = ?, time_provider = ?, time_rate_limit = ?, time_idle = ?, time_cpu = ?, throttled = ?,"
        " bottleneck = ?, bottleneck_detail = ?, summary = ? WHERE id = ?",
        (s.status, s.clock_start + s.duration, s.claimed, s.sent, s.retried, s.failed, s.unknown, s.suppressed,
         s.expired, s.deferred, s.duration, s.rate, lag["p50"], lag["p95"], lag["p99"], lag["max"], split["database"],
         split["provider"], split["rate_limit"], split["idle"], split["cpu"], s.throttled, name, words,
         json.dumps(s.as_dict()), s.run_id),
    )
