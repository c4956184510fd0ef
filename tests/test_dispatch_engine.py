"""The dispatch engine's promises, against the sandbox over real HTTP: the in-flight window,
throttling as flow control, a breaker that recovers, runs that always end, and options that are
refused before anything changes."""

import re
import json
import threading

import pytest

from smsched import queue as queue_lib
from tests.conftest import NOW, Cli
from tests.dispatch_helpers import fingerprint, rows, seed_users, states

AT = "2026-11-25 10:00"
DUE = "2026-11-25T13:00:00Z"


def configure(config_file, **dispatch) -> None:
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in dispatch.items())
    config_file.write_text(config_file.read_text().replace("workers = 32", lines))


def test_rows_in_sending_never_exceed_twice_the_workers(sending_cli, sandbox, db_path, tmp_path, config_file, monkeypatch):
    configure(config_file, workers=4)
    seed_users(db_path, tmp_path, [400], at=AT, now=NOW)
    sandbox.configure(latency_ms=3)
    seen = []
    original = queue_lib.apply

    def apply_and_count(db, changes, **kwargs):  # a spy on the real statement, not a stand-in
        moved = original(db, changes, **kwargs)
        seen.append(db.conn.execute("SELECT count(*) FROM messages WHERE state = 'sending'").fetchone()[0])
        return moved

    monkeypatch.setattr(queue_lib, "apply", apply_and_count)
    summary = sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    assert summary["sent"] == 400 and len(sandbox.accepted()) == 400
    assert max(seen) <= 2 * 4 and seen[-1] == 0
    assert summary["commits_per_1000"] is not None


@pytest.mark.slow
def test_throttling_is_flow_control_not_failure(sending_cli, sandbox, db_path, tmp_path):
    """The provider allows 100 requests/s; the configured rate is 5,000/s: every message goes out
    in the one run, nothing fails, and fewer than a quarter of the requests are throttled."""
    seed_users(db_path, tmp_path, [1000] * 2, at=AT, now=NOW)
    sandbox.configure(rate_limit=100)
    summary = sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    assert (summary["sent"], summary["failed"], summary["unknown"], summary["retried"]) == (2000, 0, 0, 0)
    requests = sum(sandbox.state.counts.values())
    assert len(sandbox.accepted()) == 2000
    assert summary["throttled"] == requests - 2000 and summary["throttled"] < 0.25 * requests
    assert summary["bottleneck"] == "rate_limit"
    assert rows(db_path, "SELECT DISTINCT state, attempts FROM messages") == [("sent", 1)]


@pytest.mark.slow
def test_a_breaker_opens_on_an_outage_probes_and_the_same_run_sends_the_rest(sending_cli, sandbox, db_path, tmp_path, config_file):
    configure(config_file, workers=8, breaker_cooldown="1s")
    seed_users(db_path, tmp_path, [500], at=AT, now=NOW)
    sandbox.configure(rules=[{"to": "*", "status": 503}])
    back = threading.Timer(2.5, lambda: sandbox.configure(rules=[]))  # the provider is down 2.5 s
    back.start()
    try:
        summary = sending_cli.json("dispatch", "--now", DUE, "--time-budget", "8s")
    finally:
        back.cancel()
    during_outage = sum(1 for m in sandbox.state.messages if m["status"] == "error 503")
    threshold, workers, probes = 20, 8, 3  # one probe per second of cooldown
    assert during_outage <= threshold + workers + probes
    assert summary["providers"]["twilio"]["breaker_opened"] >= 1
    assert summary["sent"] == 500 - during_outage == len(sandbox.accepted())
    assert states(db_path) == {"sent": 500 - during_outage, "scheduled": during_outage}  # back-off, attempt 1


@pytest.mark.slow
def test_a_run_against_a_provider_that_never_answers_ends(sending_cli, sandbox, db_path, tmp_path, config_file):
    configure(config_file, workers=4, read_timeout="0.5s", breaker_threshold=5, breaker_cooldown="1s")
    seed_users(db_path, tmp_path, [200], at=AT, now=NOW)
    sandbox.configure(rules=[{"to": "*", "hang_ms": 5000, "status": 201}])
    summary = sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    # Bound: budget + 2 × read timeout + cooldown + 10 s.
    assert summary["duration"] <= 0 + 2 * 0.5 + 1 + 10
    final = states(db_path)
    assert final["unknown"] <= 5 + 2 * 4 and set(final) == {"unknown", "scheduled"}
    assert summary["unknown"] == final["unknown"]


BAD_OPTIONS = [
    (["--workers", "-5", "--time-budget", "0"], "--workers -5: give a number of concurrent requests from 1 to 1024"),
    (["--workers", "0"], "--workers 0"),
    (["--workers", "5000"], "--workers 5000"),
    (["--rate", "-1"], "--rate -1: give messages per second as a finite number above 0"),
    (["--rate", "nan"], "--rate nan"),
    (["--rate", "1e309"], "--rate inf"),
    (["--parallel", "0"], "--parallel 0: give a whole number of at least 1"),
    (["--batch", "0"], "--batch 0"),
    (["--max-campaigns", "0"], "--max-campaigns 0"),
    (["--max-per-campaign", "-1"], "--max-per-campaign -1"),
    (["--lease", "0s"], "--lease must be longer than 0"),
    (["--time-budget", "-1"], "invalid --time-budget '-1'"),
    (["--batch-delay", "soon"], "invalid --batch-delay 'soon'"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_anything_changes(sending_cli, db_path, tmp_path, args, message):
    seed_users(db_path, tmp_path, [3], at=AT, now=NOW)
    before = fingerprint(db_path)
    result = sending_cli("dispatch", "--now", DUE, *args, code=2)
    # A log line: timestamp, run id (none yet: nothing ran), the error.
    assert re.match(r"\S+Z run=- error: ", result.stderr) and f"error: {message}" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert fingerprint(db_path) == before
    assert rows(db_path, "SELECT count(*) FROM runs") == [(0,)]


def test_a_base_url_that_is_not_http_is_a_configuration_error(db_path, tmp_path, config_file):
    text = config_file.read_text()
    base = text.split('base_url = "')[1].split('"')[0]
    config_file.write_text(text.replace(f'base_url = "{base}"', 'base_url = "ftp://files.example.com/sms"', 1))
    seed_users(db_path, tmp_path, [3], at=AT, now=NOW)
    result = Cli(db_path, config_file)("dispatch", "--now", DUE, "--time-budget", "0", code=2)
    assert "[providers.twilio] base_url must be an http(s)://host[:port][/path] address" in result.stderr
    assert states(db_path) == {"scheduled": 3} and rows(db_path, "SELECT count(*) FROM runs") == [(0,)]
