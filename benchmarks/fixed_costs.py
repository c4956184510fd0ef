"""What a run costs whatever the table's size: an idle run, a claim, the next-due look-up.

    python benchmarks/fixed_costs.py [--sizes 100000,1000000,3000000]

For each size, a database whose messages are mostly history ('sent') with some scheduled for
later (none due), built directly with SQL (a campaign import would take minutes at 3 M):

- an idle `smsched dispatch --time-budget 2s` (nothing due in the budget): wall and CPU of the
  whole process, start included (the promise: <= 2.6 s wall, <= 0.5 s CPU at 1 M rows);
- the same run with a message falling due one second into the budget, so it waits (no busy
  waiting: its CPU stays near the idle run's);
- (at the largest size of 1 M or less) a `--time-budget 10s` run whose 50 messages fall due one
  by one over 9 s, sent to the fast loopback provider: its CPU is the idle run's plus the sending;
- a claim of 1,000 due messages and the next-due look-up, timed in-process (they must stay
  flat from 100 k to 3 M rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import workdir  # noqa: E402

from smsched import queue, storage  # noqa: E402

NOW = 1796130000  # 2026-12-01T12:20:00Z


def build(path: Path, rows: int) -> None:
    for stale in path.parent.glob(path.name + "*"):
        stale.unlink()
    db = storage.connect(path)
    conn = db.conn
    conn.execute("INSERT INTO users (name, tz, region, quiet_hours, created_at) VALUES ('u', 'UTC', 'BR', 'off', 0)")
    conn.execute("INSERT INTO campaigns (user_id, name, channel, priority, message, tz, quiet_hours, valid_for,"
                 " scheduled_at, created_at, updated_at) VALUES (1, 'c', 'sms', 1, 'x', 'UTC', 'off', 21600, 0, 0, 0)")
    scheduled = max(1000, rows // 10)
    with storage.transaction(db):
        # History: sent over the last 30 days; then some scheduled for tomorrow and later.
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
            " INSERT INTO messages (campaign_id, user_id, phone, channel, body, tz, priority, seq, occurrence,"
            " scheduled_at, expires_at, state, sent_at, attempts, provider, provider_id, updated_at)"
            " SELECT 1, 1, printf('+55119%08d', i), 'sms', 'Olá! Promoção de hoje na loja.', 'UTC', 1, i % 100, 0,"
            " ? - 2592000 + i * 2592000 / ?, ? + 21600, 'sent', ? - 2592000 + i * 2592000 / ?, 1, 'twilio',"
            " printf('SM%032d', i), 0 FROM n", (rows - scheduled, NOW, rows, NOW, NOW, rows))
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
            " INSERT INTO messages (campaign_id, user_id, phone, channel, body, tz, priority, seq, occurrence,"
            " scheduled_at, expires_at, state, updated_at)"
            " SELECT 1, 1, printf('+55118%08d', i), 'sms', 'Olá! Amanhã.', 'UTC', 1, i % 100, 0,"
            " ? + 86400 + i * 60, ? + 86400 + i * 60 + 21600, 'scheduled', 0 FROM n", (scheduled, NOW, NOW))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()


def run(path: Path, config: Path, budget: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "smsched", "dispatch", "--db", str(path), "--config", str(config),
                          "--time-budget", budget, "--json", "--now", f"@{NOW}"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = json.loads(out.stdout)
    return {"wall": wall, "cpu": cpu, "sent": summary["sent"], "statements": summary["sql_statements"]}


def waiting_run(path: Path, directory: Path) -> dict:
    """50 messages due over 9 s: the run sleeps between them (no polling loop burning a core)."""
    from provider_push import free_port

    from smsched.sandbox import wait_for_port

    db = storage.connect(path)
    with storage.transaction(db):
        db.conn.execute("UPDATE messages SET scheduled_at = ? + 1 + (id % 9) WHERE id IN"
                        " (SELECT id FROM messages WHERE state = 'scheduled' LIMIT 50)", (NOW,))
    db.conn.close()
    port = free_port()
    provider = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "fast_provider.py"),
                                 "--port", str(port)])
    try:
        wait_for_port(port)
        config = directory / "fast.toml"
        config.write_text('[providers.twilio]\naccount_sid = "AC00000000000000000000000000000000"\nauth_token = "t"\n'
                          f'from = "+15005550006"\nbase_url = "http://127.0.0.1:{port}"\n')
        return run(path, config, "10s")
    finally:
        provider.terminate()
        provider.wait(timeout=30)


def timed_claim(path: Path) -> tuple[float, float]:
    db = storage.connect(path)
    conn = db.conn
    with storage.transaction(db):  # 1,000 due now, as a burst would leave them
        conn.execute("UPDATE messages SET scheduled_at = ? WHERE id IN (SELECT id FROM messages WHERE state = 'scheduled'"
                     " ORDER BY scheduled_at LIMIT 1000)", (NOW - 5,))
    started = time.perf_counter()
    next_due = queue.next_due(db)
    look = time.perf_counter() - started
    started = time.perf_counter()
    claimed = queue.claim_due(db, now=NOW, limit=1000, owner="bench", lease_until=time.time() + 300)
    claim = time.perf_counter() - started
    assert len(claimed) == 1000 and next_due == NOW - 5
    db.conn.close()
    return look, claim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000,3000000")
    args = parser.parse_args()
    directory = workdir("fixed-costs")
    config = directory / "smsched.toml"
    config.write_text('[providers.twilio]\naccount_sid = "AC00000000000000000000000000000000"\nauth_token = "t"\n'
                      'from = "+15005550006"\nbase_url = "http://127.0.0.1:9"\n')
    print(f"{'rows':>10} {'idle run wall':>14} {'idle run CPU':>13} {'SQL':>4} {'next-due look-up':>17} {'claim of 1,000':>15}")
    sizes = [int(s) for s in args.sizes.split(",")]
    waiting_size = max([s for s in sizes if s <= 1_000_000] or sizes[:1])
    waits: list[str] = []
    for size in sizes:
        path = directory / f"fixed-{size}.db"
        build(path, size)
        idle = run(path, config, "2s")
        if size == waiting_size:  # before the claim below, which leaves 1,000 rows claimed
            waiting = waiting_run(path, directory)
            waits.append(f"waiting run on {size:,} rows (--time-budget 10s, 50 messages due over 9 s): "
                         f"wall {waiting['wall']:.2f}s, CPU {waiting['cpu']:.2f}s, sent {waiting['sent']}")
        look, claim = timed_claim(path)
        print(f"{size:>10,} {idle['wall']:>13.2f}s {idle['cpu']:>12.2f}s {idle['statements']:>4}"
              f" {look * 1000:>15.2f}ms {claim * 1000:>13.1f}ms", flush=True)
        for stale in directory.glob(path.name + "*"):
            stale.unlink()

    for line in waits:
        print(line)


if __name__ == "__main__":
    main()
