"""The circuit breaker on an injected clock: opens on consecutive outages, probes after the
cooldown, closes on an answer, and never counts throttling."""

from smsched.dispatch.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_opens_after_threshold_consecutive_outages_only():
    clock = Clock()
    breaker = Breaker(3, 5.0, clock=clock)
    for outage in (True, True, False, True, True):  # an answer in between breaks the run of outages
        breaker.record(outage)
    assert breaker.state == CLOSED and breaker.allow()
    breaker.record(True)
    assert breaker.state == OPEN and not breaker.allow() and breaker.opened == 1


def test_one_probe_after_the_cooldown_and_an_answer_closes_it():
    clock = Clock()
    breaker = Breaker(2, 5.0, clock=clock)
    breaker.record(True)
    breaker.record(True)
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.allow() and breaker.state == HALF_OPEN  # the probe
    assert not breaker.allow()  # only one
    breaker.record(False)
    assert breaker.state == CLOSED and breaker.allow() and breaker.probes == 1


def test_a_failed_probe_opens_it_for_another_cooldown():
    clock = Clock()
    breaker = Breaker(1, 5.0, clock=clock)
    breaker.record(True)
    clock.now = 5.0
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state == OPEN and breaker.reopens_at() == 10.0 and breaker.opened == 2
    clock.now = 10.0
    assert breaker.allow()


def test_outages_of_requests_already_in_flight_do_not_extend_the_cooldown():
    clock = Clock()
    breaker = Breaker(2, 5.0, clock=clock)
    breaker.record(True)
    breaker.record(True)
    clock.now = 1.0
    for _ in range(30):  # the other workers' requests that were on the wire
        breaker.record(True)
    assert breaker.reopens_at() == 5.0 and breaker.opened == 1


def test_an_abandoned_probe_frees_the_slot():
    clock = Clock()
    breaker = Breaker(1, 5.0, clock=clock)
    breaker.record(True)
    clock.now = 6.0
    assert breaker.allow()
    breaker.abandon_probe()
    assert breaker.state == OPEN and breaker.allow()
