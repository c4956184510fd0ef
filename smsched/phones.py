"""Phone numbers: normalise what people type to E.164, and find the recipient's time zones and
whether the number is a landline.

Parsing follows libphonenumber's rules for the user's region first, so an international
prefix is read as the phone network reads it there (in Brazil `0021 1 650 253 0000` is Embratel
to +1 650 253 0000, `0014 55 11 ...` is Brasil Telecom to +55 11 ...; in Singapore 001 and 008
are carriers' prefixes). Only when that gives no valid number and the text starts with 00 is it
tried as + (lists exported as `0044 7911 123456`).

Time zones: every zone libphonenumber gives for the number (a Portuguese mobile may be in Lisbon
or the Azores), corrected by ``ZONE_OVERRIDES`` where its data is known to be wrong. Several
zones are kept, comma-separated: quiet hours must hold in each of them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult
from phonenumbers import timezone as phone_timezone

from smsched.errors import UsageError

_POSSIBLE_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "invalid country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "invalid length",
}
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "invalid country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}


class Normalized(NamedTuple):
    phone: str | None  # E.164, or None when invalid
    tz: str | None  # the recipient's IANA zone(s), comma-separated; None when unknown
    reason: str | None  # why it is invalid
    line_type: str | None = None  # libphonenumber's type: mobile, fixed_line, fixed_line_or_mobile, ...


LINE_TYPES = {
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOICEMAIL: "voicemail",
}
LANDLINE = "fixed_line"  # cannot receive SMS on most networks (Twilio answers 21614)

# Where libphonenumber's zone data is wrong, by E.164 prefix (longest prefix wins). Each entry
# says why and has a test. Checked for every Brazilian area code (DDD) against ANATEL's area codes
# by state and the IANA tz database (zone1970.tab; its Brazil notes: Lei 11.662/2008,
# Lei 12.876/2013, Decreto 9.772/2019, no daylight saving time since 2019). Area codes where the
# library names another zone with the same offset (Bahia as America/Sao_Paulo, Mato Grosso as
# America/Manaus) are not errors today and are left to the library.
ZONE_OVERRIDES: dict[str, tuple[str, ...]] = {
    # Pernambuco (Recife): libphonenumber says America/Noronha (UTC-2) for every 81 number; the
    # state is UTC-3. Fernando de Noronha (~3,000 people) shares 81 and is UTC-2; its numbers
    # cannot be told apart by prefix, so it gets Recife's window (one hour later by its own clock).
    "+5581": ("America/Recife",),
    # Pará west (Santarém) and south-east (Marabá): libphonenumber says America/Manaus (UTC-4)
    # for fixed lines; the whole state is UTC-3 since Lei 11.662/2008.
    "+5593": ("America/Santarem",),
    "+5594": ("America/Belem",),
    # Amazonas west: 97 covers Tefé (UTC-4) and Eirunepé, Envira, Guajará, Ipixuna, Boca do Acre
    # (UTC-5 again since Lei 12.876/2013); libphonenumber says America/Manaus only.
    "+5597": ("America/Manaus", "America/Eirunepe"),
}
_OVERRIDE_LENGTHS = sorted({len(prefix) for prefix in ZONE_OVERRIDES}, reverse=True)


def check_region(region: str) -> str:
    code = (region or "").strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise UsageError(
            f"unknown region {region!r}: use a two-letter country code such as BR, US or PT"
        )
    return code


@lru_cache(maxsize=65536)
def normalize(raw: str, region: str) -> Normalized:
    """One number as typed -> E.164, its time zone(s) and line type, or the reason it was rejected.

    Remembered: a file that spells the same number the same way twice is parsed once
    (phonenumbers is most of an import's time)."""
    text = (raw or "").strip()
    if not text:
        return Normalized(None, None, "blank")
    number, kind, reason = _parse(text, region)
    if number is None and text.startswith("00"):
        # Not a number by the region's own dialling rules: read 00 as +, as lists often mean it.
        fallback, fallback_kind, _ = _parse("+" + text[2:], region)
        if fallback is not None:
            number, kind, reason = fallback, fallback_kind, None
    if number is None:
        return Normalized(None, None, reason)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return Normalized(e164, zones_for(e164, number, kind), None, LINE_TYPES.get(kind, "unknown"))


def _parse(text: str, region: str) -> tuple[phonenumbers.PhoneNumber | None, int | None, str | None]:
    """The number, its type, or why it is not one. A number is valid exactly when libphonenumber
    gives it a type (is_valid_number is that test): asking once is half the metadata matching."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return None, None, _PARSE_REASONS.get(exc.error_type, "not a phone number")
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        possible = phonenumbers.is_possible_number_with_reason(number)
        detail = _POSSIBLE_REASONS.get(possible, "not a valid number")
        return None, None, f"{detail} for region {phonenumbers.region_code_for_number(number) or region}"
    return number, kind, None


def zones_for(e164: str, number: phonenumbers.PhoneNumber | None = None, kind: int | None = None) -> str | None:
    """Every time zone the number may be in, comma-separated (None when unknown)."""
    for length in _OVERRIDE_LENGTHS:
        zones = ZONE_OVERRIDES.get(e164[:length])
        if zones:
            return ",".join(zones)
    if number is None:
        try:
            number = phonenumbers.parse(e164, None)
        except NumberParseException:
            return None
    zones = [z for z in _library_zones(number, kind) if z != "Etc/Unknown"]
    return ",".join(zones) if zones else None


def _library_zones(number: phonenumbers.PhoneNumber, kind: int | None):
    """time_zones_for_number(), step for step, without asking for the number's type a second
    time when normalize() already has it (that is a sixth of an import's phone-number time)."""
    if kind is None:
        return phone_timezone.time_zones_for_number(number)
    if kind == PhoneNumberType.UNKNOWN:
        return ("Etc/Unknown",)
    if not phonenumbers.is_number_type_geographical(kind, number.country_code):
        return phone_timezone._country_level_time_zones_for_number(number)
    return phone_timezone.time_zones_for_geographical_number(number)


def normalize_or_fail(raw: str, region: str) -> str:
    """Like normalize() for a number typed on the command line: invalid is an error."""
    result = normalize(raw, region)
    if result.phone is None:
        raise UsageError(f"invalid phone number {raw!r}: {result.reason}")
    return result.phone

