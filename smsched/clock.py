"""Time: parsing what people type, time zones, and a clock that tests and simulations can set.

DST rule, for local times given without an offset:
- a time that does not exist (the hour skipped when clocks go forward) moves forward by the
  length of the gap: 00:30 on a day Sao Paulo skipped 00:00-01:00 becomes 01:30;
- a time that occurs twice (clocks go back) means the first occurrence, the earlier instant.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache

from dateutil import parser as date_parser
from dateutil import tz as date_tz

from smsched.errors import UsageError

_RELATIVE = re.compile(r"^\+\s*(\d+(?:\.\d+)?)\s*([smhdw])$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ISO_START = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}")
# Instants smsched accepts: from 1970 to the start of 3000 (a year is never typed as 9999 on purpose).
LATEST = 32503680000  # 3000-01-01T00:00:00Z
# Durations: up to a hundred years.
LONGEST = 100 * 365 * 86400


_IANA_NAME = re.compile(r"[A-Z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9][A-Za-z0-9_+-]*){1,2}")


@lru_cache(maxsize=None)
def zone(name: str) -> tzinfo:
    """The tzinfo for an IANA name, or a UsageError that says what to type. A name, never a
    path: dateutil would read any file it is given (/etc/passwd, ../../x)."""
    tzinfo_ = None
    if name in ("UTC", "GMT") or (isinstance(name, str) and _IANA_NAME.fullmatch(name)):
        try:
            tzinfo_ = date_tz.gettz(name)
        except (ValueError, OSError):
            tzinfo_ = None
    if tzinfo_ is None:
        raise UsageError(
            f"unknown time zone {name!r}: use an IANA name such as America/Sao_Paulo"
        )
    return tzinfo_


def parse_duration(text: str, *, what: str = "duration") -> float:
    """'55s', '200ms', '5m', '1h30m', '6h', or plain seconds ('90') -> seconds (at most 100 years)."""
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return _bounded_duration(float(value), text, what)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise UsageError(
            f"invalid {what} {text!r}: use a number with a unit, e.g. 200ms, 55s, 5m, 6h, 1d"
        )
    return _bounded_duration(total, text, what)


def _bounded_duration(seconds: float, text: str, what: str) -> float:
    if not seconds <= LONGEST:  # also catches inf and nan
        raise UsageError(f"{what} {text!r} is too long: at most 100 years (36500d)")
    return seconds


def localize(naive: datetime, tz: tzinfo) -> datetime:
    """Attach ``tz`` to a naive local time following the module's DST rule."""
    aware = naive.replace(tzinfo=tz, fold=0)
    if not date_tz.datetime_exists(aware):
        aware = date_tz.resolve_imaginary(aware)
    return aware


def parse_when(text: str, tz_name: str, now: float, *, what: str = "the time") -> int:
    """What people type for a schedule -> UTC Unix seconds.

    Accepts ``now``, ``+15m``/``+2h``/``+1d``, ISO forms (``2026-11-26 09:00``,
    ``2026-11-26T09:00-03:00``) and Brazilian day-first (``26/11/2026 09:00``).
    Times without an offset are read in ``tz_name``. Only instants from 1970 to 2999 exist here.
    """
    value = str(text).strip()
    if not value:
        raise UsageError(f"empty {what}: use e.g. '2026-11-26 09:00', '26/11/2026 09:00', now or +15m")
    if value.lower() == "now":
        return _bounded_instant(now, text, what)
    relative = _RELATIVE.match(value.lower())
    if relative:
        unit = _UNIT_SECONDS[relative.group(2)]
        return _bounded_instant(now + float(relative.group(1)) * unit, text, what)
    if re.fullmatch(r"@\d+(\.\d+)?", value):  # Unix seconds, as `date +@%s` prints
        return _bounded_instant(float(value[1:]), text, what)
    try:
        if _ISO_START.match(value):
            parsed = date_parser.isoparse(value) if "T" in value else date_parser.parse(
                value, yearfirst=True, dayfirst=False
            )
        else:
            parsed = date_parser.parse(value, dayfirst=True)
    except (ValueError, OverflowError):
        raise UsageError(
            f"cannot read {what} {text!r}: use e.g. '2026-11-26 09:00', "
            "'26/11/2026 09:00', '2026-11-26T09:00-03:00', now, +15m, +2h or +1d"
        ) from None
    if not 1970 <= parsed.year <= 2999:
        raise _out_of_range(text, what)
    try:
        if parsed.tzinfo is None:
            parsed = localize(parsed, zone(tz_name))
        return _bounded_instant(parsed.timestamp(), text, what)
    except (OverflowError, ValueError, OSError):
        raise _out_of_range(text, what) from None


def _bounded_instant(ts: float, text: str, what: str) -> int:
    if not 0 <= ts < LATEST:  # also catches inf and nan
        raise _out_of_range(text, what)
    return int(ts)


def _out_of_range(text: str, what: str) -> UsageError:
    return UsageError(f"{what} {text!r} is out of range: give a time between 1970 and 2999")


def iso_utc(ts: float | None) -> str | None:
    """UTC Unix seconds -> '2026-11-26T12:00:00Z' (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )


def iso_local(ts: float, tz_name: str) -> str:
    return datetime.fromtimestamp(ts, zone(tz_name)).isoformat(timespec="minutes")


def local_datetime(ts: float, tz_name: str) -> datetime:
    return datetime.fromtimestamp(ts, zone(tz_name))


def next_local_time(ts: float, tz_name: str, minute_of_day: int) -> int:
    """The first instant >= ts at which the clock in tz_name reads minute_of_day."""
    tz = zone(tz_name)
    local = datetime.fromtimestamp(ts, tz)
    hour, minute = divmod(minute_of_day, 60)
    for days in range(0, 3):
        day = (local + timedelta(days=days)).date()
        candidate = localize(datetime(day.year, day.month, day.day, hour, minute), tz)
        if candidate.timestamp() >= ts:
            return int(candidate.timestamp())
    raise AssertionError("a local time always recurs within three days")


class Clock:
    """Wall-clock time, optionally shifted so that it starts at a given instant.

    ``Clock(start)`` reads ``start`` now and advances in real time from there: a dispatch
    run with ``--now`` behaves exactly as a real one started at that instant.
    """

    def __init__(self, start: float | None = None):
        self.offset = 0.0 if start is None else start - time.time()

    def now(self) -> float:
        return time.time() + self.offset

    @property
    def simulated(self) -> bool:
        return self.offset != 0.0
