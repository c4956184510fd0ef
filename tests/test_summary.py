"""The bottleneck of a run, named from measured facts, with advice that is safe to follow."""

from smsched.dispatch.summary import name_bottleneck

PROVIDERS = {"twilio": {"rate": 150}}


def split(**shares):
    base = {"database": 0.0, "provider": 0.0, "rate_limit": 0.0, "idle": 0.0, "cpu": None}
    return base | shares


def test_a_run_that_waited_on_the_rate_limiter_is_never_called_cpu_bound():
    # 20 s run, workers waited 17.8 s on tokens, the core busy all along: the rate is the limit.
    name, words = name_bottleneck(20.0, split(rate_limit=17.8, cpu=19.5), 3000, providers=PROVIDERS)
    assert name == "rate_limit"
    assert "twilio 150/s" in words and "a second dispatcher would not send faster" in words
    assert "--concurrent" not in words


def test_throttling_by_the_provider_is_named_as_the_rate_limit():
    name, words = name_bottleneck(30.0, split(provider=5.0, cpu=6.0), 2000, throttled=180, providers=PROVIDERS)
    assert name == "rate_limit" and "throttled 180 request(s)" in words


def test_a_saturated_core_below_the_rate_is_cpu_and_the_advice_divides_the_rate():
    name, words = name_bottleneck(10.0, split(provider=3.0, cpu=9.6), 25_000, providers={"twilio": {"rate": 100_000}})
    assert name == "cpu" and "--concurrent" in words and "give each a share of it" in words


def test_a_tiny_run_is_not_blamed_on_the_database():
    assert name_bottleneck(0.03, split(database=0.025), 2)[0] == "none"


def test_latency_bound_run_suggests_workers():
    name, words = name_bottleneck(10.0, split(provider=8.0, cpu=2.0), 500, providers=PROVIDERS)
    assert name == "provider" and "--workers" in words


def test_waiting_for_messages_to_fall_due_is_idle_not_a_problem():
    name, words = name_bottleneck(55.0, split(idle=50.0, cpu=1.0), 300, providers=PROVIDERS)
    assert name == "idle" and "capacity to spare" in words


def test_nothing_sent_is_idle():
    assert name_bottleneck(55.0, split(idle=55.0), 0) == ("idle", "nothing was due")
