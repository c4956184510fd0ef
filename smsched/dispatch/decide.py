"""What a provider's answer means for one message: a pure function from (message, outcome, now,
policy) to the move to record. No I/O, no clock: the table-driven test in
``tests/test_decide.py`` reads like the README's outcome table.
"""

from __future__ import annotations

from smsched import quiet_hours, states
from smsched.dispatch.retry_policy import RetryPolicy
from smsched.providers import ACCEPTED, CONFIG, PERMANENT, RETRY, UNKNOWN, Outcome
from smsched.queue import QueuedMessage
from smsched.states import Change

# What a worker reports when no request left for a message it was handed.
NOT_SENT_STOPPING = Outcome("stopping")      # the run is stopping: back to 'scheduled', untouched
NOT_SENT_UNAVAILABLE = Outcome("unavailable")  # its provider takes nothing now (breaker open, throttle pause)
DEFERRED = Outcome("deferred")               # quiet hours began between the claim and the send


def decide(message: QueuedMessage, outcome: Outcome, now: float, policy: RetryPolicy, *,
           window: quiet_hours.Window = None, ready_at: float | None = None) -> Change:
    m = message
    if outcome.kind == ACCEPTED:  # the common case first: a run decides thousands a second
        return states.sent(m.id, at=now, provider=m.provider, provider_id=outcome.provider_id)
    if outcome is NOT_SENT_STOPPING or outcome.kind == CONFIG:
        # Refused for our credentials, or never sent: untouched, no attempt used.
        return states.released(m.id, states.S.SENDING)
    if outcome is NOT_SENT_UNAVAILABLE:
        return states.held(m.id, ready_at if ready_at is not None else now)
    if outcome is DEFERRED:
        opens = quiet_hours.place(int(now), m.tz, window)
        if opens is None:
            return states.expired(m.id, quiet_hours.NEVER_OPEN, states.S.SENDING)
        if opens > m.expires_at:
            return states.expired(m.id, "quiet hours until after its validity", states.S.SENDING)
        return states.deferred(m.id, max(opens, int(now) + 1), states.S.SENDING)
    if outcome.throttled:
        # "Slow down", not a failure: no attempt used, the same run sends it again.
        wait = policy.throttle_wait(outcome.retry_after)
        if wait <= policy.hold_limit:
            return states.held(m.id, now + wait, error=outcome.error)
        return states.Change(m.id, states.S.SENDING, states.S.SCHEDULED, provider=m.provider, error=outcome.error,
                             scheduled_at=int(now + wait) + 1)
    attempts = m.attempts + 1
    kind = RETRY if outcome.kind == UNKNOWN and policy.ambiguous_retry else outcome.kind
    if kind == RETRY:
        when = policy.next_retry(attempts, outcome.retry_after, now)
        if when is None:
            return states.failed(m.id, provider=m.provider, error=f"{states.GAVE_UP} {attempts} attempts: {outcome.error}")
        return states.retry_at(m.id, when, provider=m.provider, error=outcome.error)
    if kind == PERMANENT:
        return states.failed(m.id, provider=m.provider, error=outcome.error)
    return states.unknown(m.id, provider=m.provider, error=outcome.error)
