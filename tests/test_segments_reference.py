"""Segment counts checked against Twilio's own message segment calculator.

The vectors are the calculator's test cases (github.com/TwilioDevEd/message-segment-calculator,
tests/index.test.js and tests/segments.test.js, MIT licence), written here as expressions so the
boundaries read at a glance; the UAX #29 cases come from Unicode's GraphemeBreakTest.txt.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smsched import segments

DIGITS = "1234567890" * 40
ESCAPES = ["|", "^", "€", "{", "}", "[", "]", "~", "\\"]


@pytest.mark.parametrize("body, encoding, count", [
    (DIGITS[:160], "GSM-7", 1),
    (DIGITS[:161], "GSM-7", 2),
    (DIGITS[:307], "GSM-7", 3),                       # 153 + 153 + 1
    ("😜" + DIGITS[1:69], "UCS-2", 1),                # an emoji and 68 digits: 70 code units
    ("😜" + DIGITS[1:70], "UCS-2", 2),
    ("😜" + DIGITS[1:134], "UCS-2", 3),               # 65 + 67 + 1 digits: the emoji is not cut
    ("🇮🇹" + DIGITS[1:67], "UCS-2", 1),               # a flag is one character of 4 code units
    ("🇮🇹" + DIGITS[1:68], "UCS-2", 2),
    ("🏳️‍🌈" + DIGITS[1:65], "UCS-2", 1),              # rainbow flag: 4 code points, 6 code units
    ("🏳️‍🌈" + DIGITS[1:66], "UCS-2", 2),
    ("😀" + "]" * 68, "UCS-2", 1),                    # GSM escapes cost 16 bits, not 32, in UCS-2
    ("😀" + "]" * 69, "UCS-2", 2),
    ("e\u0301\u0301\u0301" + "a" * 66, "UCS-2", 1),                    # one character of four code points
    ("e\u0301\u0301\u0301" + "a" * 67, "UCS-2", 2),
])
def test_twilio_calculator_vectors(body, encoding, count):
    cost = segments.cost(body)
    assert (cost.encoding, cost.segments) == (encoding, count)


@pytest.mark.parametrize("escape", ESCAPES)
def test_an_escape_character_takes_two_septets(escape):
    assert segments.cost(escape + DIGITS[:158]) == ("GSM-7", 160, 1)
    assert segments.cost(escape + DIGITS[:159]) == ("GSM-7", 161, 2)


@pytest.mark.parametrize("character", ["Á", "Ú", "ú", "ç", "í", "Í", "ó", "Ó"])
def test_portuguese_letters_outside_gsm7_make_the_whole_message_ucs2(character):
    assert segments.cost(character * 70) == ("UCS-2", 70, 1)
    assert segments.cost(character * 71) == ("UCS-2", 71, 2)


def test_line_breaks_count_as_the_calculator_counts_them():
    assert len(segments.graphemes("\rabcde\r\n123")) == 11      # CR LF is two characters
    assert len(segments.graphemes("\nabcde\n\n123\n")) == 12
    assert len(segments.graphemes("e\u0301\u0301\u0301")) == 1


@pytest.mark.parametrize("text, clusters", [
    ("🇧🇷🇵🇹🇦", ["🇧🇷", "🇵🇹", "🇦"]),                                    # GB12/GB13: pairs
    ("👶🏽‍👩‍👩‍👧!", ["👶🏽‍👩‍👩‍👧", "!"]),                                       # GB9, GB11
    ("\u2701\u200d\u2701", ["\u2701\u200d\u2701"]),                      # GB11 on ExtPict
    ("a\u200d\u2701", ["a\u200d", "\u2701"]),                            # ZWJ after a letter: break
    ("\U0001F600\u200d\u200d\U0001F600", ["\U0001F600\u200d\u200d", "\U0001F600"]),
    ("\uac00\u11a8 \uac01\u11a8", ["\uac00\u11a8", " ", "\uac01\u11a8"]),  # GB7, GB8: Hangul
    ("\u1100\uac00", ["\u1100\uac00"]),                                  # GB6
    ("\u0600b", ["\u0600b"]),                                            # GB9b: Prepend
    ("\u0915\u0903", ["\u0915\u0903"]),                                  # GB9a: SpacingMark
    ("a\u0308b", ["a\u0308", "b"]),                                      # GB9: Extend
    ("\r\n\u0308", ["\r", "\n", "\u0308"]),                              # GB4: after a control
])
def test_user_perceived_characters_follow_uax29(text, clusters):
    assert segments.graphemes(text) == clusters


LATIN = "abcXYZ 012€^{}[]~|\\çãéÁñ\n\r@£$" + "".join(chr(c) for c in range(0xA0, 0x2FF, 7))


@given(st.text(alphabet=LATIN, max_size=400))
def test_the_latin_fast_path_counts_as_the_full_algorithm(text):
    characters = segments.graphemes(text)
    if all(len(c) == 1 and c in segments.GSM7 for c in characters):
        bits = [14 if c in segments.GSM7_EXTENSION else 7 for c in characters]
        expected = ("GSM-7", sum(bits) // 7, segments.count_segments(bits))
    else:
        bits = [16 * len(c.encode("utf-16-le")) // 2 for c in characters]
        expected = ("UCS-2", sum(bits) // 16, segments.count_segments(bits))
    assert tuple(segments.cost(text)) == expected
