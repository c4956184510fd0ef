"""The sending window, in the recipient's local time.

A window is written ``HH:MM-HH:MM`` (the hours when sending is allowed; everything outside
is quiet) or ``off``. ``22:00-02:00`` crosses midnight: 22:00 to 02:00 next day is allowed.

A recipient whose number may be in several zones (``Atlantic/Azores,Europe/Lisbon``) gets a
message only when the window is open in every one of them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from smsched import clock
from smsched.errors import UsageError

Window = tuple[int, int] | None  # (start, end) in minutes of the day; None = no quiet hours

_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


@lru_cache(maxsize=256)
def parse_window(text: str) -> Window:
    value = (text or "").strip().lower()
    if value in ("off", "none", ""):
        return None
    match = _WINDOW.match(value)
    if match:
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 < 24 and h2 <= 24 and m1 < 60 and m2 < 60 and (h2 < 24 or m2 == 0):
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start != end:
                return start, end
    raise UsageError(
        f"invalid quiet hours {text!r}: give the sending window as HH:MM-HH:MM "
        "(e.g. 08:00-22:00, or 08:00-21:00 for US senders) or 'off'"
    )


def allows(window: Window, minute_of_day: int) -> bool:
    if window is None:
        return True
    start, end = window
    if start < end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end


@lru_cache(maxsize=4096)
def zones(tz: str) -> tuple[str, ...]:
    """The zones a recipient may be in ("A,B" -> ("A", "B"))."""
    return tuple(z for z in tz.split(",") if z)


NEVER_OPEN = "no hour of the sending window is open in every time zone the number may be in"
SEARCH_DAYS = 8  # a common opening of several zones' windows, if there is one, is within a week


def place(ts: int, tz: str, window: Window) -> int | None:
    """``ts`` if the window is open then in every zone of ``tz``, else the next instant it is;
    None when the zones' windows never overlap (a message to such a number can never go)."""
    if window is None:
        return ts
    names = zones(tz)
    at = ts
    for _ in range(4 * len(names) + 4):
        moved = False
        for name in names:
            local = clock.local_datetime(at, name)
            if not allows(window, local.hour * 60 + local.minute):
                at = clock.next_local_time(at, name, window[0])
                moved = True
        if not moved:
            return at
        if at - ts > SEARCH_DAYS * 86400:
            break
    return None


class LocalMinutes:
    """``allows(window, tz, now)`` for many messages at once: one local-time conversion per
    (zone, minute), shared by every thread of a run."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, int], int] = {}

    def minute_of_day(self, tz: str, now: float) -> int:
        key = (tz, int(now) // 60)
        minute = self.cache.get(key)
        if minute is None:
            if len(self.cache) > 50_000:
                self.cache.clear()
            local = clock.local_datetime(now, tz)
            minute = self.cache[key] = local.hour * 60 + local.minute
        return minute

    def allows(self, window: Window, tz: str, now: float) -> bool:
        """Is the window open now in every zone the recipient may be in?"""
        if window is None:
            return True
        if "," not in tz:
            return allows(window, self.minute_of_day(tz, now))
        return all(allows(window, self.minute_of_day(name, now)) for name in zones(tz))
