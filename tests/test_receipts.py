"""Delivery receipts: the providers' signature algorithms checked against their own published
examples, and the receiver over real HTTP against a real database."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from smsched import config as config_lib
from smsched import storage
from smsched.receipts import (
    ReceiptsServer, meta_signature, meta_signature_valid, twilio_signature, twilio_signature_valid,
)
from smsched.sandbox import wait_for_port
from tests.conftest import NOW, Cli
from tests.dispatch_helpers import phones, rows, seed_users

AUTH_TOKEN = "twilio-auth-token-for-tests"
APP_SECRET = "meta-app-secret-for-tests"
VERIFY = "verify-me-please"


# ---- the published algorithms ----------------------------------------------------------------
# From twilio-python's own tests (tests/unit/test_request_validator.py): auth token "12345".
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = [("CallSid", "CA1234567890ABCDE"), ("Digits", "1234"), ("From", "+14158675309"),
                 ("To", "+18005551212"), ("Caller", "+14158675309")]


def test_twilio_signature_matches_twilios_published_example():
    assert twilio_signature("12345", TWILIO_URL, TWILIO_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_twilio_signature_sorts_repeated_parameters_as_twilio_does():
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio_signature("12345", TWILIO_URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


@pytest.mark.parametrize("url, signature", [
    (TWILIO_URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    (TWILIO_URL.replace(".com", ".com:1234"), "RSOYDt4T1cUTdK1PDd93/VVr8B8="),  # port removed on https
    (TWILIO_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443
    (TWILIO_URL.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
], ids=["as called", "port removed", "443 added", "80 added"])
def test_twilio_validation_accepts_the_url_with_or_without_its_port(url, signature):
    assert twilio_signature_valid("12345", url, TWILIO_PARAMS, signature)


def test_twilio_validation_refuses_a_changed_parameter_or_token():
    assert not twilio_signature_valid("12345", TWILIO_URL, TWILIO_PARAMS[:-1] + [("Caller", "+1")], "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not twilio_signature_valid("54321", TWILIO_URL, TWILIO_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not twilio_signature_valid("12345", TWILIO_URL, TWILIO_PARAMS, "")


def test_meta_signature_is_the_x_hub_signature_256_scheme():
    # Meta documents X-Hub-Signature-256 as "sha256=" + hex HMAC-SHA256 of the raw payload with the
    # app secret, and publishes no worked example; GitHub documents the same scheme with one
    # (docs.github.com, "Validating webhook deliveries").
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert meta_signature("It's a Secret to Everybody", b"Hello, World!") == expected
    assert meta_signature_valid("It's a Secret to Everybody", b"Hello, World!", expected)
    assert not meta_signature_valid("It's a Secret to Everybody", b"Hello, World?", expected)


# ---- the receiver over HTTP ---------------------------------------------------------------


@pytest.fixture
def receiver(db_path, tmp_path, sandbox):
    """A database with 5 messages sent through the sandbox, and a running receiver."""
    seed_users(db_path, tmp_path, [5], at="2026-11-25 10:00", now=NOW)
    path = tmp_path / "smsched.toml"
    config_lib.write_example(path, base_url=sandbox.url, rate=5000)
    text = path.read_text().replace('auth_token = "sandbox-token-not-a-secret"', f'auth_token = "{AUTH_TOKEN}"')
    text = text.replace(f'app_secret = "{config_lib.EXAMPLE_APP_SECRET}"', f'app_secret = "{APP_SECRET}"')
    path.write_text(text + f'\n[receipts]\nverify_token = "{VERIFY}"\n')
    Cli(db_path, path).json("dispatch", "--now", "2026-11-25T13:00:00Z", "--time-budget", "0")
    db = storage.connect(db_path)
    server = ReceiptsServer(db, config_lib.load(path), port=0, log=lambda line: None).start()
    server.config_path = path
    yield server
    server.stop()
    db.conn.close()


def post(url: str, body: bytes, headers: dict) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def twilio_callback(server, sid: str, status: str, *, ours: int | None = None, code: str | None = None,
                    token: str = AUTH_TOKEN) -> int:
    path = "/twilio/status" + (f"?m={ours}" if ours is not None else "")
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "0" * 32, "To": "+5511900000000",
              "From": "+15005550006", **({"ErrorCode": code} if code else {})}
    signature = twilio_signature(token, server.url + path, list(params.items()))
    return post(server.url + path, urlencode(params).encode(),
                {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})


def delivery(db_path, message_id: int):
    return rows(db_path, "SELECT state, delivery, delivery_error, delivered_at IS NOT NULL FROM messages WHERE id = ?",
                (message_id,))[0]


def provider_id(db_path, message_id: int) -> str:
    return rows(db_path, "SELECT provider_id FROM messages WHERE id = ?", (message_id,))[0][0]


def test_signed_callbacks_mark_delivery_and_replays_change_nothing(receiver, db_path):
    sid = provider_id(db_path, 1)
    assert twilio_callback(receiver, sid, "sent") == 200
    assert twilio_callback(receiver, sid, "delivered") == 200
    assert delivery(db_path, 1) == ("sent", "delivered", None, 1)
    receipts_before = rows(db_path, "SELECT count(*) FROM receipts")
    assert twilio_callback(receiver, sid, "delivered") == 200  # the same callback again
    assert rows(db_path, "SELECT count(*) FROM receipts") == receipts_before
    assert delivery(db_path, 1) == ("sent", "delivered", None, 1)


def test_out_of_order_callbacks_keep_the_providers_order(receiver, db_path):
    sid = provider_id(db_path, 2)
    twilio_callback(receiver, sid, "delivered")
    twilio_callback(receiver, sid, "sent")  # arrives late: old news
    assert delivery(db_path, 2)[1] == "delivered"


def test_a_forged_signature_is_refused_and_changes_nothing(receiver, db_path):
    sid = provider_id(db_path, 3)
    assert twilio_callback(receiver, sid, "delivered", token="not-the-auth-token") == 403
    status = post(receiver.url + "/twilio/status", urlencode({"MessageSid": sid, "MessageStatus": "delivered"}).encode(),
                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403
    assert delivery(db_path, 3) == ("sent", None, None, 0)
    assert rows(db_path, "SELECT count(*) FROM receipts") == [(0,)]


def test_an_unknown_message_becomes_sent_when_its_callback_arrives(receiver, db_path):
    db = storage.connect(db_path)
    db.conn.execute("UPDATE messages SET state = 'unknown', provider_id = NULL, sent_at = NULL WHERE id = 4")
    assert twilio_callback(receiver, "SMfromthecallback", "delivered", ours=4) == 200
    assert rows(db_path, "SELECT state, provider_id, delivery FROM messages WHERE id = 4") == [
        ("sent", "SMfromthecallback", "delivered")]


def test_carrier_failures_keep_the_code_and_a_stop_joins_the_do_not_contact_list(receiver, db_path):
    assert twilio_callback(receiver, provider_id(db_path, 1), "undelivered", code="30003") == 200
    assert delivery(db_path, 1) == ("sent", "undelivered", "[30003] unreachable destination handset", 0)
    assert rows(db_path, "SELECT count(*) FROM optouts") == [(0,)]
    assert twilio_callback(receiver, provider_id(db_path, 2), "failed", code="21610") == 200
    assert rows(db_path, "SELECT phone, source FROM optouts") == [(phones(5)[1], "provider:twilio")]


def test_whatsapp_handshake(receiver):
    def get(query):
        try:
            with urllib.request.urlopen(f"{receiver.url}/whatsapp?{urlencode(query)}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    assert get({"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}) == (200, "1158201444")
    assert get({"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"})[0] == 403


def test_a_signed_whatsapp_read_status(receiver, db_path):
    db = storage.connect(db_path)
    db.conn.execute("UPDATE messages SET provider = 'whatsapp', provider_id = 'wamid.HBgLNTUxMTk4NzY1NDMyMRUCABEYEg' WHERE id = 5")
    payload = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "statuses": [{"id": "wamid.HBgLNTUxMTk4NzY1NDMyMRUCABEYEg", "status": "read", "timestamp": "1795611700",
                      "recipient_id": "5511900000004"}]}}]}]}
    body = json.dumps(payload).encode()
    assert post(receiver.url + "/whatsapp", body, {"Content-Type": "application/json",
                                                   "X-Hub-Signature-256": meta_signature("forged", body)}) == 403
    assert delivery(db_path, 5)[1] is None
    assert post(receiver.url + "/whatsapp", body, {"Content-Type": "application/json",
                                                   "X-Hub-Signature-256": meta_signature(APP_SECRET, body)}) == 200
    assert rows(db_path, "SELECT delivery, delivered_at FROM messages WHERE id = 5") == [("read", 1795611700.0)]


def test_the_sandbox_sends_signed_receipts_end_to_end(db_path, tmp_path, sandbox):
    """50 SMS through the sandbox with [receipts] public_url: a running receiver marks them delivered."""
    seed_users(db_path, tmp_path, [50], at="2026-11-25 10:00", now=NOW)
    db = storage.connect(db_path)
    path = tmp_path / "smsched.toml"
    config_lib.write_example(path, base_url=sandbox.url, rate=5000)
    with ReceiptsServer(db, config_lib.load(path), port=0, log=lambda line: None) as server:
        path.write_text(path.read_text() + f'\n[receipts]\npublic_url = "{server.url}"\n')
        server.config = config_lib.load(path)
        sandbox.configure(callbacks=True, callback_delay_ms=0)
        summary = Cli(db_path, path).json("dispatch", "--now", "2026-11-25T13:00:00Z", "--time-budget", "0")
        assert summary["sent"] == 50
        deadline = time.monotonic() + 20  # real clock: the receipts come from the sandbox's thread
        while time.monotonic() < deadline and rows(db_path, "SELECT count(*) FROM messages WHERE delivery = 'delivered'")[0][0] < 50:  # real clock
            time.sleep(0.05)  # real clock: waiting for another thread, bounded above
    assert rows(db_path, "SELECT delivery, count(*) FROM messages GROUP BY delivery") == [("delivered", 50)]
    stats = Cli(db_path, path).json("stats", "--now", "2026-11-25T13:01:00Z")
    assert stats["delivery"]["counts"]["delivered"] == 50


def test_receipts_serve_runs_until_sigterm_and_never_logs_a_secret(db_path, tmp_path):
    import socket
    import signal

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "smsched.toml"
    path.write_text(f'[providers.twilio]\naccount_sid = "AC{"0" * 32}"\nauth_token = "{AUTH_TOKEN}"\nfrom = "+15005550006"\n'
                    f'[providers.whatsapp]\napp_secret = "{APP_SECRET}"\n[receipts]\nverify_token = "{VERIFY}"\n')
    storage.connect(db_path).conn.close()
    proc = subprocess.Popen([sys.executable, "-m", "smsched", "receipts", "serve", "--port", str(port), "--db", str(db_path),
                             "--config", str(path)], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        server = type("S", (), {"url": f"http://127.0.0.1:{port}"})()
        assert twilio_callback(server, "SMnotours", "delivered", token="forged") == 403
        assert twilio_callback(server, "SMnotours", "delivered") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "SMnotours delivered: unmatched" in err
    for secret in (AUTH_TOKEN, APP_SECRET, VERIFY):
        assert secret not in err
