"""What an SMS costs: GSM-7 or UCS-2, and how many segments, counted as Twilio bills them.

The reference is Twilio's message segment calculator (github.com/TwilioDevEd/message-segment-
calculator) and its tests: the body is split into user-perceived characters (extended grapheme
clusters, Unicode UAX #29; a CR LF pair counts as two), a character is never split across two
segments, and a segment carries 1,120 bits:

- GSM-7 when every character is one GSM 03.38 character: 7 bits each, 14 for the extension
  characters ``^{}\\[~]|€`` and form feed (escape + character): 160 septets in a single
  segment, 153 per segment once a 48-bit header is needed;
- otherwise UCS-2: 16 bits per UTF-16 code unit of each character (an emoji is 2 units, a flag
  4, a family of four 11): 70 units alone, 67 per segment with headers.

When a character does not fit, the full segment gets its header and hands its last characters on
to the next one, so an escape pair or an emoji is never cut (segment 1 may then hold fewer).
"""

from __future__ import annotations

import bisect
import unicodedata
from functools import lru_cache
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
SEGMENT_BITS = 1120   # 140 octets
HEADER_BITS = 48      # the user data header of a concatenated message


class Cost(NamedTuple):
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets or UTF-16 code units
    segments: int


def is_gsm7(text: str) -> bool:
    return set(text) <= GSM7


@lru_cache(maxsize=4096)
def cost(text: str) -> Cost:
    if not text or max(text) < _COMBINING_START:
        return _simple_cost(text)
    characters = graphemes(text)
    gsm = all(len(c) == 1 and c in GSM7 for c in characters)
    if gsm:
        bits = [14 if c in GSM7_EXTENSION else 7 for c in characters]
        return Cost("GSM-7", sum(bits) // 7, count_segments(bits))
    bits = [16 * _utf16_units(c) for c in characters]
    return Cost("UCS-2", sum(bits) // 16, count_segments(bits))


# Below U+0300 (Latin) no character combines with another: each code point is a character of its
# own, one UTF-16 unit, and the segments follow from the count (the common case, 40x faster).
_COMBINING_START = "\u0300"


def _simple_cost(text: str) -> Cost:
    if set(text) <= GSM7:
        if not set(text) & GSM7_EXTENSION:
            n = len(text)
            return Cost("GSM-7", n, 1 if n <= 160 else -(-n // 153))
        bits = [14 if c in GSM7_EXTENSION else 7 for c in text]
        return Cost("GSM-7", sum(bits) // 7, count_segments(bits))
    n = len(text)
    return Cost("UCS-2", n, 1 if n <= 70 else -(-n // 67))


def _utf16_units(character: str) -> int:
    return sum(2 if ord(c) > 0xFFFF else 1 for c in character)


def count_segments(bits: list[int]) -> int:
    """Twilio's calculator: fill a segment; when a character does not fit, start one with a
    header, and give the previous one its header too, moving its last characters along."""
    if sum(bits) <= SEGMENT_BITS:
        return 1
    segments: list[list[int]] = [[]]
    used = [0]
    headed = [False]
    for size in bits:
        if SEGMENT_BITS - used[-1] < size:
            carried: list[int] = []
            if not headed[-1]:
                headed[-1] = True
                used[-1] += HEADER_BITS
                while used[-1] > SEGMENT_BITS:
                    moved = segments[-1].pop()
                    used[-1] -= moved
                    carried.insert(0, moved)
            segments.append(carried)
            used.append(HEADER_BITS + sum(carried))
            headed.append(True)
        segments[-1].append(size)
        used[-1] += size
    return len(segments)


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
    """The characters (as people see them: a flag is one) that force UCS-2."""
    return sorted({c for c in graphemes(text) if len(c) > 1 or c not in GSM7})


# ---- user-perceived characters (UAX #29 extended grapheme clusters) ----------------------

OTHER, CR, LF, CONTROL, EXTEND, ZWJ, RI, PREPEND, SPACING, L, V, T, LV, LVT = range(14)

# Extended_Pictographic (emoji-data.txt): the ranges that matter for messages.
_PICTOGRAPHIC = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328),
    (0x2388, 0x2388), (0x23CF, 0x23CF), (0x23E9, 0x23F3), (0x23F8, 0x23FA), (0x24C2, 0x24C2),
    (0x25AA, 0x25AB), (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE), (0x2600, 0x2605),
    (0x2607, 0x2612), (0x2614, 0x2685), (0x2690, 0x2705), (0x2708, 0x2712), (0x2714, 0x2714),
    (0x2716, 0x2716), (0x271D, 0x271D), (0x2721, 0x2721), (0x2728, 0x2728), (0x2733, 0x2734),
    (0x2744, 0x2744), (0x2747, 0x2747), (0x274C, 0x274C), (0x274E, 0x274E), (0x2753, 0x2755),
    (0x2757, 0x2757), (0x2763, 0x2767), (0x2795, 0x2797), (0x27A1, 0x27A1), (0x27B0, 0x27B0),
    (0x27BF, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C), (0x2B50, 0x2B50),
    (0x2B55, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D), (0x3297, 0x3297), (0x3299, 0x3299),
    (0x2700, 0x2704), (0x1F000, 0x1F0FF), (0x1F10D, 0x1F10F), (0x1F12F, 0x1F12F),
    (0x1F16C, 0x1F171), (0x1F17E, 0x1F17F), (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A),
    (0x1F1AD, 0x1F1E5), (0x1F201, 0x1F20F), (0x1F21A, 0x1F21A), (0x1F22F, 0x1F22F),
    (0x1F232, 0x1F23A), (0x1F23C, 0x1F23F), (0x1F249, 0x1F3FA), (0x1F400, 0x1F53D),
    (0x1F546, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F774, 0x1F77F), (0x1F7D5, 0x1F7FF),
    (0x1F80C, 0x1F80F), (0x1F848, 0x1F84F), (0x1F85A, 0x1F85F), (0x1F888, 0x1F88F),
    (0x1F8AE, 0x1F8FF), (0x1F90C, 0x1F93A), (0x1F93C, 0x1F945), (0x1F947, 0x1FAFF),
    (0x1FC00, 0x1FFFD),
)
# Spacing combining marks that are Grapheme_Extend (not SpacingMark), and Prepend characters.
_EXTEND_MC = frozenset({0x09BE, 0x09D7, 0x0B3E, 0x0B57, 0x0BBE, 0x0BD7, 0x0CC2, 0x0CD5, 0x0CD6, 0x0D3E,
                        0x0D57, 0x0DCF, 0x0DDF, 0x1B35, 0x302E, 0x302F, 0x1D165, 0x1D16E, 0x1D16F,
                        0x1D170, 0x1D171, 0x1D172})
_PREPEND = frozenset({*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x0D4E, 0x110BD,
                      0x110CD, 0x111C2, 0x111C3, 0x1193F, 0x11941, 0x11A3A, *range(0x11A84, 0x11A8A), 0x11D46})


_PICTOGRAPHIC_SORTED = sorted(_PICTOGRAPHIC)
_PICTOGRAPHIC_STARTS = [low for low, _ in _PICTOGRAPHIC_SORTED]


@lru_cache(maxsize=8192)
def _pictographic(cp: int) -> bool:
    index = bisect.bisect_right(_PICTOGRAPHIC_STARTS, cp) - 1
    return index >= 0 and cp <= _PICTOGRAPHIC_SORTED[index][1]


@lru_cache(maxsize=8192)
def _break_class(char: str) -> int:
    cp = ord(char)
    if cp == 0x0D:
        return CR
    if cp == 0x0A:
        return LF
    if cp == 0x200D:
        return ZWJ
    if 0x1F1E6 <= cp <= 0x1F1FF:
        return RI
    if 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F or cp == 0x200C or cp in (0xFF9E, 0xFF9F) \
            or cp in _EXTEND_MC:
        return EXTEND
    if cp in _PREPEND:
        return PREPEND
    if 0x1100 <= cp <= 0x115F or 0xA960 <= cp <= 0xA97C:
        return L
    if 0x1160 <= cp <= 0x11A7 or 0xD7B0 <= cp <= 0xD7C6:
        return V
    if 0x11A8 <= cp <= 0x11FF or 0xD7CB <= cp <= 0xD7FB:
        return T
    if 0xAC00 <= cp <= 0xD7A3:
        return LV if (cp - 0xAC00) % 28 == 0 else LVT
    category = unicodedata.category(char)
    if category in ("Mn", "Me"):
        return EXTEND
    if category == "Mc" or cp in (0x0E33, 0x0EB3):
        return SPACING
    if category in ("Cc", "Zl", "Zp", "Cs") or (category == "Cf" and cp not in (0x200C, 0x200D)):
        return CONTROL
    return OTHER


def graphemes(text: str) -> list[str]:
    """The text's user-perceived characters, CR LF counted as two (as Twilio counts them)."""
    if text.isascii():
        return list(text)  # every ASCII character is a cluster of its own here (CR LF included)
    clusters: list[str] = []
    current = ""
    previous = -1
    pictographic_run = False  # inside ExtPict Extend* (ZWJ)?: GB11 joins a following ExtPict
    regional = 0              # regional indicators in a row, for GB12/GB13
    for char in text:
        kind = _break_class(char)
        pictographic = _pictographic(ord(char))
        if current and not _joins(previous, kind, pictographic_run and pictographic, regional):
            clusters.append(current)
            current = ""
            regional = 0
        regional = regional + 1 if kind == RI else 0
        pictographic_run = pictographic or (
            pictographic_run and (kind == EXTEND or (kind == ZWJ and previous != ZWJ)))
        current += char
        previous = kind
    if current:
        clusters.append(current)
    result = []
    for cluster in clusters:  # the calculator splits a CR LF cluster into its two characters
        result.extend(("\r", "\n") if cluster == "\r\n" else (cluster,))
    return result


def _joins(before: int, after: int, emoji_sequence: bool, regional: int) -> bool:
    """No break between two characters (UAX #29 rules GB3-GB13)?"""
    if before == CR and after == LF:
        return True                                        # GB3
    if before in (CONTROL, CR, LF) or after in (CONTROL, CR, LF):
        return False                                       # GB4, GB5
    if before == L and after in (L, V, LV, LVT):
        return True                                        # GB6
    if before in (LV, V) and after in (V, T):
        return True                                        # GB7
    if before in (LVT, T) and after == T:
        return True                                        # GB8
    if after in (EXTEND, ZWJ, SPACING):
        return True                                        # GB9, GB9a
    if before == PREPEND:
        return True                                        # GB9b
    if before == ZWJ and emoji_sequence:
        return True                                        # GB11
    if before == RI and after == RI:
        return regional % 2 == 1                           # GB12, GB13
    return False                                           # GB999
