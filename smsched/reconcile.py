"""Resolving 'unknown' honestly: ask the provider whether it has each message.

An 'unknown' message's request may have reached the provider (a read timeout, a reset, a run
killed while sending). For a provider with a message list API (Twilio), smsched lists what the
provider has for that recipient and sender since the attempt, and matches by recipient, body
and time window (the attempt's wall-clock time ± WINDOW_S):

- found -> 'sent', with the provider's message id;
- provably absent (the list covers the window and nothing matches) -> 'scheduled', due now: the
  next dispatch sends it, once;
- several 'unknown' messages with the same recipient and body are matched by count, and a
  provider message already recorded for another of our messages is never matched again.

A provider without such an API (WhatsApp Cloud API, a generic webhook) cannot say: its messages
stay 'unknown' with the reason in ``error``. A bad answer (401, 5xx, a timeout) changes nothing
for that provider and is reported.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import sqlite_utils

from smsched import queue, segments
from smsched.config import Config
from smsched.http import MaybeSent, NotSent, Transport
from smsched.providers import OutMessage, Provider
from smsched.storage import transaction

# How far around our attempt a provider's record may lie (its clock against ours, and queueing).
WINDOW_S = 300.0
MAX_PAGES = 200


class ProviderAnswerError(Exception):
    """The provider's list could not be read."""


@dataclass
class ProviderResult:
    provider: str
    checked: int = 0
    sent: int = 0
    requeued: int = 0
    unresolved: int = 0
    error: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "provider"}


@dataclass
class Result:
    providers: dict[str, ProviderResult] = field(default_factory=dict)

    def total(self, key: str) -> int:
        return sum(getattr(p, key) for p in self.providers.values())

    @property
    def errors(self) -> list[str]:
        return [f"{name}: {p.error}" for name, p in self.providers.items() if p.error]

    def as_dict(self) -> dict:
        return {"checked": self.total("checked"), "sent": self.total("sent"), "requeued": self.total("requeued"),
                "unresolved": self.total("unresolved"),
                "providers": {name: p.as_dict() for name, p in self.providers.items()}}


def reconcile(db: sqlite_utils.Database, config: Config, *, providers: list[str] | None = None,
              older_than: float = 0.0, transport: Transport | None = None, now: float | None = None) -> Result:
    """Reconcile the 'unknown' messages of ``providers`` (default: every provider that has some)
    whose request left more than ``older_than`` seconds ago."""
    wall = time.time()
    stamp = now if now is not None else wall
    names = providers or [r[0] for r in db.conn.execute(
        "SELECT DISTINCT provider FROM messages WHERE state = 'unknown' AND provider IS NOT NULL ORDER BY provider")]
    own_transport = transport is None
    transport = transport or Transport(pool_size=4, connect_timeout=config.seconds("connect_timeout"),
                                       read_timeout=config.seconds("read_timeout"), client=config.dispatch("http_client"))
    result = Result()
    try:
        for name in names:
            provider = config.provider(name)
            messages = queue.unknown_messages(db, name, sent_before=wall - older_than)
            entry = result.providers[name] = ProviderResult(name, checked=len(messages))
            if not messages:
                continue
            if not provider.can_list or provider.missing_settings():
                reason = (f"{name}: {provider.cannot_list}; decide with `smsched retry --unknown` (may resend)"
                          if not provider.can_list else f"{name} is missing {', '.join(provider.missing_settings())}")
                with transaction(db):
                    queue.resolve_unknown(db, found=[], absent=[], unresolved=[(m["id"], reason) for m in messages],
                                          now=stamp)
                entry.unresolved, entry.detail = len(messages), reason
                continue
            try:
                found, absent = _match(db, provider, transport, messages)
            except ProviderAnswerError as exc:
                entry.error, entry.unresolved = str(exc), len(messages)
                continue
            with transaction(db):
                entry.sent, entry.requeued = queue.resolve_unknown(db, found=found, absent=absent, unresolved=[],
                                                                   now=stamp)
            entry.unresolved = len(messages) - entry.sent - entry.requeued
    finally:
        if own_transport:
            transport.close()
    return result


def _match(db, provider: Provider, transport: Transport, messages: list[dict]) -> tuple[list, list]:
    groups: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
    for m in messages:
        out = OutMessage(id=m["id"], phone=m["phone"], channel=m["channel"], body=m["body"], template=m["template"],
                         sender=m["sender"])
        groups[provider.list_key(out)].append(m)
    found, absent = [], []
    for (to, sender), group in groups.items():
        since = min(m["sending_at"] for m in group) - WINDOW_S
        listed = [x for x in _list_all(provider, transport, to, sender, since) if x.to == to]
        taken = queue.known_provider_ids(db, [x.sid for x in listed])
        for m in sorted(group, key=lambda m: (m["sending_at"], m["id"])):
            match = _first_match(m, listed, taken)
            if match is None:
                absent.append(m["id"])
            else:
                taken.add(match.sid)
                found.append((m["id"], match.sid, match.created_at))
    return found, absent


def _first_match(message: dict, listed: list, taken: set[str]):
    low, high = message["sending_at"] - WINDOW_S, message["sending_at"] + WINDOW_S
    candidates = [x for x in listed if x.sid not in taken and low <= x.created_at <= high]
    for same in (lambda x: x.body == message["body"],
                 # A provider's "smart encoding" may have turned “ ” into " " and so on.
                 lambda x: segments.to_gsm7(x.body) == segments.to_gsm7(message["body"])):
        hits = sorted((x for x in candidates if same(x)), key=lambda x: abs(x.created_at - message["sending_at"]))
        if hits:
            return hits[0]
    return None


def _list_all(provider: Provider, transport: Transport, to: str, sender: str | None, since: float) -> list:
    """Every page of the provider's list for this recipient since ``since`` (newest first)."""
    listed, page = [], None
    for _ in range(MAX_PAGES):
        request = provider.list_request(to=to, sender=sender, since=since, page=page)
        try:
            response = transport.send(request)
        except (NotSent, MaybeSent) as exc:
            raise ProviderAnswerError(f"cannot list messages ({exc})") from None
        if response.status != 200:
            raise ProviderAnswerError(f"listing messages answered HTTP {response.status}"
                                      + (" (credentials refused)" if response.status in (401, 403) else ""))
        try:
            items, page = provider.parse_list(response.body)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderAnswerError(f"unreadable message list ({type(exc).__name__})") from None
        listed += items
        if not page or (items and min(x.created_at for x in items) < since):
            return listed
    raise ProviderAnswerError(f"more than {MAX_PAGES} pages of messages for one recipient; not covered")
