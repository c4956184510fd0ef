"""The same load sent by 1, 2 and 3 dispatchers at once, on PostgreSQL and on SQLite, side by side.

    python benchmarks/dispatchers.py [--messages 30000] [--dispatchers 1,2,3] [--hosts]

Every configuration starts from the same database (SQLite: a copy of one file; PostgreSQL: that
file moved with `smsched db migrate-to` into a fresh database of a throwaway server) and sends to
the fast loopback provider, which records every message id it receives. Prints messages/s (all
dispatchers together, first start to last exit), duplicates (ids received more than once: must be
0), and the claim cost per message (time inside claim statements, summed over the dispatchers).
SQLite runs its dispatchers with --concurrent; PostgreSQL needs no flag. With --hosts (root),
each PostgreSQL dispatcher runs in a network namespace of its own, reaching the server and the
provider over a bridge, as separate hosts would.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import workdir  # noqa: E402
from dispatch_e2e import prepare, write_config  # noqa: E402
from provider_push import free_port  # noqa: E402

from smsched.sandbox import wait_for_port  # noqa: E402


def start_provider(port: int, ids: Path, host: str = "127.0.0.1") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(HERE / "fast_provider.py"), "--port", str(port), "--ids", str(ids),
                             *(["--host", host] if host != "127.0.0.1" else [])])
    wait_for_port(port, host=host)
    return proc


def run(target: str, config: Path, count: int, flags: list[str], prefixes: list[list[str]]) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    procs = [subprocess.Popen([*prefixes[i % len(prefixes)], sys.executable, "-m", "smsched", "--db", target, "dispatch",
                               "--config", str(config), "--now", "2026-12-01T13:00:00Z", "--time-budget", "0", "--json",
                               *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(count)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            sys.exit(f"dispatch failed: {err.decode()[-2000:]}")
        outputs.append(json.loads(out))
    return time.perf_counter() - started, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--dispatchers", default="1,2,3")
    parser.add_argument("--hosts", action="store_true", help="PostgreSQL dispatchers in network namespaces (root)")
    args = parser.parse_args()
    from tests.pg_server import Server

    directory = workdir("dispatchers")
    base = prepare(directory, args.messages, "2026-12-01 10:00", "2026-12-01T12:00:00Z")
    hosts = None
    if args.hosts:
        from tests.test_postgres import _Hosts

        hosts = _Hosts()
    listen = "127.0.0.1" if hosts is None else f"127.0.0.1,{hosts.gateway}"
    server = Server(listen=listen)
    provider_host = "127.0.0.1" if hosts is None else hosts.gateway
    print(f"{args.messages:,} messages; fast loopback provider; {os.cpu_count()} cores")
    print(f"{'backend':<11} {'dispatchers':>11} {'msg/s':>8} {'duplicates':>10} {'claim µs/msg':>12} {'each sent':>20}")
    try:
        for count in (int(c) for c in args.dispatchers.split(",")):
            for backend in ("postgresql", "sqlite"):
                port = free_port()
                ids = directory / f"ids-{backend}-{count}.txt"
                ids.unlink(missing_ok=True)
                provider = start_provider(port, ids, provider_host if backend == "postgresql" else "127.0.0.1")
                config = directory / f"{backend}-{count}.toml"
                host = provider_host if backend == "postgresql" else "127.0.0.1"
                write_config(config, f"http://{host}:{port}", "urllib3", 32, pin=False)
                prefixes, flags = [[]], []
                if backend == "sqlite":
                    target = str(directory / f"run-{count}.db")
                    for stale in directory.glob(f"run-{count}.db*"):
                        stale.unlink()
                    shutil.copy(base, target)
                    flags = ["--concurrent"]
                else:
                    name = f"run{count}"
                    server.create_database(name)
                    subprocess.run([sys.executable, "-m", "smsched", "--db", str(base), "db", "migrate-to",
                                    server.url(name)], check=True, capture_output=True)
                    target = server.url(name, host=hosts.gateway if hosts else None)
                    if hosts:
                        prefixes = [["ip", "netns", "exec", ns] for ns in hosts.namespaces]
                seconds, outputs = run(target, config, count, flags, prefixes)
                provider.send_signal(signal.SIGTERM)
                provider.wait(timeout=60)
                received = Counter(ids.read_text().split())
                sent = sum(o["sent"] for o in outputs)
                duplicates = sum(n - 1 for n in received.values() if n > 1)
                claim = sum(o["claim_seconds"] for o in outputs)
                if sent != args.messages or len(received) != args.messages:
                    sys.exit(f"{backend} x{count}: sent {sent}, provider received {len(received)} distinct")
                label = backend + (" (hosts)" if backend == "postgresql" and hosts else "")
                print(f"{label:<11} {count:>11} {args.messages / seconds:>8,.0f} {duplicates:>10} "
                      f"{1e6 * claim / sent:>12.1f} {'/'.join(str(o['sent']) for o in outputs):>20}", flush=True)
    finally:
        server.stop()
        if hosts:
            hosts.remove()


if __name__ == "__main__":
    main()
