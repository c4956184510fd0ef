"""The rate limiter on an injected clock: pacing, the one-second cap, and adapting to throttling."""

import threading

from smsched.ratelimit import DECREASE, MIN_RATE, RateLimiter


class FakeClock:
    """Time that moves only when someone sleeps (the limiter's own sleep, or the test)."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(0.0, seconds)


def sends(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    moments = []
    for _ in range(count):
        limiter.acquire()
        moments.append(round(clock(), 6))
    return moments


def worst_second(moments: list[float]) -> int:
    return max(sum(1 for m in moments if start <= m < start + 1.0) for start in moments)


def test_sends_are_paced_one_over_rate_apart():
    clock = FakeClock(0.0)
    moments = sends(RateLimiter(10, burst=1, clock=clock, sleep=clock.sleep), clock, 25)
    assert moments[:3] == [0.0, 0.1, 0.2]
    assert worst_second(moments) <= 10


def test_never_more_than_the_rate_in_any_second_even_with_a_burst():
    clock = FakeClock()
    moments = sends(RateLimiter(20, burst=20, clock=clock, sleep=clock.sleep), clock, 200)
    assert moments[:20] == [1000.0] * 20  # the burst goes at once...
    assert worst_second(moments) == 20    # ...and then no second ever holds more than 20


def test_threads_sharing_a_limiter_keep_to_the_rate():
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    reserved: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(10):
            with limiter.lock:
                slot = limiter._reserve()
            with lock:
                reserved.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reserved) == 60 and worst_second(sorted(reserved)) <= 20
    assert max(reserved) - min(reserved) >= (60 - 20) / 20 * 0.99


def test_a_throttled_answer_slows_to_what_the_provider_accepted_and_pauses():
    clock = FakeClock()
    limiter = RateLimiter(100_000, clock=clock, sleep=clock.sleep)
    for _ in range(100):  # the provider took 100 in this second, then said "slow down"
        limiter.accepted()
    assert limiter.throttled_answer(sent_at=clock(), retry_after=1.0) is True
    assert limiter.effective == 100.0 and limiter.paused_until == clock() + 1.0
    assert limiter.acquire() == 1.0  # nothing leaves before Retry-After


def test_answers_to_requests_sent_before_the_decrease_are_the_same_event():
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep)
    sent = clock()
    assert limiter.throttled_answer(sent, None) is True
    rate = limiter.effective
    for _ in range(31):  # the other requests that were already on the wire
        assert limiter.throttled_answer(sent, None) is False
    assert limiter.effective == rate and limiter.throttled == 32 and limiter.decreases == 1
    clock.sleep(2.0)
    assert limiter.throttled_answer(clock(), None) is True  # sent after the pause: a new event
    assert limiter.effective == max(MIN_RATE, rate * DECREASE)


def test_successes_win_the_rate_back_additively_never_above_the_configured_rate():
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.accepted()
    limiter.throttled_answer(clock(), 0.0)
    assert limiter.effective == 100 * DECREASE
    # About 5% of the last good rate (100/s) per second: 70 -> 100 takes about 6 s of successes.
    seconds = 0
    while limiter.effective < 100 and seconds < 60:
        for _ in range(int(limiter.effective)):
            limiter.accepted()
        clock.sleep(1.0)
        seconds += 1
    assert 5 <= seconds <= 8 and limiter.effective == 100
    for _ in range(1000):
        limiter.accepted()
    assert limiter.effective == 100


def test_a_provider_that_throttles_everything_floors_the_rate_instead_of_stopping():
    clock = FakeClock()
    limiter = RateLimiter(50, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        limiter.throttled_answer(clock(), 0.5)
        clock.sleep(0.6)
    assert limiter.effective == MIN_RATE
