"""The outcome table, row by row, against the sandbox over real HTTP; configuration; rate limits."""

import json
import socket
import threading
import time  # noqa: F401 - the sandbox writer test waits on the real clock

import pytest
from typer.testing import CliRunner

from smsched import config as config_lib
from smsched.cli import app
from smsched.http import Transport
from smsched.providers import ACCEPTED, CONFIG, PERMANENT, RETRY, UNKNOWN, OutMessage, Twilio, Webhook, WhatsApp
from smsched.providers.webhook import signature
from smsched.sandbox import wait_for_port

TO = "+5511987654321"
ACCOUNT = "AC" + "0" * 32


def providers_for(url: str) -> dict:
    return {
        "twilio": Twilio({"account_sid": ACCOUNT, "auth_token": "tok", "from": "+15005550006", "base_url": url}),
        "whatsapp": WhatsApp({"token": "tok", "phone_number_id": "1001", "base_url": url}),
        "webhook": Webhook({"url": f"{url}/webhook", "secret": "s3cret"}),
    }


def send(provider, message=None, transport=None):
    transport = transport or Transport(pool_size=2, connect_timeout=1, read_timeout=1)
    message = message or OutMessage(1, TO, "whatsapp" if provider.name == "whatsapp" else "sms", "Olá",
                                    template="promo" if provider.name == "whatsapp" else None, lang="pt_BR", params=["Ana"])
    from smsched.http import MaybeSent, NotSent

    try:
        response = transport.send(provider.build(message))
    except NotSent as exc:
        from smsched.providers.base import Outcome
        return Outcome(RETRY, reason=str(exc))
    except MaybeSent as exc:
        from smsched.providers.base import Outcome
        return Outcome(UNKNOWN, reason=str(exc))
    return provider.classify(response.status, response.headers, response.body)


# (provider, sandbox rule, expected kind, opt-out, retry_after)
TABLE = [
    ("twilio", None, ACCEPTED, False, None),
    ("twilio", {"status": 429, "code": 20429, "retry_after": 7}, RETRY, False, 7.0),
    ("twilio", {"status": 400, "code": 21611}, RETRY, False, 60.0),
    ("twilio", {"status": 400, "code": 30001}, RETRY, False, 60.0),
    ("twilio", {"status": 503, "code": None, "retry_after": 3}, RETRY, False, 3.0),
    ("twilio", {"status": 400, "code": 21211}, PERMANENT, False, None),
    ("twilio", {"status": 400, "code": 21614}, PERMANENT, False, None),
    ("twilio", {"status": 400, "code": 21610}, PERMANENT, True, None),
    ("twilio", {"status": 400, "code": 12345}, PERMANENT, False, None),
    ("twilio", {"status": 401, "code": 20003}, CONFIG, False, None),
    ("twilio", {"status": 500}, UNKNOWN, False, None),
    ("twilio", {"status": 502}, UNKNOWN, False, None),
    ("whatsapp", None, ACCEPTED, False, None),
    ("whatsapp", {"status": 400, "code": 130429}, RETRY, False, 60.0),
    ("whatsapp", {"status": 400, "code": 131056, "retry_after": 2}, RETRY, False, 2.0),
    ("whatsapp", {"status": 400, "code": 131026}, PERMANENT, False, None),
    ("whatsapp", {"status": 400, "code": 131047}, PERMANENT, False, None),
    ("whatsapp", {"status": 400, "code": 132000}, PERMANENT, False, None),
    ("whatsapp", {"status": 400, "code": 131050}, PERMANENT, True, None),
    ("whatsapp", {"status": 401, "code": 190}, CONFIG, False, None),
    ("whatsapp", {"status": 500}, UNKNOWN, False, None),
    ("webhook", None, ACCEPTED, False, None),
    ("webhook", {"status": 429, "retry_after": 5}, RETRY, False, 5.0),
    ("webhook", {"status": 503}, RETRY, False, None),
    ("webhook", {"status": 422}, PERMANENT, False, None),
    ("webhook", {"status": 403}, CONFIG, False, None),
    ("webhook", {"status": 500}, UNKNOWN, False, None),
]


@pytest.mark.parametrize("name, rule, kind, opt_out, retry_after", TABLE,
                         ids=[f"{r[0]}-{(r[1] or {}).get('code') or (r[1] or {}).get('status') or 'ok'}" for r in TABLE])
def test_outcome_table(sandbox, name, rule, kind, opt_out, retry_after):
    sandbox.configure(webhook_secret="s3cret", rules=[{"to": TO, **rule}] if rule else [])
    outcome = send(providers_for(sandbox.url)[name])
    assert (outcome.kind, outcome.opt_out, outcome.retry_after) == (kind, opt_out, retry_after)
    if kind == ACCEPTED:
        assert outcome.provider_id
    if rule and rule.get("code") and kind != ACCEPTED:
        assert outcome.code == str(rule["code"]) or name == "webhook"


def test_read_timeout_after_sending_is_unknown(sandbox):
    sandbox.configure(rules=[{"to": TO, "hang_ms": 2000, "status": 201}])
    outcome = send(providers_for(sandbox.url)["twilio"], transport=Transport(pool_size=1, connect_timeout=1, read_timeout=0.3))
    assert outcome.kind == UNKNOWN and "ReadTimeout" in outcome.reason


def test_connection_refused_was_never_sent_so_it_is_a_retry():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    outcome = send(providers_for(f"http://127.0.0.1:{port}")["twilio"])
    assert outcome.kind == RETRY


def test_connection_reset_after_sending_is_unknown():
    """A server that reads the request, then drops the connection without answering."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def drop():
        conn, _ = server.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    outcome = send(providers_for(f"http://127.0.0.1:{port}")["twilio"])
    server.close()
    assert outcome.kind == UNKNOWN


def test_requests_client_classifies_the_same(sandbox):
    sandbox.configure(rules=[{"to": TO, "status": 400, "code": 21610}])
    outcome = send(providers_for(sandbox.url)["twilio"], transport=Transport(pool_size=1, client="requests"))
    assert (outcome.kind, outcome.opt_out) == (PERMANENT, True)


def test_webhook_body_and_signature(sandbox):
    sandbox.configure(webhook_secret="s3cret")
    message = OutMessage(42, TO, "sms", "Oi Ana", campaign_id=7, user="padaria", fields={"cidade": "SP"})
    request = providers_for(sandbox.url)["webhook"].build(message)
    assert json.loads(request.body) == {"id": 42, "to": TO, "body": "Oi Ana", "channel": "sms", "campaign": 7,
                                        "user": "padaria", "fields": {"cidade": "SP"}}
    assert request.headers["X-Smsched-Signature"] == signature("s3cret", request.body)
    assert send(providers_for(sandbox.url)["webhook"], message).kind == ACCEPTED
    sandbox.configure(webhook_secret="other")
    assert send(providers_for(sandbox.url)["webhook"], message).kind == CONFIG


def test_sandbox_stores_what_it_accepted_with_our_message_id(sandbox):
    provider = providers_for(sandbox.url)["twilio"]
    request = provider.build(OutMessage(9, TO, "sms", "Olá"))
    request.headers["X-Smsched-Message-Id"] = "9"
    Transport(pool_size=1).send(request)
    (received,) = sandbox.accepted()
    assert (received["api"], received["to"], received["body"], received["smsched_id"]) == ("twilio", TO, "Olá", "9")
    assert received["provider_id"].startswith("SM")


def test_sandbox_rate_limit_answers_429_with_retry_after(sandbox):
    sandbox.configure(rate_limit=3)
    kinds = [send(providers_for(sandbox.url)["twilio"]).kind for _ in range(5)]
    assert kinds[:3] == [ACCEPTED] * 3 and kinds[3:] == [RETRY, RETRY]


def test_config_env_overrides_and_masking(tmp_path, monkeypatch):
    path = tmp_path / "smsched.toml"
    path.write_text('[providers.twilio]\naccount_sid = "ACfile"\nauth_token = "file-token-123456"\nfrom = "+1500"\n')
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "env-token-abcdefghijkl")
    monkeypatch.setenv("WHATSAPP_TOKEN", "EAAB-very-secret-token")
    config = config_lib.load(path)
    assert config.provider("twilio").settings["auth_token"] == "env-token-abcdefghijkl"
    masked = json.dumps(config.masked())
    assert "env-token" not in masked and "abcdefghijkl" not in masked and "very-secret" not in masked
    assert config.masked()["providers"]["twilio"]["auth_token"] == "******** (set)"


def test_config_show_never_prints_a_secret(tmp_path, monkeypatch):
    path = tmp_path / "smsched.toml"
    path.write_text('[providers.webhook]\nurl = "http://127.0.0.1:1/webhook"\nsecret = "hunter2-hunter2"\n')
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tw-secret-value")
    for args in (["config", "show", "--config", str(path)], ["config", "show", "--config", str(path), "--json"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "hunter2" not in result.output and "tw-secret-value" not in result.output
        assert "******** (set)" in result.output


@pytest.mark.parametrize("text, message", [
    ("[channels]\nsms = 'zenvia'\n", "[channels] sms must name a provider: twilio, whatsapp, webhook"),
    ("[channels]\nsms = 'whatsapp'\n", '[channels] sms = "whatsapp": whatsapp cannot carry sms; use one of twilio, webhook'),
    ("[providers.twilio]\nrate = -1\n", "[providers.twilio] rate must be a finite number above 0"),
    ("[providers.twilio]\nrate = inf\n", "[providers.twilio] rate must be a finite number above 0"),
    ("[dispatch\n", "fix the TOML syntax"),
    ('[dispatch]\nworkers = "many"\n', "[dispatch] workers must be a whole number from 1 to 1,024 (it is a string)"),
    ("[dispatch]\nworkerz = 3\n", "[dispatch]: unknown key 'workerz'; did you mean workers?"),
    ("[dispatch]\npin_cpu = 'yes'\n", "[dispatch] pin_cpu must be true or false (it is a string)"),
    ("[dispatch]\nlease = 'soon'\n", '[dispatch] lease must be a duration such as "30s", "5m" or "1h"'),
    ('channels = "twilio"\n', "channels must be a table"),
    ("providers = [1, 2]\n", "providers must be a table"),
    ("dispatch = 5\n", "dispatch must be a table"),
    ("[dispatc]\n", "unknown section 'dispatc'; did you mean dispatch?"),
    ("[providers.twillio]\n", "unknown provider 'twillio'; did you mean twilio?"),
    ("[receipts]\nport = 70000\n", "[receipts] port must be a whole number from 0 to 65,535"),
])
def test_bad_configuration_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "smsched.toml"
    path.write_text(text)
    for command in ("show", "check"):
        result = CliRunner().invoke(app, ["config", command, "--config", str(path)])
        assert result.exit_code == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_secret_in_the_wrong_key_is_never_echoed(tmp_path):
    path = tmp_path / "smsched.toml"
    for text in ('[dispatch]\nlease = "AC-very-secret-1234"\n', '[providers.twilio]\nauth_tokn = "AC-very-secret-1234"\n',
                 '[dispatch]\nworkers = "AC-very-secret-1234"\n', '[providers.webhook]\nurl = "AC-very-secret-1234"\n'):
        path.write_text(text)
        result = CliRunner().invoke(app, ["config", "show", "--config", str(path)])
        assert result.exit_code == 2 and "very-secret" not in result.output


def test_a_binary_file_is_not_a_configuration(tmp_path):
    path = tmp_path / "smsched.toml"
    path.write_bytes(bytes(range(256)) * 4)
    result = CliRunner().invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {path}: not a TOML file (not UTF-8 text); give smsched.toml to --config"


def test_config_show_is_toml_that_reads_back_with_url_credentials_masked(tmp_path):
    import tomllib

    path = tmp_path / "smsched.toml"
    path.write_text('[dispatch]\npin_cpu = false\nworkers = 7\n[providers.webhook]\n'
                    'url = "http://ops:SECRET1@127.0.0.1:9/hook?token=SECRET2"\n')
    result = CliRunner().invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code == 0 and "SECRET" not in result.output
    shown = tmp_path / "shown.toml"
    shown.write_text(result.stdout)
    data = tomllib.loads(result.stdout)
    assert data["dispatch"]["pin_cpu"] is False and data["dispatch"]["workers"] == 7
    assert data["providers"]["webhook"]["url"] == "http://ops:********@127.0.0.1:9/hook?token=********"
    again = CliRunner().invoke(app, ["config", "show", "--config", str(shown)])
    assert again.exit_code == 0 and again.stdout.splitlines()[1:] == result.stdout.splitlines()[1:]


def test_config_check_verifies_credentials_without_sending(sandbox, tmp_path):
    path = tmp_path / "smsched.toml"
    config_lib.write_example(path, base_url=sandbox.url)
    result = CliRunner().invoke(app, ["config", "check", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert [(r["provider"], r["status"]) for r in json.loads(result.stdout)] == [("twilio", "ok"), ("whatsapp", "ok")]
    sandbox.configure(token="the-right-one")
    result = CliRunner().invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 1 and "credentials refused (HTTP 401)" in result.stdout
    assert sandbox.accepted() == []


def test_sandbox_serve_and_messages_over_the_cli(tmp_path):
    """The real command, as a user runs it: a process serving, then `sandbox messages --db`."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = tmp_path / "sandbox.db"
    proc = subprocess.Popen([sys.executable, "-m", "smsched", "sandbox", "serve", "--port", str(port), "--db", str(store)],
                            stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_port(port)
        assert send(providers_for(url)["twilio"]).kind == ACCEPTED
        deadline = time.monotonic() + 10  # real clock: the sandbox's writer thread commits every 100 ms
        while True:
            result = CliRunner().invoke(app, ["sandbox", "messages", "--db", str(store), "--json"])
            if (result.exit_code == 0 and json.loads(result.stdout)) or time.monotonic() > deadline:  # real clock
                break
            time.sleep(0.05)  # real clock: polling another process, bounded above
        assert result.exit_code == 0, result.output
        assert [(m["api"], m["to"], m["status"]) for m in json.loads(result.stdout)] == [("twilio", TO, "accepted")]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
