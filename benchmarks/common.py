"""Helpers shared by the benchmarks: timing, peak memory of child processes, running the CLI."""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

SPELLINGS = (
    "({ddd}) {a}-{b}",
    "+55 ({ddd}) {a}-{b}",
    "0{ddd}{a}{b}",
    "{ddd}{a}{b}",
    "55 {ddd} {a} {b}",
)
DDDS = ("11", "21", "31", "41", "51", "61", "71", "81", "85", "92")


def phone(index: int, rng: random.Random) -> str:
    ddd = DDDS[index % len(DDDS)]
    digits = f"{index:08d}"[-8:]
    return rng.choice(SPELLINGS).format(ddd=ddd, a="9" + digits[:4], b=digits[4:])


def smsched(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would; a failure stops the benchmark with smsched's own message."""
    result = subprocess.run([sys.executable, "-m", "smsched", *map(str, args)], env={**os.environ, **(env or {})},
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"smsched {' '.join(map(str, args))} failed (exit {result.returncode}):\n{result.stderr}")
    return result


def children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def workdir(name: str) -> Path:
    path = Path(os.environ.get("SMSCHED_BENCH_DIR", "/tmp")) / f"smsched-bench-{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path
