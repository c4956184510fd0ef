"""The dispatch engine before and after its second edition, same machine, same run.

    python benchmarks/engine_before_after.py [--before b35ed4b] [--messages 20000] [--pairs 3] [--kills 10]

"before" is the engine at a commit of this repository (extracted with `git archive`), "after" is
this working tree. For each, the same load is prepared by that version's own CLI, then:

1. throughput: `dispatch --time-budget 0` to the fast loopback provider, runs alternating
   before/after (A B A B ...), messages/s per run and the ratio pair by pair;
2. commits per 1,000 messages sent: every commit the dispatch process makes, counted from the
   statements it runs (sqlite3's trace callback, installed by a sitecustomize module): each
   COMMIT, and each write statement that runs outside a transaction (its own commit);
3. the kill -9 storm: a 20,000-message run against the sandbox (50 ms per answer, --workers 16)
   killed --kills times at random moments and restarted; messages 'unknown' afterwards (the last
   kill's 'sending' rows included: the next start marks them 'unknown').
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import workdir  # noqa: E402
from dispatch_e2e import write_config  # noqa: E402
from provider_push import free_port  # noqa: E402

from smsched.sandbox import wait_for_port  # noqa: E402

COUNTER = '''
import atexit, os, sqlite3
_commits = [0]
_in_tx = [False]
_real_connect = sqlite3.connect
def _trace(sql):
    head = sql.lstrip()[:12].upper()
    if head.startswith("BEGIN"):
        _in_tx[0] = True
    elif head.startswith(("COMMIT", "END")):
        _in_tx[0] = False
        _commits[0] += 1
    elif head.startswith("ROLLBACK"):
        _in_tx[0] = False
    elif not _in_tx[0] and (head.startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))
                            or (head.startswith("WITH") and any(w in sql.upper() for w in ("UPDATE ", "INSERT ", "DELETE ")))):
        _commits[0] += 1
class _Counted(sqlite3.Connection):
    # smsched installs its own trace callback (it counts its statements): call both.
    def set_trace_callback(self, callback):
        if callback is None:
            return super().set_trace_callback(_trace)
        def both(sql):
            _trace(sql)
            callback(sql)
        return super().set_trace_callback(both)
def _connect(*args, **kwargs):
    kwargs.setdefault("factory", _Counted)
    conn = _real_connect(*args, **kwargs)
    conn.set_trace_callback(None)
    return conn
sqlite3.connect = _connect
_out = os.environ.get("SMSCHED_COUNT_COMMITS")
if _out:
    atexit.register(lambda: open(_out, "a").write(f"{_commits[0]}\\n"))
'''


def smsched(source: Path, *args, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(source), **(env or {})}
    # cwd elsewhere: `python -m` puts the working directory first on sys.path
    result = subprocess.run([sys.executable, "-m", "smsched", *map(str, args)], env=environment,
                            capture_output=True, text=True, cwd=tempfile.gettempdir())
    if check and result.returncode != 0:
        sys.exit(f"smsched {' '.join(map(str, args))} failed:\n{result.stderr[-2000:]}")
    return result


def prepare(source: Path, directory: Path, messages: int) -> Path:
    db = directory / "base.db"
    for stale in directory.glob("base.db*"):
        stale.unlink()  # a database left by an earlier run may have another version's schema
    users = max(1, messages // 100)
    (directory / "users.csv").write_text("name,quiet_hours\n" + "".join(f"u{i},off\n" for i in range(users)))
    (directory / "leads.csv").write_text("user,telefone,nome\n" + "".join(
        f"u{i // 100},+55119{i:08d},Lead {i}\n" for i in range(users * 100)))
    (directory / "campaigns.csv").write_text("user,at,message\n" + "".join(
        f"u{i},2026-12-01 10:00,Olá {{name}}! Promoção de hoje na loja.\n" for i in range(users)))
    smsched(source, "users", "import", directory / "users.csv", "--db", db)
    smsched(source, "leads", "import-many", directory / "leads.csv", "--db", db)
    smsched(source, "campaigns", "import", directory / "campaigns.csv", "--db", db, "--now", "2026-12-01T12:00:00Z")
    return db


def fresh_copy(base: Path, name: str) -> Path:
    target = base.with_name(name)
    for stale in base.parent.glob(f"{name}*"):
        stale.unlink()
    src = sqlite3.connect(base)
    dst = sqlite3.connect(target)
    src.backup(dst)
    src.close(), dst.close()
    return target


def timed_run(source: Path, db: Path, config: Path, counter_dir: Path, commits_file: Path) -> tuple[float, int, int]:
    env = {"PYTHONPATH": f"{counter_dir}{os.pathsep}{source}", "SMSCHED_COUNT_COMMITS": str(commits_file)}
    commits_file.unlink(missing_ok=True)
    started = time.perf_counter()
    result = smsched(source, "dispatch", "--db", db, "--config", config, "--now", "2026-12-01T13:00:00Z",
                     "--time-budget", "0", "--json", env=env)
    seconds = time.perf_counter() - started
    sent = json.loads(result.stdout)["sent"]
    commits = sum(int(line) for line in commits_file.read_text().split())
    return sent / seconds, sent, commits


def kill_storm(source: Path, db: Path, config: Path, kills: int, rng: random.Random) -> dict:
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-m", "smsched", "dispatch", "--db", str(db), "--config", str(config),
                                 "--now", "2026-12-01T13:00:00Z", "--time-budget", "0", "--workers", "16"],
                                env={**os.environ, "PYTHONPATH": str(source)}, cwd=tempfile.gettempdir(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.6, 1.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    conn = sqlite3.connect(db)
    counts = dict(conn.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())
    conn.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="b35ed4b")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    directory = workdir("before-after")
    before_src = Path(tempfile.mkdtemp(prefix="smsched-before-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "smsched"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(before_src)], input=archive.stdout, check=True)
    counter_dir = Path(tempfile.mkdtemp(prefix="smsched-counter-"))
    (counter_dir / "sitecustomize.py").write_text(COUNTER)
    versions = {"before": before_src, "after": ROOT}
    bases = {}
    for name, source in versions.items():
        folder = directory / name
        folder.mkdir(exist_ok=True)
        bases[name] = prepare(source, folder, args.messages)
    port = free_port()
    provider = subprocess.Popen([sys.executable, str(HERE / "fast_provider.py"), "--port", str(port)])
    wait_for_port(port)
    config = directory / "fast.toml"
    write_config(config, f"http://127.0.0.1:{port}", "urllib3", 32)
    results = {name: [] for name in versions}
    print(f"{args.messages:,} messages per run, fast loopback provider, 32 workers (runs alternate before/after)")
    try:
        for pair in range(args.pairs):
            for name, source in versions.items():
                db = fresh_copy(bases[name], f"run-{name}.db")
                rate, sent, commits = timed_run(source, db, config, counter_dir, directory / "commits.txt")
                results[name].append((rate, sent, commits))
                print(f"pair {pair + 1} {name:<6}: {rate:8,.0f} messages/s, {sent:,} sent, {commits:,} commits "
                      f"({1000 * commits / sent:.1f} per 1,000)", flush=True)
    finally:
        provider.send_signal(signal.SIGTERM)
        provider.wait(timeout=30)
    ratios = [a[0] / b[0] for a, b in zip(results["after"], results["before"])]
    print()
    print("| engine | messages/s (median of runs) | commits per 1,000 messages sent |")
    print("| --- | --- | --- |")
    for name in versions:
        rates = [r[0] for r in results[name]]
        per_1000 = [1000 * r[2] / r[1] for r in results[name]]
        print(f"| {name} ({args.before if name == 'before' else 'this tree'}) | {statistics.median(rates):,.0f} "
              f"| {statistics.median(per_1000):.1f} |")
    print(f"\nafter/before throughput, pair by pair: {', '.join(f'{r:.2f}' for r in ratios)}")

    port = free_port()
    sandbox = subprocess.Popen([sys.executable, "-m", "smsched", "sandbox", "serve", "--port", str(port),
                                "--latency-ms", "50"], stderr=subprocess.DEVNULL)
    wait_for_port(port)
    storm_config = directory / "sandbox.toml"
    write_config(storm_config, f"http://127.0.0.1:{port}", "urllib3", 16)
    try:
        print(f"\nkill -9 storm: {args.kills} kills at random moments, --workers 16, 50 ms per answer")
        for name, source in versions.items():
            db = fresh_copy(bases[name], f"storm-{name}.db")
            counts = kill_storm(source, db, storm_config, args.kills, random.Random(7))
            # The next start turns the last kill's 'sending' rows into 'unknown' too.
            lost = counts.get("unknown", 0) + counts.get("sending", 0)
            print(f"{name:<6}: unknown {lost:,} ({lost / args.kills:.1f} per kill); "
                  f"states {json.dumps(counts, sort_keys=True)}", flush=True)
    finally:
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=30)


if __name__ == "__main__":
    main()
