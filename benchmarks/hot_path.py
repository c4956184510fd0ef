"""The sending hot path against a bare urllib3 loop, side by side in one run.

    python benchmarks/hot_path.py [--messages 20000] [--threads 32] [--rounds 3]

Both sides run on core 0 with the same thread count and post the same Twilio form bodies to
the same fast loopback provider (``fast_provider.py``, on core 1):

- raw: a bare urllib3 loop — N threads sharing one ``urllib3.PoolManager``, each request's
  Twilio form body url-encoded as it is sent (``--raw lean``: one ``HTTPConnectionPool`` and
  every body built before the clock starts: the fastest loop urllib3 allows, for reference);
- smsched: one `smsched dispatch --time-budget 0` process draining N due messages from SQLite
  (claim, screen, mark 'sending', send, record), with ``pin_cpu = false`` and the same core.

They alternate (raw, smsched, raw, smsched, ...) and the medians are compared: messages per
second of the sending loop (process start excluded on both sides), and messages per CPU-second
of that loop. Also printed: SQL statements and commits per 1,000 messages as the run reports
them (process start included).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import workdir  # noqa: E402
from dispatch_e2e import prepare  # noqa: E402
from provider_push import free_port  # noqa: E402

ACCOUNT = "AC" + "0" * 32
BODY = "Olá Lead! Promoção de hoje na loja."


def on_core(core: int | None):
    return (lambda: os.sched_setaffinity(0, {core})) if core is not None else None


def raw_loop(port: int, messages: int, threads: int, style: str) -> dict:
    """The bare client: what one process can push with urllib3 alone."""
    import urllib3

    path = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    headers = {"Authorization": "Basic " + base64.b64encode(f"{ACCOUNT}:token".encode()).decode(),
               "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    lock, cursor, accepted = threading.Lock(), iter(range(messages)), [0] * threads
    if style == "lean":
        bodies = [urlencode({"To": f"+55119{i:08d}", "From": "+15005550006", "Body": BODY}).encode() for i in range(messages)]
        pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=threads, block=True, retries=False)
        post = lambda i: pool.urlopen("POST", path, body=bodies[i], headers=headers)  # noqa: E731
    else:
        manager = urllib3.PoolManager(maxsize=threads, block=True, retries=False)
        url = f"http://127.0.0.1:{port}{path}"
        post = lambda i: manager.request("POST", url, headers=headers, body=urlencode(  # noqa: E731
            {"To": f"+55119{i:08d}", "From": "+15005550006", "Body": BODY}).encode())

    def worker(index: int) -> None:
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            if post(i).status == 201:
                accepted[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    cpu, wall = time.process_time(), time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return {"sent": sum(accepted), "seconds": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def run_raw(port: int, messages: int, threads: int, core: int | None, style: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "raw", "--port", str(port), "--messages", str(messages),
                          "--threads", str(threads), "--raw", style], capture_output=True, text=True,
                         preexec_fn=on_core(core), check=True)
    return json.loads(out.stdout)


def run_smsched(base: Path, directory: Path, port: int, threads: int, core: int | None) -> dict:
    db = directory / "run.db"
    for stale in directory.glob("run.db*"):
        stale.unlink()
    shutil.copy(base, db)
    config = directory / "hot.toml"
    config.write_text(f'[dispatch]\nworkers = {threads}\npin_cpu = false\n[providers.twilio]\naccount_sid = "{ACCOUNT}"\n'
                      f'auth_token = "token"\nfrom = "+15005550006"\nbase_url = "http://127.0.0.1:{port}"\nrate = 1000000\n')
    out = subprocess.run([sys.executable, "-m", "smsched", "dispatch", "--db", str(db), "--config", str(config),
                          "--now", "2026-12-01T13:00:00Z", "--time-budget", "0", "--json"],
                         capture_output=True, text=True, preexec_fn=on_core(core), check=True)
    summary = json.loads(out.stdout)
    return {"sent": summary["sent"], "seconds": summary["duration"], "cpu": summary["time"]["cpu"],
            "sql_per_1000": summary["sql_statements_per_1000"], "commits_per_1000": summary["commits_per_1000"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", nargs="?", default="compare", choices=["compare", "raw"])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--raw", default="plain", choices=["plain", "lean"], help="which bare loop to compare with")
    args = parser.parse_args()
    if args.mode == "raw":
        print(json.dumps(raw_loop(args.port, args.messages, args.threads, args.raw)))
        return
    cores = sorted(os.sched_getaffinity(0))
    client, server = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    directory = workdir("hot-path")
    base = prepare(directory, args.messages, "2026-12-01 10:00", "2026-12-01T12:00:00Z")
    port = free_port()
    provider = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fast_provider.py")), "--port", str(port)]
                                + (["--cpu", str(server)] if server is not None else []))
    time.sleep(0.5)
    rows = []
    try:
        print(f"{args.messages:,} messages, {args.threads} threads, client on core {client}, provider on core {server},"
              f" raw loop: {args.raw}")
        print(f"{'round':>5} {'side':<8} {'msg/s':>8} {'msg/cpu-s':>10} {'SQL/1000':>9} {'commits/1000':>12}")
        for round_ in range(1, args.rounds + 1):
            for side in ("raw", "smsched"):
                r = (run_raw(port, args.messages, args.threads, client, args.raw) if side == "raw"
                     else run_smsched(base, directory, port, args.threads, client))
                assert r["sent"] == args.messages, r
                r |= {"side": side, "rate": r["sent"] / r["seconds"], "per_cpu": r["sent"] / r["cpu"]}
                rows.append(r)
                print(f"{round_:>5} {side:<8} {r['rate']:>8.0f} {r['per_cpu']:>10.0f} {r.get('sql_per_1000') or '':>9}"
                      f" {r.get('commits_per_1000') or '':>12}", flush=True)
    finally:
        provider.terminate()
        provider.wait()
    med = {side: {k: statistics.median(r[k] for r in rows if r["side"] == side) for k in ("rate", "per_cpu")}
           for side in ("raw", "smsched")}
    pairs = [(b["rate"] / a["rate"], b["per_cpu"] / a["per_cpu"]) for a, b in zip(rows[0::2], rows[1::2])]
    print(f"medians: raw {med['raw']['rate']:.0f} msg/s, {med['raw']['per_cpu']:.0f} msg/cpu-s; "
          f"smsched {med['smsched']['rate']:.0f} msg/s, {med['smsched']['per_cpu']:.0f} msg/cpu-s")
    print(f"ratio smsched/raw: throughput {med['smsched']['rate'] / med['raw']['rate']:.2f} "
          f"(pairs {', '.join(f'{p[0]:.2f}' for p in pairs)}), per CPU-second "
          f"{med['smsched']['per_cpu'] / med['raw']['per_cpu']:.2f} (pairs {', '.join(f'{p[1]:.2f}' for p in pairs)})")


if __name__ == "__main__":
    main()
