"""The states a message can be in, the moves between them, and a move as a named value.

::

    scheduled ──claim──▶ claimed ──mark──▶ sending ──▶ sent
        ▲  ▲               │  ▲              ├──▶ scheduled  (retry later: back-off, Retry-After)
        │  └── released ───┘  └─ throttled ──┤   (held in the run's own queue, no attempt used)
        │                                    ├──▶ failed     (permanent, or out of attempts)
        │                                    └──▶ unknown    (may have been sent: never resent by itself)
        └── requeued (operator, reconciliation) ◀── unknown | failed
    scheduled ◀──▶ paused;   scheduled | paused | claimed ──▶ cancelled | suppressed
    claimed | sending ──▶ expired (validity over) | scheduled (deferred: quiet hours)
    unknown | scheduled | claimed ──▶ sent (the provider has it: reconciliation, a delivery receipt)

``MOVES_INTO`` is the one home of these rules: every UPDATE in :mod:`smsched.queue` is guarded
by it (``WHERE state IN (...)``), and a :class:`Change` that breaks it cannot be built.
"""

from __future__ import annotations

from collections import namedtuple
from enum import StrEnum


class MessageState(StrEnum):
    SCHEDULED = "scheduled"
    PAUSED = "paused"
    CLAIMED = "claimed"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


S = MessageState
ALL = tuple(S)
# May still leave on their own (campaign status, cancellation).
PENDING = (S.SCHEDULED, S.PAUSED, S.CLAIMED, S.SENDING)
# Held by a dispatch run; recovered when the run dies.
IN_FLIGHT = (S.CLAIMED, S.SENDING)

# Target state -> the states a message may move into it from.
MOVES_INTO: dict[MessageState, frozenset[MessageState]] = {
    S.SCHEDULED: frozenset({S.CLAIMED, S.SENDING, S.PAUSED, S.UNKNOWN, S.FAILED}),
    S.PAUSED: frozenset({S.SCHEDULED}),
    S.CLAIMED: frozenset({S.SCHEDULED, S.SENDING}),
    S.SENDING: frozenset({S.CLAIMED}),
    # The provider says it has the message: its answer, reconciliation, or a receipt (which may
    # arrive while a retry or a resend waits: it must not go out twice).
    S.SENT: frozenset({S.SENDING, S.UNKNOWN, S.SCHEDULED, S.CLAIMED}),
    S.FAILED: frozenset({S.SENDING}),
    S.UNKNOWN: frozenset({S.SENDING}),
    S.SUPPRESSED: frozenset({S.SCHEDULED, S.PAUSED, S.CLAIMED}),
    S.CANCELLED: frozenset({S.SCHEDULED, S.PAUSED, S.CLAIMED}),
    S.EXPIRED: frozenset({S.CLAIMED, S.SENDING}),
}


def sources(target: MessageState, *only: MessageState) -> tuple[MessageState, ...]:
    """The states a move into ``target`` may start from (narrowed to ``only``, which must be allowed)."""
    allowed = MOVES_INTO[target]
    if only:
        wrong = [s for s in only if s not in allowed]
        if wrong:
            raise ValueError(f"no move from {', '.join(wrong)} to {target}")
        return tuple(only)
    return tuple(sorted(allowed))


_ChangeFields = namedtuple(
    "_ChangeFields", "id source target attempted sent_at provider provider_id error scheduled_at lease_until hold_until",
    defaults=(False, None, None, None, None, None, None, None))


class Change(_ChangeFields):
    """One message's move, as the dispatch engine records it.

    ``attempted`` is true when a request for this message left the machine (attempts are
    counted once, then). ``hold_until`` is not stored: a throttled message waits in the run's
    own queue until then. Built through the named moves below (valid by construction, and
    cheap: the engine makes one per message); built directly, it is checked against the rules.
    """

    __slots__ = ()

    def __new__(cls, id, source, target, *rest, **kwargs):  # noqa: A002 - the message's id
        if source not in MOVES_INTO[target]:
            raise ValueError(f"message {id}: no move from {source} to {target}")
        return super().__new__(cls, id, source, target, *rest, **kwargs)


def _move(id, source, target, attempted=False, sent_at=None, provider=None, provider_id=None, error=None,  # noqa: A002
          scheduled_at=None, lease_until=None, hold_until=None) -> Change:
    return tuple.__new__(Change, (id, source, target, attempted, sent_at, provider, provider_id, error, scheduled_at,
                                  lease_until, hold_until))


# How a failure after retries begins its error (the others are the provider's final word).
GAVE_UP = "gave up after"

# ---- the moves, by name -----------------------------------------------------------------


def marked(message_id: int, provider: str, lease_until: float | None = None) -> Change:
    """About to go on the wire: committed before the request leaves (the claim's lease stays)."""
    return _move(message_id, S.CLAIMED, S.SENDING, provider=provider, lease_until=lease_until)


def sent(message_id: int, *, at: float, provider: str, provider_id: str | None) -> Change:
    return _move(message_id, S.SENDING, S.SENT, True, at, provider, provider_id)


def retry_at(message_id: int, when: int, *, provider: str, error: str | None) -> Change:
    return _move(message_id, S.SENDING, S.SCHEDULED, attempted=True, provider=provider, error=error, scheduled_at=when)


def failed(message_id: int, *, provider: str, error: str | None) -> Change:
    return _move(message_id, S.SENDING, S.FAILED, attempted=True, provider=provider, error=error)


def unknown(message_id: int, *, provider: str, error: str | None) -> Change:
    return _move(message_id, S.SENDING, S.UNKNOWN, attempted=True, provider=provider, error=error)


def held(message_id: int, until: float, *, error: str | None = None, lease_until: float | None = None) -> Change:
    """Not taken (throttled, or its provider's breaker is open): back to the run's own queue."""
    return _move(message_id, S.SENDING, S.CLAIMED, error=error, hold_until=until, lease_until=lease_until)


def released(message_id: int, source: MessageState = S.CLAIMED) -> Change:
    """Never sent: back to 'scheduled', untouched, for the next run."""
    return Change(message_id, source, S.SCHEDULED)


def deferred(message_id: int, until: int, source: MessageState = S.CLAIMED, *, reason: str = "deferred: quiet hours") -> Change:
    return Change(message_id, source, S.SCHEDULED, error=reason, scheduled_at=until)


def expired(message_id: int, reason: str, source: MessageState = S.CLAIMED) -> Change:
    return Change(message_id, source, S.EXPIRED, error=reason)


def suppressed(message_id: int) -> Change:
    return Change(message_id, S.CLAIMED, S.SUPPRESSED, error="opted out")


def cancelled(message_id: int) -> Change:
    return Change(message_id, S.CLAIMED, S.CANCELLED, error="campaign cancelled")
