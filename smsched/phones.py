"""Phone numbers: normalise what people type to E.164 and find the recipient's time zone."""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult
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
    tz: str | None  # the recipient's IANA zone when the number maps to exactly one
    reason: str | None  # why it is invalid


def check_region(region: str) -> str:
    code = (region or "").strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise UsageError(
            f"unknown region {region!r}: use a two-letter country code such as BR, US or PT"
        )
    return code


def normalize(raw: str, region: str) -> Normalized:
    """One number as typed -> E.164, its time zone, or the reason it was rejected."""
    text = (raw or "").strip()
    if not text:
        return Normalized(None, None, "blank")
    if text.startswith("00") and not text.startswith("+"):
        text = "+" + text[2:]  # international dialling prefix, common in exported lists
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return Normalized(None, None, _PARSE_REASONS.get(exc.error_type, "not a phone number"))
    if not phonenumbers.is_valid_number(number):
        possible = phonenumbers.is_possible_number_with_reason(number)
        detail = _POSSIBLE_REASONS.get(possible, "not a valid number")
        return Normalized(None, None, f"{detail} for region {phonenumbers.region_code_for_number(number) or region}")
    return Normalized(
        phonenumbers.format_number(number, PhoneNumberFormat.E164), _single_zone(number), None
    )


def normalize_or_fail(raw: str, region: str) -> str:
    """Like normalize() for a number typed on the command line: invalid is an error."""
    result = normalize(raw, region)
    if result.phone is None:
        raise UsageError(f"invalid phone number {raw!r}: {result.reason}")
    return result.phone


def _single_zone(number: phonenumbers.PhoneNumber) -> str | None:
    zones = phone_timezone.time_zones_for_number(number)
    if len(zones) == 1 and zones[0] != "Etc/Unknown":
        return zones[0]
    return None


@lru_cache(maxsize=65536)
def zone_for_e164(phone: str) -> str | None:
    """The time zone of an already-normalised number (None when it spans several)."""
    try:
        return _single_zone(phonenumbers.parse(phone, None))
    except NumberParseException:
        return None
