"""End-to-end dispatch: `smsched dispatch` claiming from SQLite and sending to the sandbox over HTTP.

    python benchmarks/dispatch_e2e.py [--messages 50000] [--workers 16,32,64] [--lag]

Prints messages/s and SQL statements per 1,000 messages sent (sqlite3's trace callback, as the
run reports it), by worker count and HTTP client; with --lag, also the lag percentiles of a real
minute with 5,000 messages due spread across it (takes about 70 s).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import children_peak_rss_mb, smsched, workdir  # noqa: E402
from provider_push import free_port, start_sandbox  # noqa: E402


def prepare(directory: Path, messages: int, at: str, now: str, spread_seconds: int = 0) -> Path:
    """users x 100 leads and one campaign per user (or per second of the spread)."""
    db = directory / "base.db"
    for stale in directory.glob("base.db*"):
        stale.unlink()
    users = max(1, messages // 100)
    with open(directory / "users.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "quiet_hours"])
        writer.writerows([f"u{i}", "off"] for i in range(users))
    with open(directory / "leads.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "telefone", "nome"])
        writer.writerows([f"u{i // 100}", f"+55119{i:08d}", f"Lead {i}"] for i in range(users * 100))
    with open(directory / "campaigns.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "at", "message"])
        for i in range(users):
            when = at if not spread_seconds else f"@{int(at[1:]) + (i * spread_seconds) // users}"
            writer.writerow([f"u{i}", when, "Olá {name}! Promoção de hoje na loja."])
    smsched("users", "import", directory / "users.csv", "--db", db)
    smsched("leads", "import-many", directory / "leads.csv", "--db", db)
    smsched("campaigns", "import", directory / "campaigns.csv", "--db", db, "--now", now)
    return db


def run(db: Path, config: Path, *args: str) -> dict:
    result = smsched("dispatch", "--db", db, "--config", config, "--json", *args)
    return json.loads(result.stdout)


def write_config(path: Path, url: str, client: str, workers: int, pin: bool = True) -> None:
    from smsched.config import write_example

    write_example(path, base_url=url, rate=100_000)
    text = path.read_text().replace("workers = 32", f"workers = {workers}\nhttp_client = \"{client}\"\npin_cpu = {str(pin).lower()}")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--workers", default="16,32,64")
    parser.add_argument("--clients", default="urllib3,requests")
    parser.add_argument("--lag", action="store_true")
    args = parser.parse_args()
    directory = workdir("dispatch")
    port = free_port()
    sandbox = start_sandbox(port)
    url = f"http://127.0.0.1:{port}"
    try:
        base = prepare(directory, args.messages, "2026-12-01 10:00", "2026-12-01T12:00:00Z")
        print(f"{'client':<9} {'workers':>7} {'pinned':>6} {'msg/s':>8} {'SQL/1000':>9} {'lag p99 (s)':>11}")
        for client in args.clients.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                for pin in (True, False):
                    db = directory / "run.db"
                    for stale in directory.glob("run.db*"):
                        stale.unlink()
                    shutil.copy(base, db)
                    config = directory / "smsched.toml"
                    write_config(config, url, client, workers, pin)
                    summary = run(db, config, "--now", "2026-12-01T13:00:00Z", "--time-budget", "0")
                    assert summary["sent"] == args.messages, summary
                    print(f"{client:<9} {workers:>7} {'yes' if pin else 'no':>6} {summary['messages_per_second']:>8.0f} "
                          f"{summary['sql_statements_per_1000']:>9} {summary['lag']['p99']:>11}", flush=True)
        print(f"peak RSS of a dispatch process: {children_peak_rss_mb():.0f} MB")
        if args.lag:
            start = int(time.time()) + 8
            db = prepare(directory, 5_000, f"@{start}", f"@{int(time.time())}", spread_seconds=60)
            config = directory / "smsched.toml"
            write_config(config, url, "urllib3", 32)
            summary = run(db, config, "--time-budget", "70s")
            lag = summary["lag"]
            print(f"real minute, 5,000 messages spread across it: sent {summary['sent']}, lag p50 {lag['p50']}s "
                  f"p95 {lag['p95']}s p99 {lag['p99']}s max {lag['max']}s")
    finally:
        sandbox.terminate()
        sandbox.wait()


if __name__ == "__main__":
    main()
