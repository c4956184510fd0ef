"""Reconciliation: asking the provider (the sandbox, over real HTTP, speaking Twilio's message list)
whether it has each 'unknown' message."""

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import requests

from smsched import storage
from tests.conftest import NOW, Cli, subprocess_env
from tests.dispatch_helpers import phones, rows, seed_users, states

AT = "2026-11-25 10:00"
DUE = "2026-11-25T13:00:00Z"


def received_once(sandbox) -> Counter:
    return Counter(int(m["smsched_id"]) for m in sandbox.accepted())


@pytest.fixture
def short_timeout(config_file):
    config_file.write_text(config_file.read_text().replace("workers = 32", 'workers = 4\nread_timeout = "0.5s"'))
    return config_file


def test_found_becomes_sent_absent_is_sent_again_once(sending_cli, sandbox, db_path, tmp_path, short_timeout):
    seed_users(db_path, tmp_path, [6], at=AT, now=NOW)
    hung, failed = phones(6)[0], phones(6)[1]
    # The first hangs past our read timeout but the provider keeps it; the second is a 500 it never stored.
    sandbox.configure(rules=[{"to": hung, "hang_ms": 900, "status": 201, "times": 1},
                             {"to": failed, "status": 500, "times": 1}])
    summary = sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    assert (summary["sent"], summary["unknown"]) == (4, 2)
    time.sleep(1.0)  # real clock: the hung request finishes on the sandbox's side
    result = sending_cli.json("reconcile", "--now", DUE)
    assert (result["checked"], result["sent"], result["requeued"], result["unresolved"]) == (2, 1, 1, 0)
    assert result["providers"]["twilio"]["error"] is None
    (hung_row,) = rows(db_path, "SELECT state, provider_id FROM messages WHERE phone = ?", (hung,))
    assert hung_row[0] == "sent" and hung_row[1] == next(m["provider_id"] for m in sandbox.accepted() if m["to"] == hung)
    assert rows(db_path, "SELECT state, scheduled_at FROM messages WHERE phone = ?", (failed,)) == [("scheduled", 1795611600)]
    assert sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")["sent"] == 1
    assert states(db_path) == {"sent": 6} and set(received_once(sandbox).values()) == {1}


def test_same_recipient_and_body_are_matched_by_count_never_twice(sending_cli, sandbox, db_path, tmp_path):
    """Three 'unknown' messages with the same recipient and body; the provider has two, and one of
    those already belongs to a message of ours that is 'sent'."""
    seed_users(db_path, tmp_path, [1], at=AT, now=NOW)
    db = storage.connect(db_path)
    campaign = db.conn.execute("SELECT campaign_id, user_id, lead_id, phone, body, tz FROM messages").fetchone()
    # real clock: sending_at is the machine's time of the request, compared with the provider's own clock
    for _ in range(3):
        db.conn.execute(
            "INSERT INTO messages (campaign_id, user_id, lead_id, phone, channel, body, tz, priority, seq, occurrence,"
            " scheduled_at, expires_at, state, provider, sending_at) VALUES (?, ?, ?, ?, 'sms', ?, ?, 1, 0, 0, ?, ?, 'unknown',"
            " 'twilio', ?)", (*campaign, 1795611600, 1795611600 + 21600, time.time() - 30))  # real clock
    sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")  # the original: sent, SM1 is ours
    # The provider also got one more copy (a request whose answer we never saw).
    requests.post(f"{sandbox.url}/2010-04-01/Accounts/AC{'0' * 32}/Messages.json", auth=(f"AC{'0' * 32}", "x"),
                  data={"To": campaign[3], "From": "+15005550006", "Body": campaign[4]}, timeout=5)
    result = sending_cli.json("reconcile", "--now", DUE)
    assert (result["checked"], result["sent"], result["requeued"]) == (3, 1, 2)
    sids = [r[0] for r in rows(db_path, "SELECT provider_id FROM messages WHERE state = 'sent'")]
    assert len(sids) == len(set(sids)) == 2


def test_providers_without_a_list_api_stay_unknown_and_say_why(sending_cli, sandbox, db_path, tmp_path):
    seed_users(db_path, tmp_path, [2], at=AT, now=NOW, channel="whatsapp", session=True)
    sandbox.configure(rules=[{"to": "*", "status": 500}])
    sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    result = sending_cli("reconcile", "--now", DUE)
    assert "whatsapp: 2 unknown checked, 0 found sent, 0 requeued (absent), 2 unresolved" in result.stdout
    assert "offers no way to ask whether it has a message" in result.stdout
    assert rows(db_path, "SELECT DISTINCT state, error FROM messages") == [(
        "unknown", "whatsapp: the WhatsApp Cloud API offers no way to ask whether it has a message; "
                   "decide with `smsched retry --unknown` (may resend)")]


def test_a_bad_answer_from_the_provider_changes_nothing(sending_cli, sandbox, db_path, tmp_path, short_timeout):
    seed_users(db_path, tmp_path, [2], at=AT, now=NOW)
    sandbox.configure(rules=[{"to": "*", "status": 500}])
    sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    before = rows(db_path, "SELECT id, state, error, updated_at FROM messages ORDER BY id")
    sandbox.configure(token="rotated-token", rules=[])
    result = sending_cli("reconcile", "--json", "--now", DUE, code=1)
    assert json.loads(result.stdout)["providers"]["twilio"]["error"] == "listing messages answered HTTP 401 (credentials refused)"
    assert rows(db_path, "SELECT id, state, error, updated_at FROM messages ORDER BY id") == before


def test_dispatch_reconciles_unknown_messages_whose_requests_have_finished(sending_cli, sandbox, db_path, tmp_path):
    seed_users(db_path, tmp_path, [3], at=AT, now=NOW)
    sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    db = storage.connect(db_path)
    # Two of them: 'unknown' two minutes ago (older than the read timeout plus a margin); the
    # provider has them. A third, recent one is left for later.
    # real clock: sending_at is the machine's time of the request, compared with the provider's own clock
    db.conn.execute("UPDATE messages SET state = 'unknown', provider_id = NULL, sending_at = ? WHERE id IN (1, 2)", (time.time() - 120,))  # real clock
    db.conn.execute("UPDATE messages SET state = 'unknown', provider_id = NULL, sending_at = ? WHERE id = 3", (time.time(),))  # real clock
    summary = sending_cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    assert summary["reconciled"]["checked"] == 2 and summary["reconciled"]["sent"] == 2
    assert states(db_path) == {"sent": 2, "unknown": 1}
    assert len(sandbox.accepted()) == 3


def test_sandbox_lists_messages_as_twilio_does(sandbox):
    account = "AC" + "0" * 32
    url = f"{sandbox.url}/2010-04-01/Accounts/{account}/Messages.json"
    for body in ("one", "two", "three"):
        requests.post(url, auth=(account, "t"), data={"To": "+5511900000001", "From": "+15005550006", "Body": body}, timeout=5)
    requests.post(url, auth=(account, "t"), data={"To": "+5511900000002", "From": "+15005550006", "Body": "other"}, timeout=5)
    first = requests.get(url, auth=(account, "t"), params={"To": "+5511900000001", "DateSent>": "2020-01-01", "PageSize": 2},
                         timeout=5).json()
    assert [m["body"] for m in first["messages"]] == ["three", "two"]  # newest first
    assert first["messages"][0]["date_sent"].endswith("+0000")  # RFC 2822
    second = requests.get(sandbox.url + first["next_page_uri"], auth=(account, "t"), timeout=5).json()
    assert [m["body"] for m in second["messages"]] == ["one"] and second["next_page_uri"] is None
    later = requests.get(url, auth=(account, "t"), params={"To": "+5511900000001", "DateSent>": "2999-01-01"}, timeout=5).json()
    assert later["messages"] == []
    assert requests.get(url, auth=(account, "wrong-token-but-any-accepted"), timeout=5).status_code == 200
    sandbox.configure(token="right")
    assert requests.get(url, auth=(account, "wrong"), timeout=5).status_code == 401


@pytest.mark.slow
def test_after_a_kill_storm_reconcile_and_one_dispatch_leave_nothing_unknown(db_path, tmp_path, sandbox, config_file):
    seed_users(db_path, tmp_path, [3000], at=AT, now=NOW)
    sandbox.configure(latency_ms=2)
    env = subprocess_env(db_path, config_file)
    rng = random.Random(7)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "smsched", "dispatch", "--now", DUE, "--time-budget", "0",
                                 "--workers", "16"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.2))  # real clock: when the kill lands
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    cli = Cli(db_path, config_file)
    # A run that recovers the last kill's orphans and sends nothing more: budget 0 at a time before all.
    cli.json("dispatch", "--now", "2026-11-25T12:00:00Z", "--time-budget", "0")
    unknown = states(db_path).get("unknown", 0)
    assert unknown <= 5 * 32
    result = cli.json("reconcile", "--now", DUE)
    assert result["checked"] == unknown and result["unresolved"] == 0
    cli.json("dispatch", "--now", DUE, "--time-budget", "0")
    assert states(db_path) == {"sent": 3000}
    counts = received_once(sandbox)
    assert len(counts) == 3000 and set(counts.values()) == {1}
