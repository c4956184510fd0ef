"""Reading the CSV files people export from spreadsheets and CRMs.

Encoding: a BOM decides (UTF-8, UTF-16); otherwise the whole file is checked as UTF-8, then
cp1252 (Excel on Windows), then latin-1, which decodes anything. Delimiter: whichever of
``,`` ``;`` tab ``|`` occurs most in the header line outside quotes.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import shutil
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from smsched.errors import ImportFailed

DELIMITERS = {",": ",", ";": ";", "tab": "\t", "\\t": "\t", "\t": "\t", "|": "|"}
_CHUNK = 1 << 20
csv.field_size_limit(10 * 1024 * 1024)


@dataclass
class CsvSource:
    """An opened CSV file: its rows, and what was detected about it."""

    name: str
    encoding: str
    delimiter: str
    size: int
    binary: BinaryIO

    def position(self) -> int:
        try:
            return self.binary.tell()
        except (OSError, ValueError):
            return 0

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line number where the record starts, fields) for every record, header included."""
        self.binary.seek(0)
        text = io.TextIOWrapper(self.binary, encoding=self.encoding, newline="", errors="strict")
        reader = csv.reader(text, delimiter=self.delimiter)
        line = 1
        try:
            for record in reader:
                yield line, record
                line = reader.line_num + 1
        except UnicodeDecodeError:
            raise ImportFailed(
                f"{self.name}: line {_undecodable_line(self.binary, self.encoding)}: bytes that are not "
                f"{self.encoding}; it's often worth trying --encoding latin-1 or --encoding cp1252"
            ) from None
        except csv.Error as exc:
            raise ImportFailed(f"{self.name}: line {line}: {exc}") from None
        finally:
            try:
                text.detach()
            except ValueError:
                pass  # the file was closed under us (generator closed after an error)


def open_csv(path: str, *, encoding: str | None = None, delimiter: str | None = None) -> CsvSource:
    """Open a file (or '-' for standard input) and detect its encoding and delimiter."""
    binary, name = _open_binary(path)
    size = _size(binary)
    if size == 0:
        raise ImportFailed(f"{name} is empty: export the leads again, with a header line")
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ImportFailed(f"unknown encoding {encoding!r}: try utf-8, cp1252 or latin-1") from None
    else:
        encoding = detect_encoding(binary, name)
    if delimiter is not None:
        if delimiter not in DELIMITERS:
            raise ImportFailed(f"unsupported delimiter {delimiter!r}: use , ; tab or |")
        delimiter = DELIMITERS[delimiter]
    else:
        delimiter = detect_delimiter(_first_line(binary, encoding))
    return CsvSource(name=name, encoding=encoding, delimiter=delimiter, size=size, binary=binary)


def _open_binary(path: str) -> tuple[BinaryIO, str]:
    if path == "-":
        # Spool standard input to disk: detection needs two passes and stdin has one.
        spool = tempfile.TemporaryFile()
        shutil.copyfileobj(sys.stdin.buffer, spool, _CHUNK)
        spool.seek(0)
        return spool, "standard input"
    if os.path.isdir(path):
        raise ImportFailed(f"{path} is a directory; give a CSV file")
    try:
        return open(path, "rb"), path
    except FileNotFoundError:
        raise ImportFailed(f"{path}: no such file") from None
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read it ({exc.strerror})") from None


def _size(binary: BinaryIO) -> int:
    binary.seek(0, os.SEEK_END)
    size = binary.tell()
    binary.seek(0)
    return size


def detect_encoding(binary: BinaryIO, name: str) -> str:
    binary.seek(0)
    head = binary.read(4)
    binary.seek(0)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16"
    sample = binary.read(8192)
    binary.seek(0)
    if b"\x00" in sample or _looks_binary(sample):
        raise ImportFailed(
            f"{name} looks like a binary file, not CSV text; export it as CSV "
            "(UTF-8, UTF-16 with BOM, or cp1252)"
        )
    for candidate in ("utf-8", "cp1252"):
        if _decodes_whole(binary, candidate):
            return candidate
    return "latin-1"


def _looks_binary(sample: bytes) -> bool:
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 13, 12))
    return controls > max(8, len(sample) // 100)


def _decodes_whole(binary: BinaryIO, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    binary.seek(0)
    try:
        while chunk := binary.read(_CHUNK):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
        return True
    except UnicodeDecodeError:
        return False
    finally:
        binary.seek(0)


def _undecodable_line(binary: BinaryIO, encoding: str) -> int:
    """The line holding the first byte that does not decode (the text reader reads ahead)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    binary.seek(0)
    offset, newlines = 0, 0
    while chunk := binary.read(_CHUNK):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            return newlines + chunk[: max(0, exc.start)].count(b"\n") + 1
        newlines += chunk.count(b"\n")
        offset += len(chunk)
    return newlines + 1


def _first_line(binary: BinaryIO, encoding: str) -> str:
    binary.seek(0)
    text = io.TextIOWrapper(binary, encoding=encoding, newline="", errors="replace")
    try:
        return text.readline()
    finally:
        text.detach()
        binary.seek(0)


def detect_delimiter(header_line: str) -> str:
    unquoted = re.sub(r'"[^"]*"', "", header_line)
    counts = {d: unquoted.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def normalise_key(header: str) -> str:
    """'Nome Completo' -> 'nome_completo', 'Número' -> 'numero', 'E-mail' -> 'e_mail'."""
    decomposed = unicodedata.normalize("NFKD", header or "")
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", "_", ascii_only.lower()).strip("_")
