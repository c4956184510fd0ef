"""The seed's stress test, for real: a full day for 10,000 users x 100 leads, measured.

    python benchmarks/seed_day.py            # the full day (~20 minutes on 2 cores)
    python benchmarks/seed_day.py --quick    # a tenth of the scale, coarser minutes (CI, ~2 minutes)

Everything goes through the public commands, as a user would run them:
1. writes 10,000 users (in five Brazilian time zones) and 1,000,000 leads as CSV files in the
   spellings people type, and imports them (`users import`, `leads import-many`);
2. schedules one campaign per user with `campaigns import`, spread as the seed says (40% 08-12h,
   35% 12-18h, 25% 18-22h, in each user's zone), 5% urgent, with 1,000 of the morning users all
   at 10:00 (a 100,000-message burst at a single minute);
3. replays the day against the sandbox (its own process) with a simulated clock: one
   `smsched dispatch --now <minute> --time-budget 0` per minute that has messages due (a minute
   with nothing due costs one empty run, so it is skipped), timing each minute's real drain time;
4. runs the seed's own cycle (`--max-campaigns 25 --max-per-campaign 100 --parallel 3
   --batch-delay 200ms`, once per simulated minute) over the same burst, side by side;
5. measures real-time precision: a dispatch on the real clock over minutes with messages spread
   across each second;
6. checks what the sandbox saw (duplicates, lost, sent in quiet hours) and writes BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import resource
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, smsched, workdir  # noqa: E402
from provider_push import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ZONES = [  # (zone, area codes, share of users)
    ("America/Sao_Paulo", ("11", "21", "31", "41", "51", "61"), 0.70),
    ("America/Recife", ("81", "85", "71"), 0.12),
    ("America/Manaus", ("92",), 0.08),
    ("America/Cuiaba", ("65",), 0.06),
    ("America/Rio_Branco", ("68",), 0.04),
]
SPELLINGS = ("({ddd}) {a}-{b}", "+55 ({ddd}) {a}-{b}", "0{ddd}{a}{b}", "{ddd}{a}{b}", "55 {ddd} {a} {b}")
DAY = "2026-12-01"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def generate(directory: Path, users: int, leads: int, burst: int, quantum: int, seed: int = 2026) -> list[dict]:
    """users.csv, leads.csv, campaigns.csv; returns the campaigns (user, local time, zone, burst)."""
    rng = random.Random(seed)
    zone_of = []
    for u in range(users):
        pick, acc = rng.random(), 0.0
        for zone, ddds, share in ZONES:
            acc += share
            if pick <= acc:
                break
        zone_of.append((zone, ddds))
    with open(directory / "users.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "tz", "region"])
        w.writerows([f"cliente-{u:05d}", zone_of[u][0], "BR"] for u in range(users))
    with open(directory / "leads.csv", "w", newline="", encoding="cp1252") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Usuário", "Nome", "Telefone Celular", "Cidade"])
        for u in range(users):
            ddds = zone_of[u][1]
            for i in range(leads):
                n = u * leads + i
                digits = f"{n:08d}"
                number = rng.choice(SPELLINGS).format(ddd=ddds[n % len(ddds)], a="9" + digits[:4], b=digits[4:])
                w.writerow([f"cliente-{u:05d}", f"Cliente {n}", number, "São Paulo"])
    campaigns = []
    order = list(range(users))
    rng.shuffle(order)
    morning, afternoon = int(users * 0.40), int(users * 0.35)
    spans = [(8, 12)] * morning + [(12, 18)] * afternoon + [(18, 22)] * (users - morning - afternoon)
    for index, u in enumerate(order):
        start, end = spans[index]
        is_burst = index < burst  # the first `burst` morning users all go at 10:00
        if is_burst:  # one instant for all of them: 10:00 in Sao Paulo, whatever their own zone
            minute_of_day, zone = 10 * 60, "America/Sao_Paulo"
        else:
            minute_of_day, zone = rng.randrange(start * 60, end * 60, quantum), zone_of[u][0]
        campaigns.append({"user": f"cliente-{u:05d}", "local": f"{DAY} {minute_of_day // 60:02d}:{minute_of_day % 60:02d}",
                          "zone": zone, "burst": is_burst, "urgent": rng.random() < 0.05})
    with open(directory / "campaigns.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "at", "message", "priority", "name", "tz"])
        for c in campaigns:
            w.writerow([c["user"], c["local"], "Olá {name}! Novidades da loja hoje. Responda SAIR para não receber.",
                        "urgent" if c["urgent"] else "normal", "burst" if c["burst"] else "day", c["zone"]])
    return campaigns


def utc_minute(local: str, zone: str) -> int:
    from dateutil import tz

    naive = datetime.fromisoformat(local)
    return int(naive.replace(tzinfo=tz.gettz(zone)).timestamp())


class Sandbox:
    def __init__(self, directory: Path, name: str):
        import subprocess

        self.port = free_port()
        self.db = directory / f"{name}.db"
        for stale in directory.glob(f"{name}.db*"):
            stale.unlink()
        self.proc = subprocess.Popen([sys.executable, "-m", "smsched", "sandbox", "serve", "--port", str(self.port),
                                      "--db", str(self.db)], stderr=subprocess.DEVNULL)
        from smsched.sandbox import wait_for_port

        wait_for_port(self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def config_for(directory: Path, name: str, url: str) -> Path:
    from smsched.config import write_example

    path = directory / f"{name}.toml"
    write_example(path, base_url=url, rate=100_000)
    return path


def dispatch(db: Path, config: Path, now: int, *extra: str) -> dict:
    result = smsched("dispatch", "--db", db, "--config", config, "--now", f"@{now}", "--time-budget", "0", "--json", *extra)
    return json.loads(result.stdout)


def import_all(directory: Path, db: Path, campaigns_file: Path) -> dict:
    figures = {}
    with Timer() as t:
        smsched("users", "import", directory / "users.csv", "--db", db)
    figures["users_import_s"] = t.seconds
    with Timer() as t:
        leads = json.loads(smsched("leads", "import-many", directory / "leads.csv", "--db", db, "--json").stdout)
    figures["leads_import_s"], figures["leads"] = t.seconds, leads
    with Timer() as t:
        created = json.loads(smsched("campaigns", "import", campaigns_file, "--db", db, "--now", f"{DAY}T00:00:00Z", "--json").stdout)
    figures["campaigns_import_s"], figures["campaigns"] = t.seconds, created
    return figures


def replay(db: Path, config: Path, minutes: list[int], burst_minute: int) -> dict:
    runs, burst = [], None
    for minute in minutes:
        summary = dispatch(db, config, minute)
        entry = {"minute": minute, "sent": summary["sent"], "duration": summary["duration"],
                 "sql": summary["sql_statements"], "claimed": summary["claimed"], "lag": summary["lag"]}
        runs.append(entry)
        if minute == burst_minute:
            burst = entry
    # Messages that quiet hours in the recipient's zone moved past the day's last minute (a Recife
    # user's 21:45 is 22:45 in Fernando de Noronha, which shares area code 81) or that were retried:
    # dispatch them when they fall due, found with the public `messages list`.
    while True:
        left = json.loads(smsched("messages", "list", "--db", db, "--state", "scheduled", "--json").stdout)
        if not left:
            break
        when = max(int(datetime.fromisoformat(m["scheduled_at"].replace("Z", "+00:00")).timestamp()) for m in left)
        summary = dispatch(db, config, when)
        runs.append({"minute": when, "sent": summary["sent"], "duration": summary["duration"],
                     "sql": summary["sql_statements"], "claimed": summary["claimed"], "lag": summary["lag"],
                     "late": True})
        if summary["claimed"] == 0:
            break
    return {"runs": runs, "burst": burst}


def seed_cycles(directory: Path, burst_campaigns: list[dict], burst_minute: int) -> dict:
    """The seed's loop over the same burst, in its own database and sandbox."""
    db = directory / "seed-cycle.db"
    for stale in directory.glob("seed-cycle.db*"):
        stale.unlink()
    burst_users = {c["user"] for c in burst_campaigns}
    with open(directory / "burst-campaigns.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "at", "message", "priority", "tz"])
        for c in burst_campaigns:
            w.writerow([c["user"], c["local"], "Olá {name}! Novidades da loja hoje.", "normal", c["zone"]])
    with open(directory / "leads.csv", encoding="cp1252", newline="") as src, \
            open(directory / "burst-leads.csv", "w", encoding="cp1252", newline="") as dst:
        reader, writer = csv.reader(src, delimiter=";"), csv.writer(dst, delimiter=";")
        writer.writerow(next(reader))
        writer.writerows(row for row in reader if row[0] in burst_users)
    smsched("users", "import", directory / "users.csv", "--db", db)
    smsched("leads", "import-many", directory / "burst-leads.csv", "--db", db)
    smsched("campaigns", "import", directory / "burst-campaigns.csv", "--db", db, "--now", f"{DAY}T00:00:00Z")
    sandbox = Sandbox(directory, "seed-sandbox")
    try:
        config = config_for(directory, "seed", sandbox.url)
        cycles, total, real = 0, 0, 0.0
        while True:
            summary = dispatch(db, config, burst_minute + 60 * cycles, "--max-campaigns", "25", "--max-per-campaign", "100",
                               "--parallel", "3", "--batch-delay", "200ms")
            if summary["claimed"] == 0:
                break
            cycles += 1
            total += summary["sent"]
            real += summary["duration"]
    finally:
        sandbox.stop()
    conn = sqlite3.connect(db)
    lags = [r[0] for r in conn.execute("SELECT sent_at - scheduled_at FROM messages WHERE state = 'sent'")]
    conn.close()
    return {"cycles": cycles, "sent": total, "real_seconds": real, "lag_p50": percentile(lags, 0.5),
            "lag_p99": percentile(lags, 0.99), "lag_max": max(lags) if lags else None}


def realtime_precision(directory: Path, seconds: int, per_minute: int) -> dict:
    """Messages spread over real seconds; one dispatch run on the real clock sends them."""
    db = directory / "realtime.db"
    for stale in directory.glob("realtime.db*"):
        stale.unlink()
    users = max(1, per_minute * seconds // 60 // 100)
    with open(directory / "rt-users.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "quiet_hours"])
        w.writerows([f"rt{u}", "off"] for u in range(users))
    with open(directory / "rt-leads.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "telefone"])
        w.writerows([f"rt{u}", f"+55119{u * 100 + i:08d}"] for u in range(users) for i in range(100))
    start = int(time.time()) + 15
    with open(directory / "rt-campaigns.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user", "at", "message"])
        w.writerows([f"rt{u}", f"@{start + (u * seconds) // users}", "Oi {name}"] for u in range(users))
    smsched("users", "import", directory / "rt-users.csv", "--db", db)
    smsched("leads", "import-many", directory / "rt-leads.csv", "--db", db)
    smsched("campaigns", "import", directory / "rt-campaigns.csv", "--db", db)
    sandbox = Sandbox(directory, "rt-sandbox")
    try:
        config = config_for(directory, "rt", sandbox.url)
        wait = start - time.time() - 2
        if wait > 0:
            time.sleep(wait)  # a real-clock measurement: the run starts just before the first message is due
        result = smsched("dispatch", "--db", db, "--config", config, "--time-budget", f"{seconds + 5}s", "--json")
    finally:
        sandbox.stop()
    summary = json.loads(result.stdout)
    return {"messages": users * 100, "seconds": seconds, "sent": summary["sent"], "lag": summary["lag"]}


def verify(db: Path, sandbox_db: Path) -> dict:
    conn = sqlite3.connect(db)
    states = dict(conn.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())
    sent = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, sent_at, tz FROM messages WHERE state = 'sent'")}
    lags = [r[0] for r in conn.execute("SELECT sent_at - scheduled_at FROM messages WHERE state = 'sent'")]
    total = sum(states.values())
    conn.close()
    box = sqlite3.connect(sandbox_db)
    received = [int(r[0]) for r in box.execute("SELECT smsched_id FROM received WHERE status = 'accepted'")]
    box.close()
    from collections import Counter

    from dateutil import tz as dtz

    counts = Counter(received)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    lost = (total - states.get("sent", 0)) + len(set(sent) - set(counts))
    zones: dict[str, object] = {}
    outside = 0
    for sent_at, zone in sent.values():
        local = datetime.fromtimestamp(sent_at, zones.setdefault(zone, dtz.gettz(zone)))
        minute = local.hour * 60 + local.minute
        if not (8 * 60 <= minute < 22 * 60):
            outside += 1
    return {"messages": total, "states": states, "received": len(received), "duplicates": duplicates, "lost": lost,
            "outside_quiet_hours": outside, "lags": lags}


OTHER_SECTIONS = "## The other benchmarks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the scale, 15-minute slots (for CI)")
    parser.add_argument("--out", type=Path, help="where to write the report (default BENCHMARKS.md, or the work folder with --quick)")
    args = parser.parse_args()
    users, leads, burst, quantum = (1000, 100, 100, 15) if args.quick else (10_000, 100, 1000, 1)
    directory = workdir("seed-day-quick" if args.quick else "seed-day")
    out = args.out or (directory / "BENCHMARKS-quick.md" if args.quick else ROOT / "BENCHMARKS.md")
    db = directory / "day.db"
    for stale in directory.glob("day.db*"):
        stale.unlink()
    started = time.perf_counter()
    print(f"generating {users:,} users x {leads} leads ...", flush=True)
    campaigns = generate(directory, users, leads, burst, quantum)
    figures = import_all(directory, db, directory / "campaigns.csv")
    print(f"imported {leads * users:,} leads in {figures['leads_import_s']:.1f}s; "
          f"{figures['campaigns']['messages']:,} messages scheduled in {figures['campaigns_import_s']:.1f}s", flush=True)
    minutes = sorted({utc_minute(c["local"], c["zone"]) for c in campaigns})
    burst_minute = utc_minute(f"{DAY} 10:00", "America/Sao_Paulo")
    sandbox = Sandbox(directory, "sandbox")
    try:
        config = config_for(directory, "day", sandbox.url)
        with Timer() as day_timer:
            day = replay(db, config, minutes, burst_minute)
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        sandbox.stop()
    print(f"replayed {len(minutes)} minutes in {day_timer.seconds:.0f}s", flush=True)
    checks = verify(db, sandbox.db)
    seed = seed_cycles(directory, [c for c in campaigns if c["burst"]], burst_minute)
    realtime = realtime_precision(directory, 20 if args.quick else 180, 500 if args.quick else 5000)
    runs = day["runs"]
    outside = [r["duration"] for r in runs if r["minute"] != burst_minute and r["sent"]]
    moved = sum(r["sent"] for r in runs if r.get("late"))
    sent_total = sum(r["sent"] for r in runs)
    busy_seconds = sum(r["duration"] for r in runs)
    b = day["burst"]
    report = {
        "scale": {"users": users, "leads_per_user": leads, "burst_users": burst, "minute_quantum": quantum},
        "leads_import_rows_per_s": leads * users / figures["leads_import_s"],
        "campaigns_import_rows_per_s": figures["campaigns"]["messages"] / figures["campaigns_import_s"],
        "dispatch_messages_per_s": sent_total / busy_seconds,
        "minutes": len(minutes),
        "minute_drain_p50": percentile(outside, 0.5), "minute_drain_p99": percentile(outside, 0.99),
        "minute_drain_max": max(outside) if outside else None,
        "burst": {"sent": b["sent"], "seconds": b["duration"], "rate": b["sent"] / b["duration"], "lag": b["lag"]},
        "lag": {q: percentile(checks["lags"], v) for q, v in (("p50", .5), ("p95", .95), ("p99", .99), ("max", 1.0))},
        "sql_per_1000": 1000 * sum(r["sql"] for r in runs) / max(1, sent_total),
        "peak_rss_mb": rss_mb,
        "db_mb": sum(p.stat().st_size for p in directory.glob("day.db*")) / 1e6,
        "checks": {k: v for k, v in checks.items() if k != "lags"}, "moved_to_next_day": moved,
        "seed_cycle": seed, "realtime": realtime,
        "wall_minutes": (time.perf_counter() - started) / 60,
    }
    text = render(report)
    if out.exists():  # the other benchmarks' sections, written by hand below this one, stay
        previous = out.read_text(encoding="utf-8")
        if OTHER_SECTIONS in previous:
            text = text.rstrip("\n") + "\n\n" + previous[previous.index(OTHER_SECTIONS):]
    out.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {out}")
    failures = [name for name, ok in (
        ("duplicates", checks["duplicates"] == 0), ("lost", checks["lost"] == 0),
        ("quiet hours", checks["outside_quiet_hours"] == 0)) if not ok]
    if failures:
        sys.exit(f"correctness failed: {', '.join(failures)}")


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render(r: dict) -> str:
    s, c, seed, rt = r["scale"], r["checks"], r["seed_cycle"], r["realtime"]
    lag, burst = r["lag"], r["burst"]
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}"
    return f"""# smsched benchmarks: the seed's day, measured

Command: `python benchmarks/seed_day.py{' --quick' if s['minute_quantum'] > 1 else ''}` — {machine};
{s['users']:,} users x {s['leads_per_user']} leads, {s['burst_users']:,} of them in a burst at 10:00,
campaign times on a {s['minute_quantum']}-minute grid; the sandbox provider in its own process on 127.0.0.1.
Wall time of the whole benchmark: {r['wall_minutes']:.1f} min. Generated {datetime.now().isoformat(timespec='minutes')}.

| measure | smsched (measured) | the seed's claim |
| --- | --- | --- |
| lead import | {fmt(r['leads_import_rows_per_s'], 0)} rows/s | - |
| campaign creation | {fmt(r['campaigns_import_rows_per_s'], 0)} message rows/s | - |
| dispatch throughput (all runs) | {fmt(r['dispatch_messages_per_s'], 0)} messages/s = {fmt(r['dispatch_messages_per_s'] * 3600, 0)}/h | 2,500/min = 150,000/h |
| burst: {burst['sent']:,} messages due at one minute | drained in {fmt(burst['seconds'], 1)} s = {fmt(burst['rate'], 0)} messages/s | 2,500 per minute: {math.ceil(burst['sent'] / 2500)} minutes |
| per-minute drain time outside the burst (real) | p50 {fmt(r['minute_drain_p50'])} s, p99 {fmt(r['minute_drain_p99'])} s, max {fmt(r['minute_drain_max'])} s over {r['minutes']:,} minutes | - |
| lag sent - scheduled, whole day | p50 {fmt(lag['p50'])} s, p95 {fmt(lag['p95'])} s, p99 {fmt(lag['p99'])} s, max {fmt(lag['max'])} s | ±60 s |
| lag inside the burst | p50 {fmt(burst['lag']['p50'])} s, p99 {fmt(burst['lag']['p99'])} s, max {fmt(burst['lag']['max'])} s | - |
| real-time precision ({rt['messages']:,} messages spread over {rt['seconds']} real seconds) | p50 {rt['lag']['p50']} s, p99 {rt['lag']['p99']} s, max {rt['lag']['max']} s | ±60 s |
| capacity per day at the measured rate | {fmt(r['dispatch_messages_per_s'] * 86400, 0)} | 3,600,000 |
| SQL statements per 1,000 messages | {fmt(r['sql_per_1000'], 1)} | - |
| peak RSS (largest smsched process) | {fmt(r['peak_rss_mb'], 0)} MB | - |
| database size | {fmt(r['db_mb'], 0)} MB | - |

The seed's own cycle over the same burst (`--max-campaigns 25 --max-per-campaign 100 --parallel 3
--batch-delay 200ms`, one run per simulated minute): {seed['cycles']} cycles = {seed['cycles']} simulated
minutes to send {seed['sent']:,} messages ({fmt(seed['real_seconds'], 1)} s of real sending); lag p50
{fmt(seed['lag_p50'] / 60 if seed['lag_p50'] is not None else None, 1)} min, p99 {fmt(seed['lag_p99'] / 60 if seed['lag_p99'] is not None else None, 1)} min, max {fmt(seed['lag_max'] / 60 if seed['lag_max'] is not None else None, 1)} min.

Correctness, as the sandbox saw it: {c['messages']:,} messages scheduled, {c['received']:,} received
({r['moved_to_next_day']:,} of them the next morning: quiet hours in the recipient's own zone moved them);
duplicates **{c['duplicates']}**, lost **{c['lost']}**, sent outside quiet hours **{c['outside_quiet_hours']}**;
final states {json.dumps(c['states'])}.
"""


if __name__ == "__main__":
    main()
