"""`campaigns import` of 10,000 campaigns over 10,000 users x 100 leads: 1,000,000 message rows.

    python benchmarks/campaigns_import.py [--users 10000] [--leads 100]

Prints the time and peak RSS of each step (users import, leads import-many, campaigns import).
Target on a 2-core machine: campaigns import <= 60 s, memory flat.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, phone, smsched, workdir  # noqa: E402


def peak_rss_mb_of(step) -> float:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    step()
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--leads", type=int, default=100)
    args = parser.parse_args()
    directory = workdir("campaigns")
    db = directory / "campaigns.db"
    for stale in directory.glob("campaigns.db*"):
        stale.unlink()
    rng = random.Random(3)
    with open(directory / "users.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "tz"])
        w.writerows([f"cliente-{u}", "America/Sao_Paulo"] for u in range(args.users))
    with open(directory / "leads.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "Nome", "Telefone", "Cidade"])
        for u in range(args.users):
            for i in range(args.leads):
                w.writerow([f"cliente-{u}", f"Lead {i}", phone(u * args.leads + i, rng), "São Paulo"])
    with open(directory / "campaigns.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user", "at", "message", "priority"])
        for u in range(args.users):
            hour, minute = rng.randint(8, 21), rng.randint(0, 59)
            w.writerow([f"cliente-{u}", f"2026-12-01 {hour:02d}:{minute:02d}", "Oi {name}, novidades em {cidade}!",
                        "urgent" if u % 20 == 0 else "normal"])
    steps = [
        ("users import", ["users", "import", directory / "users.csv"], args.users),
        ("leads import-many", ["leads", "import-many", directory / "leads.csv"], args.users * args.leads),
        ("campaigns import", ["campaigns", "import", directory / "campaigns.csv", "--now", "2026-11-30T12:00:00Z"],
         args.users * args.leads),
    ]
    for label, command, rows in steps:
        with Timer() as t:
            result = smsched(*command, "--db", db, "--json")
        data = json.loads(result.stdout)
        print(f"{label:<18} {t.seconds:6.1f}s  {rows / t.seconds:>9,.0f} rows/s  "
              f"{ {k: v for k, v in data.items() if isinstance(v, int)} }", flush=True)
    import resource

    print(f"peak RSS of the largest step: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB; "
          f"database {db.stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
