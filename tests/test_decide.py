"""The outcome table, as a pure function: what each provider answer means for one message.

Each row: the answer, the message's attempts so far, and the move that must be recorded.
No database, no HTTP, no clock: `decide` is handed `now` and a retry policy with a fixed
random source, so every row is exact.
"""

import random

import pytest

from smsched.dispatch.decide import DEFERRED, NOT_SENT_STOPPING, NOT_SENT_UNAVAILABLE, decide
from smsched.dispatch.retry_policy import RetryPolicy
from smsched.providers import ACCEPTED, CONFIG, PERMANENT, RETRY, UNKNOWN, Outcome
from smsched.queue import QueuedMessage
from smsched.states import S

NOW = 1_795_611_600.0  # 2026-11-25T13:00:00Z, 10:00 in Sao Paulo


def message(attempts: int = 0, tz: str = "America/Sao_Paulo", expires_in: int = 6 * 3600) -> QueuedMessage:
    return QueuedMessage(id=7, campaign_id=1, user_id=1, lead_id=1, phone="+5511987654321", channel="sms", body="Oi",
                         params=None, tz=tz, priority=1, seq=0, scheduled_at=int(NOW), expires_at=int(NOW) + expires_in,
                         attempts=attempts, provider="twilio")


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.5  # the middle of the ±20% band: exactly base × 2^(n-1)


def policy(**kwargs) -> RetryPolicy:
    return RetryPolicy(base=30, cap=3600, max_attempts=5, rng=NoJitter(), **kwargs)


# (answer, attempts before, expected target, attempted, scheduled_at offset or None, error starts with)
TABLE = [
    ("accepted", Outcome(ACCEPTED, provider_id="SM1"), 0, S.SENT, True, None, None),
    ("throttled, Retry-After 2 s: held in the run", Outcome(RETRY, code="20429", retry_after=2, throttled=True), 0, S.CLAIMED, False, None, "[20429]"),
    ("throttled, no Retry-After: held 1 s", Outcome(RETRY, code="429", throttled=True), 3, S.CLAIMED, False, None, "[429]"),
    ("throttled, Retry-After 300 s: back to the database", Outcome(RETRY, code="80007", retry_after=300, throttled=True), 0, S.SCHEDULED, False, 301, "[80007]"),
    ("retry later, first attempt: 30 s", Outcome(RETRY, code="30001"), 0, S.SCHEDULED, True, 31, "[30001]"),
    ("retry later, third attempt: 120 s", Outcome(RETRY, code="503", outage=True), 2, S.SCHEDULED, True, 121, "[503]"),
    ("retry later, Retry-After longer than the back-off", Outcome(RETRY, code="503", retry_after=600), 0, S.SCHEDULED, True, 601, "[503]"),
    ("retry later, out of attempts", Outcome(RETRY, code="503"), 4, S.FAILED, True, None, "gave up after 5 attempts: [503]"),
    ("network: never left", Outcome(RETRY, code="network", reason="not sent: refused", outage=True), 0, S.SCHEDULED, True, 31, "[network] not sent"),
    ("permanent", Outcome(PERMANENT, code="21211", reason="invalid To"), 0, S.FAILED, True, None, "[21211] invalid To"),
    ("permanent opt-out", Outcome(PERMANENT, code="21610", opt_out=True), 0, S.FAILED, True, None, "[21610]"),
    ("ambiguous: unknown", Outcome(UNKNOWN, code="500", outage=True), 0, S.UNKNOWN, True, None, "[500]"),
    ("credentials refused: untouched", Outcome(CONFIG, code="20003"), 0, S.SCHEDULED, False, None, None),
    ("run stopping: untouched", NOT_SENT_STOPPING, 0, S.SCHEDULED, False, None, None),
]


@pytest.mark.parametrize("answer, outcome, attempts, target, attempted, delay, error", TABLE, ids=[r[0] for r in TABLE])
def test_outcome_table(answer, outcome, attempts, target, attempted, delay, error):
    change = decide(message(attempts), outcome, NOW, policy())
    assert (change.source, change.target, change.attempted) == (S.SENDING, target, attempted)
    if delay is None:
        assert change.scheduled_at is None
    else:
        assert change.scheduled_at == int(NOW) + delay
    if error is None:
        assert change.error is None
    else:
        assert change.error.startswith(error)
    if target == S.CLAIMED:
        assert change.hold_until == NOW + (outcome.retry_after if outcome.retry_after is not None else 1.0)


def test_accepted_keeps_the_provider_id_and_time():
    change = decide(message(), Outcome(ACCEPTED, provider_id="SM1"), NOW + 0.25, policy())
    assert (change.provider_id, change.sent_at, change.provider) == ("SM1", NOW + 0.25, "twilio")


def test_at_least_once_setting_turns_ambiguous_into_retry():
    change = decide(message(), Outcome(UNKNOWN, code="500"), NOW, policy(ambiguous_retry=True))
    assert (change.target, change.attempted, change.scheduled_at) == (S.SCHEDULED, True, int(NOW) + 31)


def test_unavailable_provider_holds_the_message_until_it_is_ready():
    change = decide(message(), NOT_SENT_UNAVAILABLE, NOW, policy(), ready_at=NOW + 4)
    assert (change.target, change.attempted, change.hold_until) == (S.CLAIMED, False, NOW + 4)


def test_quiet_hours_at_the_moment_of_sending_defer_to_the_next_opening():
    at_22 = 1_795_654_800.0  # 2026-11-26T01:00:00Z = 22:00 in Sao Paulo
    change = decide(message(expires_in=24 * 3600), DEFERRED, at_22, policy(), window=(8 * 60, 22 * 60))
    assert (change.target, change.attempted, change.scheduled_at) == (S.SCHEDULED, False, 1_795_690_800)  # 08:00


def test_quiet_hours_past_the_validity_expire():
    at_22 = 1_795_654_800.0
    change = decide(message(expires_in=600), DEFERRED, at_22, policy(), window=(8 * 60, 22 * 60))
    assert (change.target, change.error) == (S.EXPIRED, "quiet hours until after its validity")


def test_back_off_is_capped_and_jittered_within_twenty_percent():
    rng = random.Random(3)
    p = RetryPolicy(base=30, cap=3600, max_attempts=20, rng=rng)
    delays = [p.next_retry(attempts, None, 0.0) - 1 for attempts in range(1, 15)]
    for attempts, delay in enumerate(delays, start=1):
        nominal = min(3600, 30 * 2 ** (attempts - 1))
        assert nominal * 0.8 - 1 <= delay <= nominal * 1.2
    assert max(delays) <= 3600 * 1.2
