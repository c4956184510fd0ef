"""The sending window, in the recipient's local time.

A window is written ``HH:MM-HH:MM`` (the hours when sending is allowed; everything outside
is quiet) or ``off``. ``22:00-02:00`` crosses midnight: 22:00 to 02:00 next day is allowed.
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


def place(ts: int, tz_name: str, window: Window) -> int:
    """``ts`` if it falls inside the window in tz_name, else the next window opening."""
    if window is None:
        return ts
    local = clock.local_datetime(ts, tz_name)
    if allows(window, local.hour * 60 + local.minute):
        return ts
    return clock.next_local_time(ts, tz_name, window[0])


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
        return window is None or allows(window, self.minute_of_day(tz, now))
