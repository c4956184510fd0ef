"""The queue's moves against a real SQLite file: every UPDATE guarded by the states it may start
from and, for a run's moves, by the run that holds the message."""

import pytest

from smsched import queue, states, storage
from smsched.states import S
from tests.conftest import NOW
from tests.dispatch_helpers import seed_users

AT = "2026-11-25 10:00"
DUE = 1795611600  # 13:00 UTC


@pytest.fixture
def five(db_path, tmp_path):
    seed_users(db_path, tmp_path, [5], at=AT, now=NOW)
    db = storage.connect(db_path)
    yield db
    db.conn.close()


def state_of(db, message_id):
    return db.conn.execute("SELECT state, attempts, claimed_by FROM messages WHERE id = ?", (message_id,)).fetchone()


def test_a_change_that_breaks_the_rules_cannot_be_built():
    with pytest.raises(ValueError, match="no move from sent to scheduled"):
        states.Change(1, S.SENT, S.SCHEDULED)
    with pytest.raises(ValueError, match="no move from failed to sending"):
        states.sources(S.SENDING, S.FAILED)


def test_claims_are_exclusive_and_in_order(five):
    first = queue.claim_due(five, now=DUE, limit=3, owner="a", lease_until=9e9)
    second = queue.claim_due(five, now=DUE, limit=10, owner="b", lease_until=9e9)
    assert [m.seq for m in first] == [0, 1, 2] and [m.seq for m in second] == [3, 4]
    assert queue.claim_due(five, now=DUE, limit=10, owner="c", lease_until=9e9) == []
    assert queue.claim_due(five, now=DUE - 1, limit=10, owner="c", lease_until=9e9) == []


def test_a_run_moves_only_what_it_holds_and_only_from_the_expected_state(five):
    (m,) = queue.claim_due(five, now=DUE, limit=1, owner="run-a", lease_until=9e9)
    assert queue.apply(five, [states.marked(m.id, "twilio", 9e9)], owner="run-b", now=DUE) == 0  # not b's
    assert state_of(five, m.id) == ("claimed", 0, "run-a")
    assert queue.apply(five, [states.marked(m.id, "twilio", 9e9)], owner="run-a", now=DUE) == 1
    assert queue.held(five, [m.id], owner="run-a", state="sending") == {m.id}
    # A 'sent' for a message that is not 'sending' any more (recovered meanwhile) does not take.
    queue.recover(five, before=float("inf"), now=DUE)
    assert state_of(five, m.id) == ("unknown", 1, None)
    sent = states.sent(m.id, at=DUE, provider="twilio", provider_id="SM1")
    assert queue.apply(five, [sent], owner="run-a", now=DUE) == 0
    assert state_of(five, m.id) == ("unknown", 1, None)


def test_attempts_count_requests_that_left_once(five):
    (m,) = queue.claim_due(five, now=DUE, limit=1, owner="r", lease_until=9e9)
    queue.apply(five, [states.marked(m.id, "twilio", 9e9)], owner="r", now=DUE)
    queue.apply(five, [states.held(m.id, DUE + 1)], owner="r", now=DUE)  # throttled: no attempt
    assert state_of(five, m.id) == ("claimed", 0, "r")
    queue.apply(five, [states.marked(m.id, "twilio", 9e9)], owner="r", now=DUE)
    queue.apply(five, [states.sent(m.id, at=DUE, provider="twilio", provider_id="SM1")], owner="r", now=DUE)
    assert state_of(five, m.id) == ("sent", 1, None)


def test_recovery_puts_claims_back_and_makes_sending_unknown(five):
    lock = five.dialect.run_lock(five, "gone")  # its dispatcher runs, as far as anyone can tell
    lock.try_exclusive()
    claimed = queue.claim_due(five, now=DUE, limit=3, owner="gone", lease_until=100.0)
    queue.apply(five, [states.marked(claimed[0].id, "twilio", 100.0)], owner="gone", now=DUE)
    assert queue.first_look(five, before=101.0, run_id=None, providers=[])["orphans"]
    assert not queue.first_look(five, before=99.0, run_id=None, providers=[])["orphans"]
    assert queue.recover(five, before=101.0, now=DUE) == {"claimed_to_scheduled": 2, "sending_to_unknown": 1, "sending_to_sent": 0}
    assert [state_of(five, m.id)[0] for m in claimed] == ["unknown", "scheduled", "scheduled"]
    lock.release()


def test_people_move_only_waiting_messages(five):
    ids = [m.id for m in queue.claim_due(five, now=DUE, limit=1, owner="r", lease_until=9e9)]
    assert queue.move_campaign(five, 1, S.PAUSED, (S.SCHEDULED,), now=DUE) == 4  # the claimed one stays
    assert state_of(five, ids[0])[0] == "claimed"
    assert queue.move_campaign(five, 1, S.CANCELLED, (S.SCHEDULED, S.PAUSED), now=DUE) == 4
    with pytest.raises(ValueError):
        queue.move_campaign(five, 1, S.SCHEDULED, (S.SENT,), now=DUE)


def test_next_due_is_the_earliest_scheduled_message(five):
    assert queue.next_due(five) == DUE
    assert queue.next_due(five, ["whatsapp"]) is None
