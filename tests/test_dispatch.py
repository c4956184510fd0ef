"""Dispatch in-process against the sandbox over real HTTP: selection, outcomes, output."""

import fcntl
import re
import os

import pytest

from smsched import storage
from tests.conftest import NOW, Cli
from tests.dispatch_helpers import phones, rows, seed_users, states

DUE = "2026-11-25T13:00:00Z"  # 10:00 in Sao Paulo
AT = "2026-11-25 10:00"


@pytest.fixture
def one_campaign(db_path, tmp_path):
    return seed_users(db_path, tmp_path, [5], at=AT, now=NOW)[0]


def dispatch(cli: Cli, now: str = DUE, *extra: str, code: int = 0) -> dict:
    return cli.json("dispatch", "--now", now, "--time-budget", "0", *extra, code=code)


def test_sends_every_due_message_once_and_records_who_got_what(sending_cli, sandbox, one_campaign, db_path):
    summary = dispatch(sending_cli)
    assert (summary["claimed"], summary["sent"], summary["failed"], summary["unknown"]) == (5, 5, 0, 0)
    assert summary["lag"]["count"] == 5 and summary["sql_statements"] > 0
    assert {"database", "provider", "rate_limit", "idle"} <= set(summary["time"]) and summary["bottleneck"]
    received = sandbox.accepted()
    assert sorted(m["to"] for m in received) == sorted(phones(5))
    assert len({m["smsched_id"] for m in received}) == 5
    again = dispatch(sending_cli, "2026-11-25T13:05:00Z")
    assert again["claimed"] == 0 and len(sandbox.accepted()) == 5
    listed = sending_cli.json("messages", "list", "--campaign", one_campaign)
    assert len(listed) == 5
    first = listed[0]
    assert {"id", "campaign_id", "user", "phone", "state", "scheduled_at", "sent_at", "attempts", "provider_id", "error"} <= set(first)
    assert (first["state"], first["attempts"], first["scheduled_at"]) == ("sent", 1, DUE)
    assert first["sent_at"].startswith("2026-11-25T13:00:0") and first["provider_id"].startswith("SM")
    by_phone = sending_cli.json("messages", "list", "--phone", "(11) 90000-0003")
    assert [m["phone"] for m in by_phone] == ["+5511900000003"]


def test_due_exactly_now_is_sent_one_second_later_is_not(sending_cli, sandbox, one_campaign):
    assert dispatch(sending_cli, "2026-11-25T12:59:59Z")["claimed"] == 0
    assert dispatch(sending_cli, "2026-11-25T13:00:00Z")["sent"] == 5


def test_an_optout_made_after_scheduling_is_honoured_at_send_time(sending_cli, sandbox, one_campaign, db_path):
    db = storage.connect(db_path)
    # Written directly, as a concurrent process would between scheduling and sending.
    db.conn.execute("INSERT INTO optouts (phone, scope, reason, source, created_at) VALUES (?, 0, 'STOP', 'test', 0)",
                    (phones(5)[2],))
    summary = dispatch(sending_cli)
    assert (summary["sent"], summary["suppressed"]) == (4, 1)
    assert phones(5)[2] not in {m["to"] for m in sandbox.accepted()}
    assert states(db_path) == {"sent": 4, "suppressed": 1}


def test_quiet_hours_are_checked_again_at_send_time(sending_cli, sandbox, db_path, tmp_path):
    # Due 21:59 in Sao Paulo; cron was down; at 22:05 it must wait for 08:00 tomorrow (11:00 UTC).
    seed_users(db_path, tmp_path, [2], at="2026-11-25 21:59", now=NOW, quiet_hours="08:00-22:00", valid_for="24h")
    summary = dispatch(sending_cli, "2026-11-26T01:05:00Z")
    assert (summary["sent"], summary["deferred"]) == (0, 2)
    assert rows(db_path, "SELECT DISTINCT state, scheduled_at FROM messages") == [("scheduled", 1795690800)]
    assert sandbox.accepted() == []


def test_quiet_hours_past_the_validity_expire_instead(sending_cli, sandbox, db_path, tmp_path):
    seed_users(db_path, tmp_path, [2], at="2026-11-25 21:59", now=NOW, quiet_hours="08:00-22:00")  # valid 6 h
    summary = dispatch(sending_cli, "2026-11-26T01:05:00Z")
    assert (summary["sent"], summary["expired"]) == (0, 2)
    assert rows(db_path, "SELECT DISTINCT error FROM messages") == [("quiet hours until after its validity",)]


def test_messages_past_their_validity_expire(sending_cli, sandbox, one_campaign, db_path):
    summary = dispatch(sending_cli, "2026-11-25T19:00:01Z")  # 6 h and 1 s late
    assert (summary["sent"], summary["expired"]) == (0, 5)
    assert sandbox.accepted() == []
    assert rows(db_path, "SELECT DISTINCT error FROM messages")[0][0].startswith("not sent within its validity")


def test_urgent_goes_before_normal_and_paused_is_skipped(sending_cli, sandbox, db_path, tmp_path):
    seed_users(db_path, tmp_path, [30], at=AT, now=NOW, prefix="n")
    seed_users(db_path, tmp_path, [30], at=AT, now=NOW, prefix="u", priority="urgent", start=1000)
    paused = seed_users(db_path, tmp_path, [10], at=AT, now=NOW, prefix="p", start=2000)[0]
    sending_cli("campaigns", "pause", paused)
    summary = dispatch(sending_cli, DUE, "--workers", "1")
    assert summary["sent"] == 60
    order = [m["body"].split(" from ")[1] for m in sorted(sandbox.accepted(), key=lambda m: m["received_at"])]
    assert set(order[:30]) == {"u0"} and set(order[30:]) == {"n0"}
    assert states(db_path)["paused"] == 10


def test_one_users_backlog_does_not_hold_back_small_users(sending_cli, sandbox, db_path, tmp_path):
    """One user with 3,000 due and 100 users with 10 due each, all the same minute."""
    seed_users(db_path, tmp_path, [3000], at=AT, now=NOW, prefix="big")
    seed_users(db_path, tmp_path, [10] * 100, at=AT, now=NOW, prefix="small", start=10_000)
    summary = dispatch(sending_cli)
    assert summary["sent"] == 4000
    received = sorted(sandbox.accepted(), key=lambda m: m["received_at"])
    small_positions = [i for i, m in enumerate(received) if " from small" in m["body"]]
    assert len(small_positions) == 1000
    # Every small user's 10 messages are within the first round-robin passes: no later than
    # message 1,010 plus one in-flight window.
    assert max(small_positions) < 1010 + 400


def test_a_long_retry_after_hands_the_message_back_without_using_an_attempt(sending_cli, sandbox, one_campaign, db_path):
    """Throttled with Retry-After 120 s: longer than a run holds a message, so it goes back to the
    database for 13:02, with no attempt used (throttling is flow control, not a failure). The
    provider asked for a pause: what had not left yet goes back untouched, for the next run."""
    target = phones(5)[0]
    sandbox.configure(rules=[{"to": target, "status": 429, "code": 20429, "retry_after": 120, "times": 1}])
    summary = dispatch(sending_cli)
    assert (summary["retried"], summary["throttled"], summary["failed"], summary["unknown"]) == (1, 1, 0, 0)
    assert summary["sent"] + summary["released"] == 4
    ((state, when, attempts, error),) = rows(db_path, "SELECT state, scheduled_at, attempts, error FROM messages WHERE phone = ?", (target,))
    assert state == "scheduled" and attempts == 0 and "20429" in error
    assert when >= 1795611600 + 120  # 13:00 UTC + Retry-After
    assert rows(db_path, "SELECT count(*) FROM messages WHERE state = 'scheduled' AND scheduled_at = 1795611600 AND attempts = 0") \
        == [(summary["released"],)]
    assert dispatch(sending_cli, "2026-11-25T13:01:00Z")["sent"] == summary["released"]  # the throttled one waits
    later = dispatch(sending_cli, "2026-11-25T13:10:00Z")
    assert later["sent"] == 1
    assert rows(db_path, "SELECT state, attempts, error FROM messages WHERE phone = ?", (target,)) == [("sent", 1, None)]
    assert states(db_path) == {"sent": 5}


def test_retries_stop_after_max_attempts(sending_cli, sandbox, one_campaign, db_path, config_file):
    config_file.write_text(config_file.read_text().replace("workers = 32", "workers = 4\nmax_attempts = 2\nretry_base = \"1s\""))
    target = phones(5)[1]
    sandbox.configure(rules=[{"to": target, "status": 400, "code": 30001, "retry_after": 1}])
    dispatch(sending_cli)
    dispatch(sending_cli, "2026-11-25T13:05:00Z")
    ((state, attempts, error),) = rows(db_path, "SELECT state, attempts, error FROM messages WHERE phone = ?", (target,))
    assert (state, attempts) == ("failed", 2) and error.startswith("gave up after 2 attempts: [30001]")


def test_permanent_failure_and_provider_optout(sending_cli, sandbox, db_path, tmp_path):
    first, second = seed_users(db_path, tmp_path, [3], at=AT, now=NOW, prefix="a") + \
        seed_users(db_path, tmp_path, [3], at="2026-11-25 11:00", now=NOW, prefix="b")
    bad, stop = phones(3)[0], phones(3)[1]
    sandbox.configure(rules=[{"to": bad, "status": 400, "code": 21211, "message": "invalid To"},
                             {"to": stop, "status": 400, "code": 21610, "message": "unsubscribed"}])
    summary = dispatch(sending_cli)
    assert (summary["sent"], summary["failed"]) == (1, 2)
    assert rows(db_path, "SELECT state, error FROM messages WHERE phone = ? AND campaign_id = ?", (bad, first)) == [("failed", "[21211] invalid To")]
    # 21610: the number joins the do-not-contact list, and its other scheduled message is suppressed.
    assert [o["phone"] for o in sending_cli.json("optout", "list")] == [stop]
    assert rows(db_path, "SELECT state FROM messages WHERE phone = ? AND campaign_id = ?", (stop, second)) == [("suppressed",)]


def test_ambiguous_answers_are_unknown_and_resent_only_on_request(sending_cli, sandbox, one_campaign, db_path):
    target = phones(5)[4]
    sandbox.configure(rules=[{"to": target, "status": 500, "times": 1}])
    summary = dispatch(sending_cli)
    assert (summary["sent"], summary["unknown"]) == (4, 1)
    assert dispatch(sending_cli, "2026-11-25T13:30:00Z")["claimed"] == 0  # never resent by itself
    assert sending_cli.json("retry", "--unknown", "--now", "2026-11-25T13:30:00Z")["requeued"] == 1
    assert dispatch(sending_cli, "2026-11-25T13:30:00Z")["sent"] == 1
    assert states(db_path) == {"sent": 5}


def test_at_least_once_setting_retries_ambiguous_answers(sending_cli, sandbox, one_campaign, db_path, config_file):
    config_file.write_text(config_file.read_text().replace("workers = 32", "workers = 4\nambiguous = \"retry\""))
    sandbox.configure(rules=[{"to": phones(5)[0], "status": 500, "times": 1}])
    summary = dispatch(sending_cli)
    assert (summary["unknown"], summary["retried"]) == (0, 1)


def test_rejected_credentials_stop_the_run_and_leave_messages_scheduled(sending_cli, sandbox, one_campaign, db_path):
    sandbox.configure(token="not-what-we-send")
    result = sending_cli("dispatch", "--now", DUE, "--time-budget", "0", code=1)
    assert "twilio refused our configuration ([20003] Authenticate); stopping with messages left scheduled" in result.stderr
    assert rows(db_path, "SELECT DISTINCT state, attempts FROM messages") == [("scheduled", 0)]


def test_circuit_breaker_stops_asking_a_provider_that_is_down(sending_cli, sandbox, db_path, tmp_path, config_file):
    config_file.write_text(config_file.read_text().replace("workers = 32", "workers = 2\nbreaker_threshold = 5"))
    seed_users(db_path, tmp_path, [200], at=AT, now=NOW)
    sandbox.configure(rules=[{"to": "*", "status": 503, "retry_after": 60}])
    summary = dispatch(sending_cli)
    assert summary["providers"]["twilio"]["breaker"] is True
    # It opens on the 5th consecutive outage; at most one request per other worker was already out.
    assert summary["retried"] <= 5 + 2 and summary["released"] >= 200 - 7
    assert len(sandbox.state.messages) <= 7  # it stopped asking
    assert states(db_path) == {"scheduled": 200}


def test_a_provider_asking_to_wait_longer_than_the_budget_gets_its_messages_back(sending_cli, sandbox, db_path, tmp_path):
    """Throttled with Retry-After 60 s while the budget is over: nothing is failed, nothing waits in
    the run; the throttled ones come back at +60 s, the rest untouched."""
    seed_users(db_path, tmp_path, [200], at=AT, now=NOW)
    sandbox.configure(rules=[{"to": "*", "status": 429, "code": 20429, "retry_after": 60}])
    summary = dispatch(sending_cli)
    assert (summary["sent"], summary["failed"], summary["unknown"]) == (0, 0, 0)
    assert 1 <= summary["throttled"] <= 2 * 32 and summary["throttled"] + summary["released"] == 200
    assert rows(db_path, "SELECT DISTINCT state, attempts FROM messages") == [("scheduled", 0)]


@pytest.mark.sqlite_only("one dispatcher per file unless --concurrent; on PostgreSQL they share the work")
def test_a_second_dispatch_exits_at_once_while_one_runs(sending_cli, db_path, one_campaign):
    fd = os.open(f"{db_path}.dispatch.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = sending_cli("dispatch", "--now", DUE, "--time-budget", "0")
        assert "another smsched dispatch is running" in result.stderr
        assert states(db_path) == {"scheduled": 5}
    finally:
        os.close(fd)


def test_dry_run_changes_nothing(sending_cli, sandbox, one_campaign, db_path):
    preview = sending_cli.json("dispatch", "--dry-run", "--now", DUE)
    assert preview["due"] == 5 and preview["campaigns"][0]["due"] == 5 and len(preview["first"]) == 5
    assert states(db_path) == {"scheduled": 5} and sandbox.accepted() == []


def test_the_seeds_cycle_shape(sending_cli, sandbox, db_path, tmp_path):
    seed_users(db_path, tmp_path, [150] * 30, at=AT, now=NOW)
    summary = sending_cli.json("dispatch", "--now", DUE, "--max-campaigns", "25", "--max-per-campaign", "100",
                               "--parallel", "3", "--batch-delay", "200ms")
    assert summary["sent"] == 2500 and summary["workers"] == 3
    per_campaign = rows(db_path, "SELECT campaign_id, count(*) FROM messages WHERE state = 'sent' GROUP BY campaign_id")
    assert len(per_campaign) == 25 and {n for _, n in per_campaign} == {100}
    # 9 batches of 3 campaigns -> 8 pauses of 200 ms.
    assert summary["time"]["idle"] >= 1.6


def test_orphans_of_a_dead_run_are_recovered_when_alone(sending_cli, sandbox, one_campaign, db_path):
    db = storage.connect(db_path)
    ids = [r[0] for r in db.conn.execute("SELECT id FROM messages ORDER BY id")]
    db.conn.execute("UPDATE messages SET state = 'claimed', lease_until = 9e12 WHERE id IN (?, ?)", ids[:2])
    db.conn.execute("UPDATE messages SET state = 'sending', lease_until = 9e12 WHERE id = ?", (ids[2],))
    summary = dispatch(sending_cli)
    assert summary["recovered"] == {"claimed_to_scheduled": 2, "sending_to_unknown": 1, "sending_to_sent": 0}
    assert summary["sent"] == 4
    assert states(db_path) == {"sent": 4, "unknown": 1}


def test_plain_output_for_cron(sending_cli, sandbox, one_campaign):
    result = sending_cli("dispatch", "--now", DUE, "--time-budget", "0")
    # Each line: an ISO-8601 UTC timestamp, the run id, one whole event.
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run=1 "
    lines = result.stderr.strip().splitlines()
    assert re.match(stamp + "batch 1: claimed 5 [|] so far sent 0", lines[0]), lines
    assert re.match(stamp + "dispatch finished: sent 5, retried 0, failed 0, unknown 0", result.stdout)
    assert len(result.stdout.splitlines()) == 1 and "\x1b[" not in result.output


def test_unconfigured_channel_is_reported(cli, db_path, tmp_path, sandbox):
    path = tmp_path / "only-webhook.toml"
    path.write_text(f'[channels]\nsms = "webhook"\nwhatsapp = "whatsapp"\n[providers.webhook]\nurl = "{sandbox.url}/webhook"\nrate = 1000\n')
    seed_users(db_path, tmp_path, [2], at=AT, now=NOW)
    seed_users(db_path, tmp_path, [2], at=AT, now=NOW, prefix="w", channel="whatsapp", session=True, start=100)
    result = Cli(db_path, path)("dispatch", "--now", DUE, "--time-budget", "0", code=1)
    assert "whatsapp goes through whatsapp, which is missing token, phone_number_id" in result.stderr
    assert states(db_path) == {"sent": 2, "scheduled": 2}
    assert {m["api"] for m in sandbox.accepted()} == {"webhook"}


def test_quiet_hours_that_begin_between_claim_and_send_defer_the_rest(sending_cli, sandbox, db_path, tmp_path):
    """At 1 message/s from 21:59:58, the third would leave at 22:00:00: it waits for 08:00."""
    seed_users(db_path, tmp_path, [3], at="2026-11-25 21:59", now=NOW, quiet_hours="08:00-22:00", valid_for="24h")
    summary = sending_cli.json("dispatch", "--now", "2026-11-26T00:59:58Z", "--time-budget", "0", "--rate", "1", "--workers", "1")
    assert (summary["sent"], summary["deferred"]) == (2, 1)
    assert rows(db_path, "SELECT state, scheduled_at, attempts FROM messages WHERE state != 'sent'") == [("scheduled", 1795690800, 0)]
    assert len(sandbox.accepted()) == 2


def test_provider_option_sends_every_channel_it_can_carry_through_it(sending_cli, sandbox, one_campaign, db_path):
    summary = dispatch(sending_cli, DUE, "--provider", "webhook")
    assert summary["sent"] == 5 and list(summary["providers"]) == ["webhook"]
    assert {m["api"] for m in sandbox.accepted()} == {"webhook"}
    assert rows(db_path, "SELECT DISTINCT provider FROM messages") == [("webhook",)]
    assert "unknown provider 'zenvia'" in sending_cli("dispatch", "--provider", "zenvia", code=2).stderr
