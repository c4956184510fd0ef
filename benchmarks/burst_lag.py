"""Look-ahead at capacity: 5,000 messages due at the same second, a dispatch already running.

    python benchmarks/burst_lag.py [--messages 5000] [--workers 32] [--lead 6]

A database with MESSAGES due at one second, LEAD seconds from now (on the real clock), and one
`smsched dispatch --time-budget 20s` started before it, pinned to one core, sending to the fast
loopback provider on the other. Prints the lag (sent - scheduled) percentiles the run reports
and how many messages went out early (none may).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import workdir  # noqa: E402
from dispatch_e2e import prepare  # noqa: E402
from provider_push import free_port  # noqa: E402

ACCOUNT = "AC" + "0" * 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--lead", type=int, default=6, help="seconds from now to the burst")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    client, server = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    directory = workdir("burst-lag")
    port = free_port()
    provider = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fast_provider.py")), "--port", str(port)]
                                + (["--cpu", str(server)] if server is not None else []))
    try:
        due = int(time.time()) + args.lead + 4  # the import below takes a few seconds
        db = prepare(directory, args.messages, f"@{due}", f"@{int(time.time())}")
        config = directory / "burst.toml"
        config.write_text(f'[dispatch]\nworkers = {args.workers}\npin_cpu = false\n[providers.twilio]\n'
                          f'account_sid = "{ACCOUNT}"\nauth_token = "token"\nfrom = "+15005550006"\n'
                          f'base_url = "http://127.0.0.1:{port}"\nrate = 1000000\n')
        wait = due - time.time()
        print(f"{args.messages:,} messages due at one second, {wait:.1f}s after the dispatch starts; {args.workers} workers")
        out = subprocess.run([sys.executable, "-m", "smsched", "dispatch", "--db", str(db), "--config", str(config),
                              "--time-budget", "20s", "--json"], capture_output=True, text=True, check=True,
                             preexec_fn=(lambda: os.sched_setaffinity(0, {client})) if client is not None else None)
        summary = json.loads(out.stdout)
        conn = sqlite3.connect(db)
        early = conn.execute("SELECT count(*) FROM messages WHERE sent_at < scheduled_at").fetchone()[0]
        sent = conn.execute("SELECT count(*) FROM messages WHERE state = 'sent'").fetchone()[0]
        lag = summary["lag"]
        print(f"sent {sent:,}; early {early}; lag p50 {lag['p50']}s, p95 {lag['p95']}s, p99 {lag['p99']}s, "
              f"max {lag['max']}s; drained at {summary['messages_per_second']:.0f} msg/s over the run")
    finally:
        provider.terminate()
        provider.wait()


if __name__ == "__main__":
    main()
