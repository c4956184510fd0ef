"""Where output goes: results on stdout (a rich table, or one JSON document), everything else
(progress, warnings, errors) on stderr, plain when there is no terminal (cron mail)."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from smsched import jsontext

# Control characters from data (names, bodies, files) are shown escaped, never written raw: an
# ESC sequence in a lead's name must not repaint the operator's terminal or forge a log line.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_OR_NEWLINE = re.compile(_CONTROL.pattern[:-1] + r"\n\t]")


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with control characters escaped (\\x1b, \\n unless ``newlines`` are kept)."""
    pattern = _CONTROL if newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return {9: "\\t", 10: "\\n", 13: "\\r"}.get(code) or (f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}")


class CronLog:
    """Log lines for commands cron runs (dispatch, reconcile, receipts serve): without a terminal,
    each line starts with an ISO-8601 UTC timestamp and the run id and holds one whole event,
    written as is (never wrapped, whatever COLUMNS says). On a terminal, rich as usual."""

    def __init__(self):
        self.enabled = False
        self.run_id: int | str | None = None

    def start(self) -> None:
        self.enabled = True

    def prefix(self) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{stamp} run={self.run_id if self.run_id is not None else '-'} "


cron_log = CronLog()


class _Console(Console):
    """A rich console that escapes control characters in the strings it is given."""

    def __init__(self, *args, one_line: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.one_line = one_line

    def print(self, *objects, **kwargs):
        kwargs.setdefault("markup", False)  # what we print is data, never rich markup
        if cron_log.enabled and not self.is_terminal and all(isinstance(o, str) for o in objects):
            text = " ".join(objects)
            self.file.write("".join(cron_log.prefix() + printable(line) + "\n" for line in text.split("\n")))
            self.file.flush()
            return
        super().print(*(printable(o, newlines=not self.one_line) if isinstance(o, str) else o for o in objects),
                      **kwargs)


# Without a terminal (cron mail, pipes) rich would wrap tables at 80 columns.
out = _Console(highlight=False, width=None if sys.stdout.isatty() else 160)
# Each print on stderr is one event on one line (errors, warnings, cron log lines).
err = _Console(stderr=True, highlight=False, soft_wrap=True, one_line=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(jsontext.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        # Text, not str: a name like "[bold]x" is data, not rich markup.
        grid.add_row(*(Text(printable("" if v is None else str(v), newlines=True)) for v in row))
    out.print(grid)


def warn(message: str) -> None:
    err.print(f"warning: {message}", markup=False)


def info(message: str) -> None:
    err.print(message, markup=False)


def interactive() -> bool:
    return err.is_terminal
