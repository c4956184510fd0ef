"""Files smsched writes for people and other programs (rejected rows, metrics).

Their destination is checked before any work is done, so a bad path costs nothing; they are
written beside their destination and moved into place whole, or not at all; and a CSV cell
that a spreadsheet would run as a formula is neutralised (OWASP, CSV injection).
"""

from __future__ import annotations

import os
import re
import tempfile

from smsched.errors import UsageError

# OWASP: a cell starting with = + - @ (or tab, CR, which some spreadsheets skip) is a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")  # E.164 numbers, -5, +12.5: data, never formulas


def check_destination(path: str, *, what: str, inputs: tuple[str, ...] = ()) -> str:
    """An output path that can be written: not a directory, its directory exists, and not one of
    the files being read (writing there would destroy the user's data)."""
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a directory; give a file name, e.g. {os.path.join(path, 'out.csv')}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{what} {path}: the directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{what} {path}: cannot write in {directory} (permission denied)")
    for source in inputs:
        if source and source != "-" and os.path.exists(source) and os.path.exists(path) \
                and os.path.samefile(source, path):
            raise UsageError(f"{what} {path}: that is the file being read; give another name")
    return path


class AtomicFile:
    """A text file written beside its destination and moved there by keep()."""

    def __init__(self, path: str, *, newline: str | None = None, mode: int = 0o644):
        self.path, self.mode = path, mode
        directory = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(dir=directory, prefix=".smsched-", suffix=".tmp")
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline=newline)

    def keep(self) -> str:
        self.file.close()
        os.chmod(self.tmp, self.mode)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def spreadsheet_safe(cell) -> str:
    """A cell a spreadsheet shows as text: formulas get a leading apostrophe."""
    text = "" if cell is None else str(cell)
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text
