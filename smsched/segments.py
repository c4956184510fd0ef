"""What an SMS costs: GSM-7 or UCS-2, and how many segments.

GSM-7 fits 160 septets in one segment, 153 per segment when concatenated; the extension
characters (``^{}\\[~]|€`` and form feed) take two septets and never straddle two segments.
Anything else forces UCS-2: 70 UTF-16 units, 67 when concatenated (an emoji takes two units
and is never split).
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM7 = GSM7_BASIC | GSM7_EXTENSION
_TRANSLITERATE = {
    "“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "´": "'", "`": "'",
    "–": "-", "—": "-", "…": "...", "\u00a0": " ", "•": "-", "º": "o", "ª": "a",
}
TWILIO_MAX_BODY = 1600


class Cost(NamedTuple):
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets or UTF-16 code units
    segments: int


def is_gsm7(text: str) -> bool:
    return set(text) <= GSM7


def cost(text: str) -> Cost:
    if is_gsm7(text):
        widths = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return Cost("GSM-7", sum(widths), _segments(widths, 160, 153))
    widths = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return Cost("UCS-2", sum(widths), _segments(widths, 70, 67))


def _segments(widths: list[int], single: int, per_part: int) -> int:
    if sum(widths) <= single:
        return 1
    parts, used = 1, 0
    for width in widths:
        if used + width > per_part:
            parts, used = parts + 1, 0
        used += width
    return parts


def to_gsm7(text: str) -> str:
    """Transliterate to GSM-7: ç→c, ã→a, ê→e, “→", …; what has no equivalent becomes '?'."""
    out = []
    for char in text:
        if char in GSM7:
            out.append(char)
            continue
        if char in _TRANSLITERATE:
            out.append(_TRANSLITERATE[char])
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        out.append(base if base and set(base) <= GSM7 else "?")
    return "".join(out)


def non_gsm7_chars(text: str) -> list[str]:
    return sorted({c for c in text if c not in GSM7})
