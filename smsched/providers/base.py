"""What every provider shares: the message it is handed, the request it builds, and the one
outcome each answer means.

Outcomes:
- ACCEPTED: the provider took the message (we keep its id).
- RETRY: not taken, try again later (after ``retry_after`` seconds when the provider said so).
- PERMANENT: will never be taken (code and reason kept; ``opt_out`` when the person opted out).
- UNKNOWN: the request may have reached the provider (HTTP 500, read timeout, connection
  reset after sending). Never resent automatically; ``[dispatch] ambiguous = "retry"`` opts in
  to at-least-once.
- CONFIG: our credentials or settings were refused: stop the run, leave messages scheduled.

Two attributes cut across the kinds, and the engine asks for them instead of listing codes:
- ``throttled``: the provider said "slow down" (HTTP 429, Twilio 20429, Meta 130429/80007/4).
  Flow control, not a failure: no attempt is used, the run slows down and sends it again.
- ``outage``: the provider or the way to it is failing (5xx, network error, timeout). Only
  these count toward the circuit breaker.
"""

from __future__ import annotations

import abc
import email.utils
import json
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, NamedTuple

ACCEPTED, RETRY, PERMANENT, UNKNOWN, CONFIG = "accepted", "retry", "permanent", "unknown", "config"


class OutMessage(NamedTuple):
    """What a provider needs to send one message (a tuple: a run builds thousands per second)."""

    id: int
    phone: str
    channel: str
    body: str
    params: list[str] | None = None
    template: str | None = None
    lang: str | None = None
    campaign_id: int | None = None
    user: str | None = None
    sender: str | None = None
    fields: Mapping = MappingProxyType({})


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes = b""


class Outcome(NamedTuple):
    """What one answer means (a tuple: a run makes thousands per second)."""

    kind: str
    provider_id: str | None = None
    retry_after: float | None = None
    code: str | None = None
    reason: str | None = None
    opt_out: bool = False
    throttled: bool = False
    outage: bool = False

    @property
    def error(self) -> str | None:
        if self.kind == ACCEPTED:
            return None
        return " ".join(p for p in (f"[{self.code}]" if self.code else "", self.reason or "") if p) or self.kind


MESSAGE_ID_HEADER = "X-Smsched-Message-Id"


class CannotList(Exception):
    """This provider offers no way to ask whether it has a message (check ``can_list`` first)."""


@dataclass(frozen=True)
class Listed:
    """One message as the provider's list shows it."""

    sid: str
    to: str
    sender: str | None
    body: str
    created_at: float  # Unix seconds, the provider's clock
    status: str


class Provider(abc.ABC):
    """Turns an OutMessage into an HttpRequest, and an HTTP answer into an Outcome."""

    name = "provider"
    channels: tuple[str, ...] = ()
    # Documented defaults, overridable per provider in smsched.toml.
    default_rate = 10.0
    # The settings a [providers.NAME] table may hold, by kind (checked when the configuration is
    # loaded; every provider also takes rate, burst and sender_rate). Secrets are never shown.
    url_settings: tuple[str, ...] = ("base_url",)
    text_settings: tuple[str, ...] = ()
    secret_settings: tuple[str, ...] = ()
    # Does a request carry the lead's fields (so the engine must read them)?
    needs_lead_fields = False
    # Can we ask the provider which messages it has (reconciliation)? See list_request().
    can_list = False
    # Why not, when it cannot: said in the 'unknown' message's error.
    cannot_list = "this provider offers no way to ask whether it has a message"

    def __init__(self, settings: dict, *, receipts_url: str | None = None):
        self.settings = settings
        # Where delivery receipts go ([receipts] public_url), for providers that take it per message.
        self.receipts_url = receipts_url.rstrip("/") if receipts_url else None
        self.rate = float(settings.get("rate") or self.default_rate)
        # Smooth pacing by default (1/rate apart): never more than `rate` in any second.
        self.burst = int(settings.get("burst") or 1)
        self.sender_rate = float(settings.get("sender_rate") or 0) or None

    @abc.abstractmethod
    def build(self, message: OutMessage) -> HttpRequest:
        """The HTTP request that sends this message."""

    @abc.abstractmethod
    def classify(self, status: int, headers: dict, body: bytes) -> Outcome:
        """What an HTTP answer to build()'s request means."""

    def check_request(self) -> HttpRequest | None:
        """A request that proves the credentials without sending anything (None: not possible)."""
        return None

    def sender_for(self, message: OutMessage) -> str:
        return message.sender or ""

    # What this provider's error codes mean, for answers and for delivery receipts alike.
    codes: dict = {}

    def is_opt_out(self, code) -> bool:
        """Does this error code say the person opted out (answer or delivery receipt)?"""
        try:
            meaning = self.codes.get(int(code))
        except (TypeError, ValueError):
            return False
        return bool(meaning and meaning.opt_out)

    # ---- reconciliation (providers with a message list API) ------------------------------
    def list_key(self, message: OutMessage) -> tuple[str, str | None]:
        """The To and From the provider files this message under (From None: it chooses)."""
        raise CannotList(self.cannot_list)

    def list_request(self, *, to: str, sender: str | None, since: float, page: str | None = None) -> HttpRequest:
        """The request for one page of the messages sent to ``to`` (from ``sender``) since ``since``."""
        raise CannotList(self.cannot_list)

    def parse_list(self, body: bytes) -> tuple[list["Listed"], str | None]:
        """One page of the provider's list: its messages and the next page (None at the end)."""
        raise CannotList(self.cannot_list)

    def missing_settings(self) -> list[str]:
        return []


def retry_after_seconds(headers: dict, default: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    value = _header(headers, "retry-after")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else default


def _header(headers, name: str) -> str | None:
    value = headers.get(name)  # case-insensitive for the HTTP clients' header mappings
    if value is not None:
        return value
    for key, value in headers.items():  # a plain dict (tests, other callers)
        if key.lower() == name:
            return value
    return None


def json_body(body: bytes) -> dict:
    try:
        data = json.loads(body.decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def by_status(status: int, headers: dict, reason: str | None, code: str | None = None) -> Outcome:
    """The outcome an HTTP status means when the body names no code we know."""
    if 200 <= status < 300:
        return Outcome(ACCEPTED)
    if status in (401, 403):
        return Outcome(CONFIG, code=code or str(status), reason=reason or "credentials refused")
    if status == 429:
        return Outcome(RETRY, retry_after=retry_after_seconds(headers), code=code or "429", reason=reason or "rate limited",
                       throttled=True)
    if status == 503:
        return Outcome(RETRY, retry_after=retry_after_seconds(headers), code=code or "503", reason=reason or "service unavailable",
                       outage=True)
    if status >= 500 or status in (408,):
        return Outcome(UNKNOWN, code=code or str(status), reason=reason or f"HTTP {status}: the provider may have sent it",
                       outage=True)
    return Outcome(PERMANENT, code=code or str(status), reason=reason or f"HTTP {status}")


@dataclass(frozen=True)
class Code:
    """What one of a provider's error codes means."""

    kind: str
    opt_out: bool = False
    backoff: float | None = None  # when no Retry-After came with it
    throttled: bool = False


def by_code(table: dict[int, Code], code, status: int, headers: dict, reason: str | None) -> Outcome:
    """The outcome a provider's error code means, else what the HTTP status means."""
    try:
        number = int(code) if code is not None else None
    except (TypeError, ValueError):
        number = None
    meaning = table.get(number) if number is not None else None
    if meaning is not None:
        return Outcome(meaning.kind, code=str(number), reason=reason, opt_out=meaning.opt_out, throttled=meaning.throttled,
                       outage=status >= 500,
                       retry_after=retry_after_seconds(headers, meaning.backoff) if meaning.kind == RETRY else None)
    return by_status(status, headers, reason, str(number) if number else None)
