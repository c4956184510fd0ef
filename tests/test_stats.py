"""Monitoring over a database seeded with known runs and messages: every number hand-computed."""


import pytest

from smsched import storage
from tests.conftest import NOW, Cli

T = NOW  # 2026-11-25 12:00:00 UTC
NOW_ARG = "2026-11-25T12:00:00Z"


def message(db, campaign, user, phone, state, scheduled_at, sent_at=None, error=None, updated_at=None):
    db.conn.execute(
        "INSERT INTO messages (campaign_id, user_id, phone, channel, body, tz, priority, seq, occurrence, scheduled_at,"
        " expires_at, state, sent_at, error, updated_at) VALUES (?, ?, ?, 'sms', 'x', 'UTC', 1, 0, ?, ?, ?, ?, ?, ?, ?)",
        (campaign, user, phone, scheduled_at, scheduled_at, scheduled_at + 21600, state, sent_at, error, updated_at or sent_at or T - 3600))


def run(db, clock_start, duration, sent, bottleneck, time_rate_limit=0.0, failed=0):
    db.conn.execute(
        "INSERT INTO runs (pid, mode, status, started_at, finished_at, clock_start, duration, claimed, sent, failed, rate,"
        " lag_p50, lag_p99, lag_max, time_db, time_provider, time_rate_limit, time_idle, bottleneck)"
        " VALUES (1, 'exclusive', 'finished', ?, ?, ?, ?, ?, ?, ?, ?, 0.5, 1.0, 2.0, 0.1, 0.5, ?, 0.0, ?)",
        (clock_start, clock_start + duration, clock_start, duration, sent, sent, failed, sent / duration, time_rate_limit, bottleneck))


@pytest.fixture
def seeded(db_path):
    db = storage.connect(db_path)
    for name in ("u1", "u2"):
        db.conn.execute("INSERT INTO users (name, tz, region, created_at) VALUES (?, 'UTC', 'BR', 0)", (name,))
    for user in (1, 2):
        db.conn.execute(
            "INSERT INTO campaigns (user_id, name, channel, priority, message, tz, quiet_hours, valid_for, scheduled_at,"
            " created_at, updated_at) VALUES (?, 'c', 'sms', 1, 'x', 'UTC', 'off', 21600, 0, 0, 0)", (user,))
    message(db, 1, 1, "+551", "sent", T - 1800, T - 1799)          # lag 1
    message(db, 1, 1, "+552", "sent", T - 1800, T - 1798)          # lag 2
    message(db, 1, 1, "+553", "sent", T - 1800, T - 1795)          # lag 5
    message(db, 1, 1, "+554", "sent", T - 7200, T - 7190)          # outside the hour
    message(db, 2, 2, "+555", "scheduled", T - 600)                # due, 600 s old
    message(db, 2, 2, "+556", "scheduled", T - 300)                # due
    message(db, 2, 2, "+557", "scheduled", T + 1800)               # not yet due
    message(db, 1, 1, "+558", "failed", T - 1200, error="[21211] invalid", updated_at=T - 1200)
    message(db, 1, 1, "+559", "unknown", T - 900, error="no answer: ReadTimeout", updated_at=T - 900)
    run(db, T - 3000, 100, 200, "provider")
    run(db, T - 120, 10, 3, "rate_limit", time_rate_limit=8.0)
    db.conn.close()
    return Cli(db_path)


def test_stats_json_numbers(seeded):
    data = seeded.json("stats", "--now", NOW_ARG)
    assert data["messages"] == {"scheduled": 3, "paused": 0, "claimed": 0, "sending": 0, "sent": 4, "failed": 1,
                                "unknown": 1, "suppressed": 0, "cancelled": 0, "expired": 0}
    assert (data["due_backlog"], data["oldest_due_age_seconds"]) == (2, 600)
    assert data["lag_seconds"] == {"p50": 2.0, "p95": 5.0, "p99": 5.0, "max": 5.0, "count": 3}
    assert data["sent_in_window"] == 3 and data["sent_per_minute"][30] == 3 and sum(data["sent_per_minute"]) == 3
    assert data["failure_rate"] == 25.0  # 1 failed / (3 sent + 1 failed)
    assert [(f["reason"], f["state"], f["count"]) for f in data["failures"]] == [
        ("[21211] invalid", "failed", 1), ("no answer: ReadTimeout", "unknown", 1)]
    assert [r["sent"] for r in data["runs"]] == [3, 200]
    assert data["runs"][0]["bottleneck"] == "rate_limit"
    assert data["bottleneck"].startswith("provider rate limit: workers waited for the rate limit")
    assert "80% of the run" in data["bottleneck"] and "a second dispatcher would not send faster" in data["bottleneck"]
    assert [(u["user"], u["sent"], u["due"]) for u in data["busiest_users"]] == [("u1", 3, 0), ("u2", 0, 2)]


def test_stats_scoped_to_a_user(seeded):
    data = seeded.json("stats", "--now", NOW_ARG, "--user", "u2")
    assert data["messages"]["scheduled"] == 3 and data["messages"]["sent"] == 0 and data["due_backlog"] == 2


def test_stats_terminal_view(seeded):
    result = seeded("stats", "--now", NOW_ARG)
    assert "due backlog 2" in result.stdout and "oldest due 600s" in result.stdout
    assert "lag p50 2.0s" in result.stdout and "busiest users: u1 (sent 3, due 0)" in result.stdout


def test_prometheus_file_parses_and_matches(seeded, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    path = tmp_path / "smsched.prom"
    seeded("stats", "--now", NOW_ARG, "--prometheus", path)
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[("smsched_messages", (("state", "sent"),))] == 4
    assert samples[("smsched_messages", (("state", "unknown"),))] == 1
    assert samples[("smsched_due_backlog", ())] == 2
    assert samples[("smsched_oldest_due_age_seconds", ())] == 600
    assert samples[("smsched_dispatch_lag_seconds", (("quantile", "0.99"),))] == 5.0
    assert samples[("smsched_last_run_timestamp_seconds", ())] == T - 110
    assert samples[("smsched_last_run_sent", ())] == 3
    assert not list(tmp_path.glob(".smsched-*"))  # the temporary file was renamed into place


def test_check_critical_names_every_problem(seeded):
    result = seeded("check", "--now", NOW_ARG, code=2)
    line = result.stdout.strip()
    assert line.startswith("SMSCHED CRITICAL - oldest due message waits 600s (limit 300s), backlog 2; "
                           "failure rate 25.0% (limit 5%); 1 message(s) in unknown state")
    assert "| backlog=2 oldest_due_age=600s;300;600" in line and "unknown=1;0" in line
    assert len(result.stdout.splitlines()) == 1


def test_check_warning_and_ok(seeded):
    relaxed = ["--max-failure-rate", "50", "--max-backlog-age", "900"]
    assert seeded("check", "--now", NOW_ARG, *relaxed, code=1).stdout.startswith(
        "SMSCHED WARNING - 1 message(s) in unknown state")
    assert seeded("check", "--now", NOW_ARG, *relaxed, "--max-unknown", "1", code=0).stdout.startswith(
        "SMSCHED OK - 3 sent in the last 60 min, backlog 2, lag p99 5.0s, last run 110s ago |")


def test_check_notices_that_cron_stopped(seeded):
    relaxed = ["--max-failure-rate", "50", "--max-backlog-age", "9000", "--max-unknown", "5"]
    critical = seeded("check", "--now", "2026-11-25T12:05:00Z", *relaxed, code=2)
    assert critical.stdout.startswith("SMSCHED CRITICAL - dispatch last ran 410s ago (limit 180s): is cron running it?")


def test_check_warns_when_the_rate_limit_is_the_bottleneck_too_long(seeded):
    relaxed = ["--max-failure-rate", "50", "--max-backlog-age", "900", "--max-unknown", "5"]
    result = seeded("check", "--now", NOW_ARG, *relaxed, "--max-rate-limited", "5", code=1)
    assert "the provider rate limit has been the bottleneck for 10s of runs" in result.stdout


def test_check_cannot_tell_on_a_foreign_file(tmp_path):
    path = tmp_path / "x.db"
    path.write_text("not a database")
    result = Cli(path)("check", code=3)
    assert result.stdout.startswith("SMSCHED UNKNOWN - ")


def test_plan_reproduces_the_seeds_arithmetic(seeded):
    data = seeded.json("plan", "--simulate", "10000:100", "--rate", f"{150000 / 3600}", "--now", NOW_ARG)
    hours = {h["hour"]: h for h in data["hours"]}
    assert data["peak_hour"] == "08:00" and data["peak_messages"] == 100_000
    assert [hours[f"{h:02d}:00"]["messages"] for h in (7, 8, 11, 12, 17, 18, 21, 22)] == [0, 100000, 100000, 58333, 58333, 62500, 62500, 0]
    assert data["total_messages"] == 1_000_000
    assert data["capacity_per_hour"] == 150_000 and data["peak_margin_percent"] == 50.0
    assert data["seed"]["peak_margin_percent"] == 50.0 and data["warnings"] == []


def test_plan_uses_the_configured_provider_rates(seeded, tmp_path):
    config = tmp_path / "smsched.toml"
    config.write_text("[providers.twilio]\nrate = 50\n[providers.whatsapp]\nrate = 20\n")
    data = seeded.json("plan", "--simulate", "10000:100", "--now", NOW_ARG, "--config", config)
    hours = {h["hour"]: h for h in data["hours"]}
    # The simulated day is SMS: Twilio's 50/s carries it (180,000/h); 100,000 at 08:00 fit.
    assert hours["08:00"]["capacity"] == 180_000 and hours["08:00"]["fits"] is True
    assert data["rate_source"] == "the configured rates (twilio 50/s for sms; whatsapp 20/s for whatsapp)"
    assert [(p["provider"], p["capacity_per_hour"]) for p in data["providers"]] == [("twilio", 180_000), ("whatsapp", 72_000)]
    # Recent runs measured 2/s: said, not assumed.
    assert data["measured_rate_per_second"] == 2.0
    assert any(w.startswith("recent runs sent 2.0/s, below the configured 70/s") for w in data["warnings"])
    text = seeded("plan", "--simulate", "10000:100", "--now", NOW_ARG, "--config", config).stdout
    assert "capacity 252,000/h from the configured rates" in text and "seed" not in text


@pytest.mark.parametrize("args, message", [
    (["--simulate", "-1:-1"], "invalid --simulate '-1:-1': USERS from 1 to 10,000,000"),
    (["--simulate", "1:0"], "invalid --simulate '1:0'"),
    (["--distribution", "08-12:100"], "--distribution shapes a --simulate day"),
    (["--rate", "1e309"], "--rate': inf is not a finite number"),
    (["--rate", "-5"], "-5: give a number above 0"),
    (["--tz", "/etc/passwd"], "unknown time zone '/etc/passwd'"),
])
def test_plan_refuses_nonsense(seeded, args, message):
    result = seeded("plan", *args, "--now", NOW_ARG, code=2)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_plan_from_data_warns_for_hours_that_do_not_fit(seeded):
    data = seeded.json("plan", "--date", "2026-11-25", "--tz", "UTC", "--rate", "0.001", "--now", NOW_ARG)
    hours = {h["hour"]: h for h in data["hours"]}
    assert hours["11:00"]["messages"] == 7 and hours["10:00"]["messages"] == 1 and hours["12:00"]["messages"] == 1
    assert hours["11:00"]["fits"] is False
    assert any(w.startswith("11:00: 7 messages against 4/h — over by 3") for w in data["warnings"])
    text = seeded("plan", "--date", "2026-11-25", "--tz", "UTC", "--rate", "0.001", "--now", NOW_ARG)
    assert "█" in text.stdout and "warning: 11:00: 7 messages" in text.stderr
    assert data["tz"] == "UTC"


def test_check_warns_before_it_goes_critical_when_cron_stops(seeded):
    relaxed = ["--max-failure-rate", "50", "--max-backlog-age", "9000", "--max-unknown", "5"]
    result = seeded("check", "--now", "2026-11-25T12:02:00Z", *relaxed, code=1)
    assert result.stdout.startswith("SMSCHED WARNING - dispatch last ran 230s ago (limit 180s): is cron running it?")
