"""Is it working, and will today's peak fit? Live statistics, a Nagios-style check, Prometheus
metrics and the capacity plan, all computed from the database at a given instant."""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta

import sqlite_utils

from smsched import clock
from smsched.dispatch.summary import lag_percentiles, name_bottleneck
from smsched.errors import UsageError
from smsched.outfiles import AtomicFile, check_destination
from smsched.states import ALL as MESSAGE_STATES

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SEED_CAPACITY_PER_HOUR = 150_000  # 25 campaigns x 100 phones per 60 s cycle
SEED_DISTRIBUTION = "08-12:40,12-18:35,18-22:25"


def _scope(user: dict | None, campaign: int | None, alias: str = "") -> tuple[str, list]:
    where, params = [], []
    if user is not None:
        where.append(f"{alias}user_id = ?")
        params.append(user["id"])
    if campaign is not None:
        where.append(f"{alias}campaign_id = ?")
        params.append(campaign)
    return ("".join(f" AND {w}" for w in where), params)


def recent_runs(db: sqlite_utils.Database, now: float, limit: int = 10) -> list[dict]:
    rows = db.conn.execute(
        "SELECT id, mode, status, clock_start, finished_at, duration, claimed, sent, retried, failed, unknown,"
        " rate, lag_p50, lag_p99, lag_max, time_db, time_provider, time_rate_limit, time_idle, bottleneck,"
        " time_cpu, throttled, bottleneck_detail"
        " FROM runs WHERE clock_start <= ? ORDER BY clock_start DESC, id DESC LIMIT ?", (now, limit)).fetchall()
    runs = []
    for r in rows:
        split = {"database": r[15] or 0.0, "provider": r[16] or 0.0, "rate_limit": r[17] or 0.0, "idle": r[18] or 0.0,
                 "cpu": r[20]}
        name, words = name_bottleneck(r[5] or 0.0, split, (r[7] or 0) + (r[9] or 0) + (r[10] or 0) + (r[8] or 0),
                                      throttled=r[21] or 0)
        words = r[22] or words
        runs.append({
            "id": r[0], "mode": r[1], "status": r[2], "started_at": clock.iso_utc(r[3]), "finished_at": clock.iso_utc(r[4]),
            "started": r[3], "duration": r[5], "claimed": r[6], "sent": r[7], "retried": r[8], "failed": r[9],
            "unknown": r[10], "messages_per_second": r[11], "lag_p50": r[12], "lag_p99": r[13], "lag_max": r[14],
            "time": split, "bottleneck": r[19] or name, "bottleneck_detail": words,
        })
    return runs


def collect(db: sqlite_utils.Database, *, now: float, user: dict | None = None, campaign: int | None = None,
            since: float = 3600) -> dict:
    scope_sql, scope_params = _scope(user, campaign)
    counts = {state: 0 for state in MESSAGE_STATES}
    for state, count in db.conn.execute(f"SELECT state, count(*) FROM messages WHERE true{scope_sql} GROUP BY state", scope_params):
        counts[state] = count
    backlog, oldest = db.conn.execute(
        f"SELECT count(*), min(scheduled_at) FROM messages WHERE state = 'scheduled' AND scheduled_at <= ?{scope_sql}",
        [int(now), *scope_params]).fetchone()
    start = now - since
    lags, per_minute = [], [0] * max(1, math.ceil(since / 60))
    for sent_at, scheduled_at in db.conn.execute(
        f"SELECT sent_at, scheduled_at FROM messages WHERE sent_at > ? AND sent_at <= ? AND state = 'sent'{scope_sql}",
        [start, now, *scope_params],
    ):
        lags.append(max(0.0, sent_at - scheduled_at))
        index = min(len(per_minute) - 1, int((sent_at - start) // 60))
        per_minute[index] += 1
    failures = [
        {"reason": r[0] or "(none)", "state": r[1], "count": r[2]}
        for r in db.conn.execute(
            f"SELECT error, state, count(*) FROM messages WHERE state IN ('failed', 'unknown') AND updated_at > ?"
            f" AND updated_at <= ?{scope_sql} GROUP BY error, state ORDER BY count(*) DESC, coalesce(error, ''), state"
            " LIMIT 5",
            [start, now, *scope_params])
    ]
    failed_window = sum(f["count"] for f in failures if f["state"] == "failed")
    busiest = [
        {"user": r[0], "sent": r[1], "due": r[2]}
        for r in db.conn.execute(
            "SELECT name, sent, due FROM (SELECT u.name AS name,"
            " sum(CASE WHEN m.state = 'sent' AND m.sent_at > ? THEN 1 ELSE 0 END) AS sent,"
            " sum(CASE WHEN m.state = 'scheduled' AND m.scheduled_at <= ? THEN 1 ELSE 0 END) AS due"
            f" FROM messages m JOIN users u ON u.id = m.user_id WHERE ((m.sent_at > ? AND m.sent_at <= ?)"
            f" OR (m.state = 'scheduled' AND m.scheduled_at <= ?)){_scope(user, campaign, 'm.')[0]}"
            " GROUP BY m.user_id, u.name) AS busy ORDER BY sent + due DESC, name LIMIT 5",
            [start, int(now), start, now, int(now), *scope_params])
    ]
    runs = recent_runs(db, now)
    sent_window = len(lags)
    return {
        "delivery": delivery(db, start, now, scope_sql, scope_params),
        "now": clock.iso_utc(now),
        "since_seconds": since,
        "messages": counts,
        "total": sum(counts.values()),
        "due_backlog": backlog,
        "oldest_due_age_seconds": round(max(0.0, now - oldest), 3) if oldest is not None else 0,
        "sent_in_window": sent_window,
        "sent_per_minute": per_minute,
        "failure_rate": round(100.0 * failed_window / (sent_window + failed_window), 3) if sent_window + failed_window else 0.0,
        "lag_seconds": lag_percentiles(lags),
        "runs": [{k: v for k, v in r.items() if k != "started"} for r in runs],
        "failures": failures,
        "busiest_users": busiest,
        "bottleneck": runs[0]["bottleneck_detail"] if runs else None,
    }


DELIVERY_STATES = ("sent", "delivered", "read", "undelivered", "failed")


def delivery(db: sqlite_utils.Database, start: float, now: float, scope_sql: str = "", scope_params=()) -> dict:
    """What receipts said of the messages sent in the window: counts per delivery state, how long
    delivery took (median), how many of the finished ones failed; overall and per campaign."""
    counts = {state: 0 for state in DELIVERY_STATES} | {"no_receipt": 0}
    per_campaign: dict[int, dict] = {}
    delays: dict[int | None, list[float]] = {None: []}
    for campaign_id, state, count, in db.conn.execute(
            "SELECT campaign_id, coalesce(delivery, 'no_receipt'), count(*) FROM messages WHERE state = 'sent'"
            f" AND sent_at > ? AND sent_at <= ?{scope_sql} GROUP BY campaign_id, 2", [start, now, *scope_params]):
        counts[state] = counts.get(state, 0) + count
        entry = per_campaign.setdefault(campaign_id, {"campaign_id": campaign_id, "counts": {}})
        entry["counts"][state] = count
    for campaign_id, seconds in db.conn.execute(
            "SELECT campaign_id, delivered_at - sent_at FROM messages WHERE state = 'sent' AND delivered_at IS NOT NULL"
            f" AND sent_at > ? AND sent_at <= ?{scope_sql}", [start, now, *scope_params]):
        delays[None].append(max(0.0, seconds))
        delays.setdefault(campaign_id, []).append(max(0.0, seconds))
    for campaign_id, entry in per_campaign.items():
        entry["median_seconds_to_delivery"] = _median(delays.get(campaign_id, []))
        entry["undelivered_percent"] = _undelivered(entry["counts"])
    return {"counts": counts, "median_seconds_to_delivery": _median(delays[None]),
            "undelivered_percent": _undelivered(counts),
            "per_campaign": sorted(per_campaign.values(), key=lambda e: -sum(e["counts"].values()))[:20]}


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    return round(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2, 3)


def _undelivered(counts: dict) -> float | None:
    """Failed or undelivered, of the messages whose delivery is settled (a final receipt came)."""
    bad = counts.get("undelivered", 0) + counts.get("failed", 0)
    settled = bad + counts.get("delivered", 0) + counts.get("read", 0)
    return round(100.0 * bad / settled, 3) if settled else None


def sparkline(values: list[int]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    top = max(values) if values else 0
    if top == 0:
        return bars[0] * len(values)
    return "".join(bars[min(7, int(v * 7 / top + 0.999))] if v else " " for v in values)


# ---- Prometheus --------------------------------------------------------------------------


def prometheus_text(data: dict) -> str:
    lines = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float | None]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is not None:
                lines.append(f"{name}{labels} {_number(value)}")

    family("smsched_messages", "gauge", "Messages by state.",
           [(f'{{state="{s}"}}', n) for s, n in data["messages"].items()])
    family("smsched_due_backlog", "gauge", "Scheduled messages already due.", [("", data["due_backlog"])])
    family("smsched_oldest_due_age_seconds", "gauge", "Age of the oldest due message.", [("", data["oldest_due_age_seconds"])])
    lag = data["lag_seconds"]
    family("smsched_dispatch_lag_seconds", "gauge", "Sent minus scheduled time over the window, by quantile.",
           [(f'{{quantile="{q}"}}', lag[k]) for q, k in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"), ("1", "max"))])
    family("smsched_sent_window", "gauge", "Messages sent in the stats window.", [("", data["sent_in_window"])])
    family("smsched_failure_rate_percent", "gauge", "Failed / (sent + failed) in the window.", [("", data["failure_rate"])])
    receipts = data["delivery"]
    family("smsched_delivery", "gauge", "Messages sent in the window, by what their delivery receipts said.",
           [(f'{{state="{s}"}}', n) for s, n in receipts["counts"].items()])
    family("smsched_delivery_median_seconds", "gauge", "Median time from sent to delivered, in the window.",
           [("", receipts["median_seconds_to_delivery"])])
    family("smsched_undelivered_percent", "gauge", "Failed or undelivered, of the settled deliveries in the window.",
           [("", receipts["undelivered_percent"])])
    last = data["runs"][0] if data["runs"] else None
    if last:
        finished = _parse_iso(last["finished_at"]) or _parse_iso(last["started_at"])
        family("smsched_last_run_timestamp_seconds", "gauge", "When the last dispatch run finished.", [("", finished)])
        family("smsched_last_run_duration_seconds", "gauge", "How long the last dispatch run took.", [("", last["duration"])])
        family("smsched_last_run_sent", "gauge", "Messages the last dispatch run sent.", [("", last["sent"])])
        family("smsched_last_run_messages_per_second", "gauge", "Throughput of the last dispatch run.",
               [("", last["messages_per_second"])])
        family("smsched_last_run_time_seconds", "gauge", "Where the last run's time went.",
               [(f'{{part="{k}"}}', v) for k, v in last["time"].items()])
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def write_prometheus(path: str, data: dict) -> None:
    """Atomically: node_exporter must never read half a file."""
    out = AtomicFile(check_destination(path, what="--prometheus"))
    try:
        out.file.write(prometheus_text(data))
        out.keep()
    except BaseException:
        out.discard()
        raise


# ---- the health check --------------------------------------------------------------------


def check(db: sqlite_utils.Database, *, now: float, max_lag: float = 60, max_backlog_age: float = 300,
          max_failure_rate: float = 5.0, max_unknown: int = 0, max_run_age: float = 180,
          max_rate_limited: float = 600, since: float = 3600, max_undelivered: float | None = None) -> tuple[int, str]:
    data = collect(db, now=now, since=since)
    runs = recent_runs(db, now, limit=50)
    status, problems = OK, []

    def raise_to(level: int, text: str) -> None:
        nonlocal status
        status = max(status, level)
        problems.append(text)

    last_run_age = None
    if runs:
        last = runs[0]
        last_end = (_parse_iso(last["finished_at"]) or last["started"])
        last_run_age = max(0.0, now - last_end)
    pending = data["messages"]["scheduled"] + data["messages"]["claimed"] + data["messages"]["sending"]
    if runs and last_run_age > max_run_age and pending:
        raise_to(CRITICAL if last_run_age > 2 * max_run_age else WARNING,
                 f"dispatch last ran {last_run_age:.0f}s ago (limit {max_run_age:.0f}s): is cron running it?")
    elif not runs and data["due_backlog"]:
        raise_to(CRITICAL, "dispatch has never run and messages are due: add it to cron (see crontab.example)")
    elif not runs:
        # A typo in --db or SMSCHED_DB looks like this too: never report it as healthy.
        raise_to(WARNING, "dispatch has never run on this database: add it to cron (see crontab.example), "
                          "or check --db / SMSCHED_DB")
    age = data["oldest_due_age_seconds"]
    if age > max_backlog_age:
        raise_to(CRITICAL if age > 2 * max_backlog_age else WARNING,
                 f"oldest due message waits {age:.0f}s (limit {max_backlog_age:.0f}s), backlog {data['due_backlog']}")
    p99 = data["lag_seconds"]["p99"]
    if p99 is not None and p99 > max_lag:
        raise_to(CRITICAL if p99 > 2 * max_lag else WARNING, f"lag p99 {p99:.1f}s (limit {max_lag:.0f}s)")
    rate = data["failure_rate"]
    if rate > max_failure_rate:
        raise_to(CRITICAL if rate > 2 * max_failure_rate else WARNING,
                 f"failure rate {rate:.1f}% (limit {max_failure_rate:g}%)")
    unknown = data["messages"]["unknown"]
    if unknown > max_unknown:
        raise_to(WARNING, f"{unknown} message(s) in unknown state (decide: smsched retry --unknown)")
    undelivered = data["delivery"]["undelivered_percent"]
    if max_undelivered is not None and undelivered is not None and undelivered > max_undelivered:
        raise_to(CRITICAL if undelivered > 2 * max_undelivered else WARNING,
                 f"{undelivered:.1f}% of settled deliveries failed (limit {max_undelivered:g}%)")
    limited = 0.0
    for run in runs:
        if run["bottleneck"] != "rate_limit":
            break
        limited += run["duration"] or 0.0
    if limited > max_rate_limited:
        raise_to(WARNING, f"the provider rate limit has been the bottleneck for {limited:.0f}s of runs "
                          "— raise the rate or add senders")
    if not problems:
        summary = (f"{data['sent_in_window']} sent in the last {since / 60:.0f} min, backlog {data['due_backlog']}, "
                   f"lag p99 {p99 if p99 is not None else 0:.1f}s")
        if last_run_age is not None:
            summary += f", last run {last_run_age:.0f}s ago"
    else:
        summary = "; ".join(problems)
    perf = {
        "backlog": data["due_backlog"],
        "oldest_due_age": f"{age:g}s;{max_backlog_age:g};{2 * max_backlog_age:g}",
        "lag_p99": f"{p99 if p99 is not None else 0:g}s;{max_lag:g};{2 * max_lag:g}",
        "failure_rate": f"{rate}%;{max_failure_rate:g};{2 * max_failure_rate:g}",
        "unknown": f"{unknown};{max_unknown}",
        "sent": data["sent_in_window"],
        "last_run_age": f"{last_run_age:.0f}s;{max_run_age:g};{2 * max_run_age:g}" if last_run_age is not None else "U",
    }
    if max_undelivered is not None:
        perf["undelivered"] = (f"{undelivered if undelivered is not None else 0:g}%;{max_undelivered:g};{2 * max_undelivered:g}")
    line = f"SMSCHED {STATUS_NAMES[status]} - {summary} | " + " ".join(f"{k}={v}" for k, v in perf.items())
    return status, line


# ---- capacity plan -----------------------------------------------------------------------


def parse_distribution(text: str) -> list[tuple[int, int, float]]:
    """'08-12:40,12-18:35,18-22:25' -> [(8, 12, 40.0), ...] (hours, share %)."""
    result = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            hours, share = part.split(":")
            start, end = (int(h) for h in hours.split("-"))
            value = float(share)
        except ValueError:
            raise UsageError(f"invalid --distribution part {part!r}: write HH-HH:PERCENT, e.g. 08-12:40") from None
        if not (0 <= start < end <= 24) or value < 0:
            raise UsageError(f"invalid --distribution part {part!r}: hours 0-24, start before end")
        result.append((start, end, value))
    total = sum(v for _, _, v in result)
    if not result or abs(total - 100) > 0.5:
        raise UsageError(f"--distribution shares add up to {total:g}%, not 100%")
    return result


def measured_rate(db: sqlite_utils.Database, now: float) -> float | None:
    """Throughput of recent busy runs (median of runs that sent at least 100 messages)."""
    rates = sorted(r[0] for r in db.conn.execute(
        "SELECT rate FROM runs WHERE sent >= 100 AND rate > 0 AND clock_start <= ? ORDER BY clock_start DESC LIMIT 20",
        (now,)))
    return rates[len(rates) // 2] if rates else None


MAX_SIMULATED_USERS = 10_000_000
MAX_SIMULATED_LEADS = 1_000_000


def plan(db: sqlite_utils.Database, *, now: float, date: str | None = None, tz: str = "America/Sao_Paulo",
         rate: float | None = None, routes: dict[str, tuple[str, float]] | None = None,
         simulate: str | None = None, distribution: str | None = None) -> dict:
    """Per hour of a day: the messages scheduled (or simulated) against what the providers may
    send. Capacity is ``rate`` (messages/second, all channels) if given, else each provider's
    configured rate for the channels it carries (``routes``: channel -> (provider, rate)), else
    what recent runs measured."""
    zone = clock.zone(tz)
    if distribution and not simulate:
        raise UsageError("--distribution shapes a --simulate day; give --simulate USERS:LEADS too")
    users = leads = 0
    if simulate:
        users, leads = _simulated(simulate)
    measured = measured_rate(db, now)
    if rate:
        lanes, source = {"--rate": (("sms", "whatsapp"), rate)}, "--rate"
    elif routes:
        by_provider: dict[str, list] = {}
        for channel, (provider, provider_rate) in routes.items():
            by_provider.setdefault(provider, [[], provider_rate])[0].append(channel)
        lanes = {name: (tuple(channels), r) for name, (channels, r) in by_provider.items()}
        source = "the configured rates (" + "; ".join(
            f"{name} {r:g}/s for {', '.join(channels)}" for name, (channels, r) in lanes.items()) + ")"
    elif measured:
        lanes, source = {"measured": (("sms", "whatsapp"), measured)}, "measured from recent runs"
    else:
        lanes, source = {}, None
    lane_of = {channel: name for name, (channels, _) in lanes.items() for channel in channels}
    if date:
        day = datetime.fromtimestamp(clock.parse_when(date, tz, now), zone).date()
    else:
        day = datetime.fromtimestamp(now, zone).date()
    starts = [int(clock.localize(datetime(day.year, day.month, day.day) + timedelta(hours=h), zone).timestamp())
              for h in range(25)]
    # load[lane][hour] and the busiest minute of each, from the schedule or the simulation
    load = {name: [0.0] * 24 for name in lanes} or {None: [0.0] * 24}
    minute_peak = {name: [0.0] * 24 for name in load}
    total = None
    if simulate:
        total = users * leads
        lane = lane_of.get("sms", next(iter(load)))
        for start, end, share in parse_distribution(distribution or SEED_DISTRIBUTION):
            for h in range(start, end):
                load[lane][h] += total * share / 100 / (end - start)
        minute_peak[lane] = [v / 60 for v in load[lane]]  # evenly spread inside each hour
    else:
        for channel, minute, count in db.conn.execute(
                "SELECT channel, scheduled_at / 60, count(*) FROM messages WHERE scheduled_at >= ? AND scheduled_at < ?"
                " AND state != 'cancelled' GROUP BY channel, scheduled_at / 60", (starts[0], starts[24])):
            lane = lane_of.get(channel, next(iter(load)))
            hour = max(h for h in range(24) if starts[h] <= minute * 60)
            load[lane][hour] += count
            minute_peak[lane][hour] = max(minute_peak[lane][hour], count)
    hours, warnings = [], []
    # The providers that carry the day's traffic (all of them on an empty day) make its capacity.
    busy = [name for name in lanes if any(load[name])] or list(lanes)
    for h in range(24):
        messages = sum(lane_load[h] for lane_load in load.values())
        capacity = sum(lanes[name][1] for name in busy) * 3600 if lanes else None
        entry = {"hour": f"{h:02d}:00", "start": clock.iso_utc(starts[h]), "messages": round(messages),
                 "capacity": round(capacity) if capacity else None, "headroom_percent": None,
                 "margin_percent": None, "worst_lag_seconds": None, "fits": None}
        if capacity:
            # Each provider carries its own channels: the tightest one decides.
            per_lane = [(load[name][h], lanes[name][1] * 3600, minute_peak[name][h], lanes[name][1]) for name in busy]
            entry["headroom_percent"] = round(min(100 * (cap - used) / cap for used, cap, _, _ in per_lane), 1)
            # Capacity over load, minus one (150k against 100k: 50%).
            margins = [100 * (cap / used - 1) for used, cap, _, _ in per_lane if used]
            entry["margin_percent"] = round(min(margins), 1) if margins else None
            entry["fits"] = all(used <= cap for used, cap, _, _ in per_lane)
            # The busiest minute drains at the provider's rate; an hour over capacity grows a backlog.
            entry["worst_lag_seconds"] = round(max(peak / r + max(0.0, used - cap) / r
                                                   for used, cap, peak, r in per_lane), 1)
            for name, (used, cap, _, _) in zip(busy, per_lane):
                if used > cap:
                    who = "" if name in ("--rate", "measured") else f" ({name})"
                    warnings.append(f"{entry['hour']}: {round(used):,} messages against {round(cap):,}/h{who} "
                                    f"— over by {round(used - cap):,} ({100 * (used / cap - 1):.0f}%)")
        hours.append(entry)
    peak = max(hours, key=lambda e: e["messages"])
    capacity_rate = sum(r for _, r in lanes.values()) if lanes else None
    result = {
        "date": day.isoformat(), "tz": tz, "rate_per_second": capacity_rate, "rate_source": source,
        "providers": [{"provider": name, "channels": list(channels), "rate_per_second": r,
                       "capacity_per_hour": round(r * 3600)} for name, (channels, r) in lanes.items()],
        "measured_rate_per_second": round(measured, 1) if measured else None,
        "capacity_per_hour": round(capacity_rate * 3600) if capacity_rate else None,
        "hours": hours, "peak_hour": peak["hour"], "peak_messages": peak["messages"],
        "peak_headroom_percent": peak["headroom_percent"], "peak_margin_percent": peak["margin_percent"],
        "total_messages": round(total) if simulate else sum(e["messages"] for e in hours),
        "warnings": warnings,
        "seed": {"capacity_per_hour": SEED_CAPACITY_PER_HOUR, "precision_seconds": 60,
                 "peak_headroom_percent": round(100 * (SEED_CAPACITY_PER_HOUR - peak["messages"]) / SEED_CAPACITY_PER_HOUR, 1),
                 "peak_margin_percent": round(100 * (SEED_CAPACITY_PER_HOUR / peak["messages"] - 1), 1) if peak["messages"] else None},
    }
    if simulate:
        result["simulated"] = {"users": users, "leads_per_user": leads, "total": total,
                               "distribution": distribution or SEED_DISTRIBUTION}
    if not lanes:
        result["warnings"].append("capacity unknown: no configured provider and no dispatch run sent 100+ messages; "
                                  "pass --rate")
    elif measured and capacity_rate and measured < 0.8 * capacity_rate and source != "--rate":
        result["warnings"].append(f"recent runs sent {measured:,.1f}/s, below the configured {capacity_rate:g}/s: "
                                  "the plan assumes the configured rate is reached")
    return result


def _simulated(text: str) -> tuple[int, int]:
    try:
        users, leads = (int(x) for x in text.split(":"))
    except ValueError:
        raise UsageError(f"invalid --simulate {text!r}: write USERS:LEADS, e.g. 10000:100") from None
    if not (1 <= users <= MAX_SIMULATED_USERS and 1 <= leads <= MAX_SIMULATED_LEADS):
        raise UsageError(f"invalid --simulate {text!r}: USERS from 1 to {MAX_SIMULATED_USERS:,}, "
                         f"LEADS per user from 1 to {MAX_SIMULATED_LEADS:,}")
    return users, leads

