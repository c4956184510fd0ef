"""What people name things and how messages are signed: user and campaign names, sender IDs."""

from __future__ import annotations

import re
import unicodedata

from smsched import phones
from smsched.errors import UsageError

MAX_NAME = 200
# Twilio's alphanumeric sender ID: up to 11 of A-Z, a-z, 0-9 and space, at least one letter.
_ALPHANUMERIC_SENDER = re.compile(r"[A-Za-z0-9 ]{1,11}")
_SHORT_CODE = re.compile(r"\d{3,6}")
_PHONE_LIKE = re.compile(r"\+?[\d\s().-]+")


def check_name(text: str, what: str) -> str:
    """A name as shown in tables and logs: printable, one line, not too long."""
    name = (text or "").strip()
    if not name:
        raise UsageError(f"{what} cannot be empty")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") and c != "\u200d"), None)
    if bad is not None:
        raise UsageError(f"{what} {name!r} holds a control character ({bad!r}); use printable text on one line")
    if len(name) > MAX_NAME:
        raise UsageError(f"{what} is {len(name)} characters long; at most {MAX_NAME}")
    return name


def check_sender(text: str | None, region: str) -> str | None:
    """A sender (From): a phone number (stored as E.164), a short code, or an alphanumeric sender ID."""
    if text is None:
        return None
    sender = text.strip()
    if not sender:
        raise UsageError("empty sender: leave it out to use the provider's configured From")
    if _SHORT_CODE.fullmatch(sender):
        return sender
    if _PHONE_LIKE.fullmatch(sender):
        result = phones.normalize(sender, region)
        if result.phone is None:
            raise UsageError(f"sender {sender!r} is not a valid phone number ({result.reason}); give it as +5511...")
        return result.phone
    if _ALPHANUMERIC_SENDER.fullmatch(sender) and any(c.isalpha() for c in sender):
        return sender
    raise UsageError(f"invalid sender {sender!r}: give a phone number (+5511...), a short code, or an alphanumeric "
                     "sender ID of up to 11 letters, digits and spaces with at least one letter")
