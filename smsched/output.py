"""Where output goes: results on stdout (a rich table, or one JSON document), everything else
(progress, warnings, errors) on stderr, plain when there is no terminal (cron mail)."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

# Without a terminal (cron mail, pipes) rich would wrap tables at 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if v is None else str(v) for v in row))
    out.print(grid)


def warn(message: str) -> None:
    err.print(f"warning: {message}", markup=False)


def info(message: str) -> None:
    err.print(message, markup=False)


def interactive() -> bool:
    return err.is_terminal
