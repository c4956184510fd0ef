"""Generate a 1,000,000-row leads CSV in realistic Brazilian spellings and import it through the CLI.

    python benchmarks/import_leads.py [--rows 1000000]

Prints rows/s and the import process's peak RSS. Target on a 2-core machine: <= 30 s, <= 200 MB.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, children_peak_rss_mb, phone, smsched, workdir  # noqa: E402


def generate(path: Path, rows: int) -> None:
    rng = random.Random(42)
    with open(path, "w", encoding="cp1252", newline="") as f:
        f.write("Nome;Telefone Celular;Cidade;Observação\r\n")
        for i in range(rows):
            f.write(f"Cliente {i};{phone(i, rng)};São Paulo;\"desde {2010 + i % 15}; VIP\"\r\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    directory = workdir("import")
    csv_path, db_path = directory / "leads.csv", directory / "import.db"
    for stale in directory.glob("import.db*"):
        stale.unlink()
    with Timer() as gen:
        generate(csv_path, args.rows)
    smsched("users", "add", "bench", "--db", db_path)
    with Timer() as run:
        result = smsched("leads", "import", "bench", csv_path, "--db", db_path, "--json")
    print(f"generated {args.rows:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in {gen.seconds:.1f}s")
    print(f"import: {run.seconds:.1f}s, {args.rows / run.seconds:,.0f} rows/s, peak RSS {children_peak_rss_mb():.0f} MB")
    print(result.stdout[:400])
    where_the_time_goes(csv_path, run.seconds)


def where_the_time_goes(csv_path: Path, wall: float) -> None:
    """The import's parts measured one by one, in this process: reading and decoding the CSV, and
    libphonenumber on every number (spread over the cores by the import's worker pool)."""
    import os
    import time

    from smsched import csvfiles, phones

    source = csvfiles.open_csv(str(csv_path))
    started = time.process_time()
    numbers = [record[1] for _, record in source.rows()][1:]
    reading = time.process_time() - started
    sample = numbers[:: max(1, len(numbers) // 50_000)]
    started = time.process_time()
    for raw in sample:
        phones.normalize.__wrapped__(raw, "BR")  # every spelling here is new: no cache
    per_number = (time.process_time() - started) / len(sample)
    cores = os.cpu_count() or 1
    parsing = per_number * len(numbers)
    print(f"where the time goes ({cores} cores): reading and decoding the CSV {reading:.1f}s of CPU (main process); "
          f"libphonenumber {per_number * 1e6:.1f} µs per number = {parsing:.1f}s of CPU, {parsing / cores:.1f}s of wall "
          f"on {cores} cores; the rest of {wall:.1f}s is staging, merging and writing the rows in SQLite, "
          "and the main process competing with the parsers for the cores")


if __name__ == "__main__":
    main()
