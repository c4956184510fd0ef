"""Dispatch as cron runs it: real processes, real kills and signals, the sandbox over real HTTP."""

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from smsched import storage
from tests.conftest import NOW, subprocess_env
from tests.dispatch_helpers import phones, rows, seed_users, states

DUE = "2026-11-25T13:00:00Z"
AT = "2026-11-25 10:00"
WORKERS = 16
IN_FLIGHT_WINDOW = 2 * WORKERS  # rows in 'sending' at any instant, at most


def start_dispatch(db_path, config_file, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "smsched", "dispatch", "--now", DUE, "--time-budget", "0", "--json", *args],
        env=subprocess_env(db_path, config_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def accepted_ids(sandbox) -> Counter:
    return Counter(int(m["smsched_id"]) for m in sandbox.accepted())


@pytest.mark.slow
def test_three_concurrent_dispatchers_send_each_message_exactly_once(db_path, tmp_path, sandbox, config_file):
    seed_users(db_path, tmp_path, [2500] * 4, at=AT, now=NOW)
    procs = [start_dispatch(db_path, config_file, "--concurrent") for _ in range(3)]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        summaries.append(json.loads(out))
    counts = accepted_ids(sandbox)
    assert len(counts) == 10_000 and set(counts.values()) == {1}
    assert sum(s["sent"] for s in summaries) == 10_000
    assert all(s["claimed"] > 0 for s in summaries), "the work was shared"
    assert states(db_path) == {"sent": 10_000}


@pytest.mark.slow
def test_kill_9_at_random_moments_never_sends_twice_nor_loses_a_message(db_path, tmp_path, sandbox, config_file):
    seed_users(db_path, tmp_path, [20_000], at=AT, now=NOW)
    rng = random.Random(20261125)
    for _ in range(10):
        proc = start_dispatch(db_path, config_file, "--workers", str(WORKERS))
        time.sleep(rng.uniform(0.4, 1.6))  # real clock: when the kill lands
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    for _ in range(3):  # finish the job
        proc = start_dispatch(db_path, config_file, "--workers", str(WORKERS))
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        if json.loads(out)["claimed"] == 0:
            break
    final = states(db_path)
    assert sum(final.values()) == 20_000
    assert set(final) <= {"sent", "unknown"}, final
    assert final.get("unknown", 0) <= 10 * IN_FLIGHT_WINDOW
    counts = accepted_ids(sandbox)
    assert max(counts.values()) == 1, "a message reached the provider twice"
    sent = {r[0] for r in rows(db_path, "SELECT id FROM messages WHERE state = 'sent'")}
    unknown = {r[0] for r in rows(db_path, "SELECT id FROM messages WHERE state = 'unknown'")}
    assert sent <= set(counts)  # every 'sent' really reached the provider
    assert set(counts) - sent <= unknown  # what reached it unrecorded is 'unknown', never 'scheduled'


@pytest.mark.slow
def test_sigterm_finishes_in_flight_records_everything_and_exits(db_path, tmp_path, sandbox, config_file):
    seed_users(db_path, tmp_path, [3000], at=AT, now=NOW)
    sandbox.configure(latency_ms=100)
    proc = start_dispatch(db_path, config_file)
    time.sleep(2.0)  # real clock: a real process, mid-run
    stopped = time.monotonic()  # real clock: how long the real process takes to stop
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - stopped  # real clock
    assert proc.returncode == 143, err.decode()
    # Behaviour, not speed: it finishes what is in flight (100 ms requests) and stops; minutes
    # would mean it kept sending.
    assert took < 10, f"took {took:.1f}s to stop"
    summary = json.loads(out)
    assert summary["status"] == "interrupted"
    final = states(db_path)
    assert "claimed" not in final and "sending" not in final and "unknown" not in final
    assert final["sent"] == summary["sent"] == len(sandbox.accepted())
    assert final["sent"] + final["scheduled"] == 3000 and final["scheduled"] > 0


def test_faults_end_in_the_states_the_outcome_table_says(db_path, tmp_path, sandbox, config_file):
    config_file.write_text(config_file.read_text().replace("workers = 32", 'workers = 16\nread_timeout = "0.5s"\nbreaker_threshold = 1000'))
    seed_users(db_path, tmp_path, [600], at=AT, now=NOW)
    targets = phones(600)
    rules = [{"to": p, "status": 400, "code": 30001} for p in targets[:30]]  # queue full: retry later
    rules += [{"to": p, "status": 201, "hang_ms": 1500} for p in targets[30:40]]
    sandbox.configure(rules=rules, fail_rate=0.05, seed=7)
    proc = start_dispatch(db_path, config_file)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    time.sleep(1.6)  # real clock: let the hung requests finish on the sandbox side
    final = dict(rows(db_path, "SELECT phone, state FROM messages"))
    requests_by_phone = {}
    for entry in sandbox.state.messages:
        requests_by_phone.setdefault(entry["to"], []).append(entry["status"])
    for phone in targets[:30]:
        assert final[phone] == "scheduled"  # retry later
    for phone in targets[30:40]:
        assert final[phone] == "unknown"  # hung past the read timeout: it may have been sent
    for phone in targets[40:]:
        (status,) = requests_by_phone[phone]
        assert final[phone] == {"accepted": "sent", "error 500": "unknown"}[status]
    errors = sum(1 for p in targets[40:] if requests_by_phone[p] == ["error 500"])
    assert 5 <= errors <= 60  # ~5% of 560


def test_connection_refused_leaves_messages_for_a_retry(db_path, tmp_path, config_file):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = config_file.read_text()
    base = text.split('base_url = "')[1].split('"')[0]
    config_file.write_text(text.replace(base, f"http://127.0.0.1:{port}").replace("workers = 32", "workers = 4\nbreaker_threshold = 1000"))
    seed_users(db_path, tmp_path, [20], at=AT, now=NOW)
    proc = start_dispatch(db_path, config_file)
    out, err = proc.communicate(timeout=60)
    summary = json.loads(out)
    assert (summary["retried"], summary["sent"], summary["unknown"]) == (20, 0, 0)
    assert rows(db_path, "SELECT DISTINCT state, attempts FROM messages") == [("scheduled", 1)]
    assert rows(db_path, "SELECT error FROM messages LIMIT 1")[0][0].startswith("[network] not sent:")


def test_a_backlog_does_not_keep_a_run_alive_while_its_provider_is_down(db_path, tmp_path, config_file):
    """More is due than one claim takes and nothing listens: past the budget, once the breaker
    opens, the run hands everything back and ends (it used to wait for the provider forever,
    holding the lock, so every later cron run exited at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = config_file.read_text()
    base = text.split('base_url = "')[1].split('"')[0]
    config_file.write_text(text.replace(base, f"http://127.0.0.1:{port}")
                           .replace("workers = 32", "workers = 4\nbreaker_threshold = 5"))
    seed_users(db_path, tmp_path, [300], at=AT, now=NOW)
    proc = start_dispatch(db_path, config_file, "--batch", "50")
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    summary = json.loads(out)
    assert summary["claimed"] < 300 and (summary["sent"], summary["unknown"]) == (0, 0)
    assert states(db_path) == {"scheduled": 300}


@pytest.mark.slow
def test_seventy_five_cli_writers_succeed_while_dispatch_runs(db_path, tmp_path, sandbox, config_file):
    seed_users(db_path, tmp_path, [2000], at=AT, now=NOW)
    sandbox.configure(latency_ms=20)
    dispatcher = start_dispatch(db_path, config_file)
    env = subprocess_env(db_path, config_file)
    csv_path = tmp_path / "few.csv"
    csv_path.write_text("telefone\n11987654321\n21999990000\n")
    writers = []
    for i in range(25):
        writers.append(subprocess.Popen([sys.executable, "-m", "smsched", "users", "add", f"w{i}"], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in writers:
        proc.communicate(timeout=240)
    # Then a lead import for each, and a campaign for each user whose leads are in (a campaign
    # with nobody to send to is refused).
    for i in range(25):
        writers.append(subprocess.Popen([sys.executable, "-m", "smsched", "leads", "import", f"w{i}", str(csv_path)],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    failures = []
    for proc in writers[25:]:
        out, err = proc.communicate(timeout=240)
        if proc.returncode != 0:
            failures.append(err.decode())
    for i in range(25):
        writers.append(subprocess.Popen([sys.executable, "-m", "smsched", "campaigns", "create", f"w{i}", "--message", "oi",
                                         "--at", "+1d"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in writers[50:]:
        out, err = proc.communicate(timeout=240)
        if proc.returncode != 0:
            failures.append(err.decode())
    out, err = dispatcher.communicate(timeout=240)
    assert dispatcher.returncode == 0, err.decode()
    assert failures == []
    assert json.loads(out)["sent"] == 2000
    db = storage.connect(db_path)
    assert db.conn.execute("SELECT count(*) FROM users WHERE name LIKE 'w%'").fetchone()[0] == 25
    assert db.conn.execute("SELECT count(*) FROM campaigns c JOIN users u ON u.id = c.user_id"
                           " WHERE u.name LIKE 'w%'").fetchone()[0] == 25


@pytest.mark.slow
def test_look_ahead_sends_each_message_at_its_second(db_path, tmp_path, sandbox, config_file):
    """300 messages spread over 8 real seconds: a run started before them sends each on time."""
    now = time.time()  # real clock: this test is about sending at real seconds
    start = int(now) + 2
    db = storage.connect(db_path)
    from smsched import campaigns, users

    owner = users.add(db, "spread", quiet_hours="off")
    db.conn.executemany(
        "INSERT INTO leads (user_id, phone, fields, created_at, updated_at) VALUES (?, ?, '{}', 0, 0)",
        [(owner["id"], p) for p in phones(300)])
    for second in range(8):
        campaigns.create(db, owner, campaigns.CampaignSpec(at=f"@{start + second}", message=f"s{second}"), now=now)
    db.conn.close()
    proc = subprocess.Popen([sys.executable, "-m", "smsched", "dispatch", "--time-budget", "10s", "--json"],
                            env=subprocess_env(db_path, config_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["sent"] == 2400
    assert summary["lag"]["p99"] <= 2.0, summary["lag"]
