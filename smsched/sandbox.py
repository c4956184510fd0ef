"""A local provider: an HTTP server on 127.0.0.1 that speaks the Twilio and Meta shapes smsched
sends (paths, auth, bodies, error bodies), stores every message it accepts, and injects faults
on request. For the demo, the tests, staging and load tests.

Endpoints:
- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (Twilio, form, HTTP Basic)
- ``POST /{version}/{phone-number-id}/messages`` (Meta WhatsApp Cloud API, JSON, Bearer)
- ``POST /webhook`` (smsched's generic webhook, JSON, optional HMAC signature)
- ``GET /2010-04-01/Accounts/{sid}.json`` and ``GET /{version}/{phone-number-id}``: credential checks
- ``GET /2010-04-01/Accounts/{AccountSid}/Messages.json``: Twilio's message list (To, From,
  DateSent>=, PageSize, Page; newest first; ``next_page_uri``), for reconciliation
- ``GET /_sandbox/messages``, ``GET /_sandbox/stats``, ``POST /_sandbox/config`` (JSON settings,
  including ``rules``), ``POST /_sandbox/reset``: control, for tests and scripts.

Faults: ``latency_ms``; ``fail_rate`` (HTTP 500, message not stored); ``hang_rate`` with
``hang_ms`` (answer only after the client gave up); ``rate_limit`` per second (429 with
Retry-After); and ``rules``: ``{"to": "+5511...", "status": 400, "code": 21211}`` answers that
recipient with that error (``"times": N`` for the first N requests only; ``"hang_ms"`` to hang).

Delivery receipts, when ``callbacks`` is on: for each accepted Twilio message with a
``StatusCallback``, signed status callbacks ("sent", then "delivered", or what a rule's
``"delivery"``/``"delivery_code"`` says) signed with the request's own auth token; for WhatsApp,
signed status notifications to ``whatsapp_webhook`` with ``app_secret``.
"""

from __future__ import annotations

import base64
import collections
import email.utils
import hmac
import json
import queue
import random
import re
import secrets
import socket
import sqlite3
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

from smsched import receipts
from smsched.providers.webhook import signature

TWILIO_SEND = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
TWILIO_ACCOUNT = re.compile(r"^/2010-04-01/Accounts/([^/]+)\.json$")
META_SEND = re.compile(r"^/(v\d+\.\d+)/([^/]+)/messages$")
META_NUMBER = re.compile(r"^/(v\d+\.\d+)/([^/]+)$")

# Twilio's own test numbers, answered as Twilio answers them.
MAGIC = {
    "+15005550001": (400, 21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (400, 21612, "The 'To' phone number is not currently reachable."),
    "+15005550004": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (400, 21614, "'To' number is not a valid mobile number"),
}
_TWILIO_TO_META = {21211: 131026, 21612: 131026, 21610: 131050, 21614: 131026, 20429: 130429, 21611: 130429, 30001: 130429}

DEFAULTS = {
    "latency_ms": 0.0,
    "fail_rate": 0.0,
    "hang_rate": 0.0,
    "hang_ms": 30000.0,
    "rate_limit": 0,
    "retry_after": 1,
    "token": None,
    "webhook_secret": None,
    "rules": [],
    "callbacks": False,
    "callback_delay_ms": 0.0,
    "whatsapp_webhook": None,
    "app_secret": None,
}


class SandboxState:
    def __init__(self, settings: dict, db_path: str | None):
        self.settings = dict(DEFAULTS) | {k: v for k, v in settings.items() if v is not None}
        self.lock = threading.Lock()
        self.messages: list[dict] = []
        self.counts: collections.Counter = collections.Counter()
        self.window: collections.deque[float] = collections.deque()
        self.rule_hits: collections.Counter = collections.Counter()
        self.random = random.Random(self.settings.get("seed"))
        self.writer = _Writer(db_path) if db_path else None
        self.callbacks = _Callbacks(self)

    def over_rate(self) -> bool:
        limit = int(self.settings.get("rate_limit") or 0)
        if limit <= 0:
            return False
        now = time.monotonic()
        with self.lock:
            while self.window and self.window[0] <= now - 1.0:
                self.window.popleft()
            if len(self.window) >= limit:
                return True
            self.window.append(now)
            return False

    def rule_for(self, to: str, *, count: bool = True) -> dict | None:
        with self.lock:
            for index, rule in enumerate(self.settings.get("rules") or []):
                if rule.get("to") not in (to, "*"):
                    continue
                times = rule.get("times")
                if times is not None and self.rule_hits[index] >= times:
                    continue
                if count:
                    self.rule_hits[index] += 1
                return rule
        return None

    def roll(self, key: str) -> bool:
        rate = float(self.settings.get(key) or 0)
        if rate <= 0:
            return False
        with self.lock:
            return self.random.random() < rate

    def record(self, entry: dict) -> None:
        with self.lock:
            if self.writer is None:  # with --db the file keeps them: a load test stays small
                self.messages.append(entry)
            self.counts[entry["status"]] += 1
        if self.writer:
            self.writer.put(entry)

    def received(self) -> list[dict]:
        if self.writer is None:
            with self.lock:
                return list(self.messages)
        self.writer.flush()
        return read_messages(self.writer.path)


class _Writer:
    """Stores received messages in SQLite from one thread, a batch at a time."""

    def __init__(self, path: str):
        from smsched.errors import UsageError

        self.path = path
        try:
            conn = sqlite3.connect(path)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "received" not in tables:
                    # Never write into someone else's database (smsched's own, say).
                    raise UsageError(f"{path} is another program's database; give --db a new file for the sandbox")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS received (id INTEGER PRIMARY KEY, received_at REAL, api TEXT,"
                    " to_number TEXT, sender TEXT, body TEXT, template TEXT, smsched_id TEXT, provider_id TEXT,"
                    " status TEXT, code TEXT)"
                )
                conn.commit()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise UsageError(f"{path} cannot hold the sandbox's messages ({exc}); give --db a new file") from None
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name="sandbox-writer")
        self.thread.start()

    def put(self, entry: dict) -> None:
        self.queue.put(entry)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30)
        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + 0.1
            while time.monotonic() < deadline:
                try:
                    batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            stop = None in batch
            rows = [(e["received_at"], e["api"], e["to"], e.get("from"), e.get("body"), e.get("template"),
                     e.get("smsched_id"), e.get("provider_id"), e["status"], e.get("code")) for e in batch if e]
            if rows:
                conn.executemany(
                    "INSERT INTO received (received_at, api, to_number, sender, body, template, smsched_id,"
                    " provider_id, status, code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                conn.commit()
            for _ in batch:
                self.queue.task_done()
            if stop:
                conn.close()
                return

    def flush(self) -> None:
        self.queue.join()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without this, Nagle plus delayed ACKs stall every keep-alive answer ~40 ms.
    disable_nagle_algorithm = True
    server_version = "smsched-sandbox/1"
    state: SandboxState

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        return  # a load test would print a line per request

    # -- plumbing ---------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: dict | list, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.end_headers()
        self.wfile.write(data)

    def _hang(self, ms: float) -> None:
        time.sleep(ms / 1000)

    # -- routing ----------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802 - http.server's naming
        path = urlparse(self.path).path
        state = self.state
        if path == "/_sandbox/messages":
            self._reply(200, state.received())
        elif path == "/_sandbox/stats":
            with state.lock:
                self._reply(200, {"counts": dict(state.counts), "received": sum(state.counts.values()),
                                  "settings": {k: v for k, v in state.settings.items() if k not in ("token", "webhook_secret")}})
        elif match := TWILIO_SEND.match(path):
            if self._twilio_auth(match.group(1)):
                self._twilio_list(match.group(1), {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()})
        elif match := TWILIO_ACCOUNT.match(path):
            if self._twilio_auth(match.group(1)):
                self._reply(200, {"sid": match.group(1), "status": "active", "type": "Full"})
        elif match := META_NUMBER.match(path):
            if self._meta_auth():
                self._reply(200, {"id": match.group(2), "display_phone_number": "15550000000",
                                  "verified_name": "smsched sandbox", "quality_rating": "GREEN"})
        else:
            self._reply(404, {"error": f"no such path {path}"})

    def do_POST(self):  # noqa: N802
        path = urlparse(self.path).path
        body = self._body()
        if path == "/_sandbox/config":
            changes = json.loads(body or b"{}")
            with self.state.lock:
                self.state.settings.update(changes)
                if "rules" in changes:
                    self.state.rule_hits.clear()
            self._reply(200, {"ok": True})
        elif path == "/_sandbox/reset":
            with self.state.lock:
                self.state.messages.clear()
                self.state.counts.clear()
                self.state.rule_hits.clear()
            self._reply(200, {"ok": True})
        elif match := TWILIO_SEND.match(path):
            self._twilio_send(match.group(1), body)
        elif match := META_SEND.match(path):
            self._meta_send(body)
        elif path == "/webhook":
            self._webhook(body)
        else:
            self._reply(404, {"error": f"no such path {path}"})

    # -- auth -------------------------------------------------------------------------------
    def _basic_password(self) -> str:
        try:
            return base64.b64decode(self.headers.get("Authorization", "")[6:]).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""

    def _twilio_auth(self, sid: str) -> bool:
        header = self.headers.get("Authorization", "")
        ok = False
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                token = self.state.settings.get("token")
                ok = user == sid and bool(password) and (token is None or hmac.compare_digest(password, token))
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            self._reply(401, {"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})
        return ok

    def _meta_auth(self) -> bool:
        header = self.headers.get("Authorization", "")
        token = self.state.settings.get("token")
        ok = header.startswith("Bearer ") and len(header) > 7 and (token is None or hmac.compare_digest(header[7:], token))
        if not ok:
            self._reply(401, {"error": {"message": "Error validating access token: Session has expired.",
                                        "type": "OAuthException", "code": 190, "fbtrace_id": "sandbox"}})
        return ok

    # -- common fault handling --------------------------------------------------------------
    def _faults(self, api: str, to: str, entry: dict) -> bool:
        """Answer with an injected fault; True when it did."""
        state = self.state
        if state.settings.get("latency_ms"):
            time.sleep(float(state.settings["latency_ms"]) / 1000)
        rule = state.rule_for(to)
        if rule is None and to in MAGIC:
            status, code, message = MAGIC[to]
            rule = {"status": status, "code": code, "message": message}
        if rule:
            if rule.get("hang_ms"):
                self._hang(float(rule["hang_ms"]))
            status = int(rule.get("status", 400))
            if 200 <= status < 300:
                return False
            self._error(api, status, rule.get("code"), rule.get("message") or "sandbox rule", entry, rule.get("retry_after"))
            return True
        if state.over_rate():
            self._error(api, 429, 20429, "Too Many Requests", entry, state.settings.get("retry_after", 1))
            return True
        if state.roll("hang_rate"):
            self._hang(float(state.settings.get("hang_ms") or 30000))
        if state.roll("fail_rate"):
            self._error(api, 500, None, "Internal Server Error", entry)
            return True
        return False

    def _error(self, api: str, status: int, code, message: str, entry: dict, retry_after=None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.state.record(entry | {"status": f"error {status}", "code": str(code) if code else None})
        if api == "twilio":
            self._reply(status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                                 "status": status}, headers)
        elif api == "whatsapp":
            meta_code = _TWILIO_TO_META.get(code, code) if code else 131000
            self._reply(status, {"error": {"message": message, "type": "OAuthException", "code": meta_code,
                                           "error_data": {"messaging_product": "whatsapp", "details": message},
                                           "fbtrace_id": "sandbox"}}, headers)
        else:
            self._reply(status, {"error": message, "code": code}, headers)

    # -- the three APIs ---------------------------------------------------------------------
    def _base_entry(self, api: str) -> dict:
        return {"api": api, "received_at": time.time(), "smsched_id": self.headers.get("X-Smsched-Message-Id"),
                "remote": self.client_address[0]}

    def _twilio_send(self, sid: str, body: bytes) -> None:
        if not self._twilio_auth(sid):
            return
        if "application/x-www-form-urlencoded" not in self.headers.get("Content-Type", ""):
            self._reply(415, {"code": 20001, "message": "Content-Type must be application/x-www-form-urlencoded", "status": 415})
            return
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        to = form.get("To", "")
        entry = self._base_entry("twilio") | {"to": to.removeprefix("whatsapp:"), "from": form.get("From") or form.get("MessagingServiceSid"),
                                              "body": form.get("Body"), "template": form.get("ContentSid")}
        if not to:
            self._reply(400, {"code": 21604, "message": "A 'To' phone number is required.", "status": 400})
            return
        if not (form.get("From") or form.get("MessagingServiceSid")):
            self._reply(400, {"code": 21603, "message": "A 'From' phone number is required.", "status": 400})
            return
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            self._reply(400, {"code": 21602, "message": "Message body is required.", "status": 400})
            return
        if self._faults("twilio", entry["to"], entry):
            return
        message_sid = "SM" + secrets.token_hex(16)
        self.state.record(entry | {"status": "accepted", "provider_id": message_sid})
        if form.get("StatusCallback") and self.state.settings.get("callbacks"):
            rule = self.state.rule_for(entry["to"], count=False) or {}
            self.state.callbacks.twilio(form["StatusCallback"], self._basic_password(), sid, message_sid, form, rule)
        self._reply(201, {"sid": message_sid, "account_sid": sid, "to": to, "from": form.get("From"),
                          "body": form.get("Body"), "status": "queued", "num_segments": "1",
                          "direction": "outbound-api", "api_version": "2010-04-01",
                          "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                          "uri": f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json"})

    def _twilio_list(self, sid: str, query: dict) -> None:
        """Twilio's Messages list: filtered by To, From and DateSent>=, newest first, paged."""
        since = _parse_date(query.get("DateSent>")) if query.get("DateSent>") else None
        try:
            size = max(1, min(1000, int(query.get("PageSize") or 50)))
            page = max(0, int(query.get("Page") or 0))
        except ValueError:
            self._reply(400, {"code": 20001, "message": "Invalid PageSize or Page", "status": 400})
            return
        rows = []
        for m in self.state.received():
            if m["api"] != "twilio" or m["status"] != "accepted":
                continue
            whatsapp = (m.get("from") or "").startswith("whatsapp:")
            to = f"whatsapp:{m['to']}" if whatsapp else m["to"]
            if query.get("To") and query["To"] != to:
                continue
            if query.get("From") and query["From"] != m.get("from"):
                continue
            if since is not None and m["received_at"] < since:
                continue
            rows.append((m, to))
        rows.sort(key=lambda item: item[0]["received_at"], reverse=True)
        chunk = rows[page * size:(page + 1) * size]
        base = f"/2010-04-01/Accounts/{sid}/Messages.json"
        keep = {k: v for k, v in query.items() if k not in ("Page", "PageToken")}
        following = (f"{base}?{urlencode(keep | {'Page': page + 1, 'PageToken': f'PA{page + 1}'})}"
                     if (page + 1) * size < len(rows) else None)
        self._reply(200, {
            "messages": [_twilio_message(sid, m, to) for m, to in chunk],
            "page": page, "page_size": size, "start": page * size, "end": page * size + max(0, len(chunk) - 1),
            "uri": f"{base}?{urlencode(query)}", "first_page_uri": f"{base}?{urlencode(keep | {'Page': 0})}",
            "next_page_uri": following, "previous_page_uri": None,
        })

    def _meta_send(self, body: bytes) -> None:
        if not self._meta_auth():
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or payload.get("messaging_product") != "whatsapp" or not payload.get("to"):
            self._reply(400, {"error": {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100}})
            return
        kind = payload.get("type")
        template = payload.get("template") if kind == "template" else None
        if kind == "template" and not (isinstance(template, dict) and template.get("name") and (template.get("language") or {}).get("code")):
            self._reply(400, {"error": {"message": "(#132000) Template name and language are required", "code": 132000}})
            return
        text = ((payload.get("text") or {}).get("body")) if kind == "text" else None
        if kind == "text" and not text:
            self._reply(400, {"error": {"message": "(#100) text.body is required", "code": 100}})
            return
        if kind not in ("text", "template"):
            self._reply(400, {"error": {"message": f"(#131051) Unsupported message type {kind}", "code": 131051}})
            return
        params = []
        for component in (template or {}).get("components") or []:
            params += [p.get("text") for p in component.get("parameters") or []]
        to = "+" + str(payload["to"]).lstrip("+")
        entry = self._base_entry("whatsapp") | {"to": to, "from": None,
                                                "body": text if text is not None else " | ".join(str(p) for p in params),
                                                "template": template.get("name") if template else None}
        if self._faults("whatsapp", to, entry):
            return
        wamid = "wamid." + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
        self.state.record(entry | {"status": "accepted", "provider_id": wamid})
        if self.state.settings.get("callbacks") and self.state.settings.get("whatsapp_webhook"):
            rule = self.state.rule_for(to, count=False) or {}
            self.state.callbacks.whatsapp(wamid, to, rule)
        self._reply(200, {"messaging_product": "whatsapp", "contacts": [{"input": payload["to"], "wa_id": payload["to"]}],
                          "messages": [{"id": wamid, "message_status": "accepted"}]})

    def _webhook(self, body: bytes) -> None:
        secret = self.state.settings.get("webhook_secret")
        if secret and not hmac.compare_digest(self.headers.get("X-Smsched-Signature", ""), signature(secret, body)):
            self._reply(401, {"error": "bad signature"})
            return
        try:
            payload = json.loads(body)
        except ValueError:
            self._reply(400, {"error": "body is not JSON"})
            return
        entry = self._base_entry("webhook") | {"to": payload.get("to"), "from": payload.get("from"),
                                               "body": payload.get("body"), "smsched_id": str(payload.get("id"))}
        if self._faults("webhook", payload.get("to") or "", entry):
            return
        provider_id = "wh-" + secrets.token_hex(8)
        self.state.record(entry | {"status": "accepted", "provider_id": provider_id})
        self._reply(200, {"id": provider_id})


def _rfc2822(ts: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(ts, timezone.utc))


def _parse_date(text: str) -> float | None:
    try:
        if len(text) == 10:
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _twilio_message(sid: str, m: dict, to: str) -> dict:
    when = _rfc2822(m["received_at"])
    return {"sid": m["provider_id"], "account_sid": sid, "to": to, "from": m.get("from"), "body": m.get("body"),
            "status": "delivered", "direction": "outbound-api", "num_segments": "1", "num_media": "0",
            "date_created": when, "date_sent": when, "date_updated": when, "api_version": "2010-04-01",
            "messaging_service_sid": None, "error_code": None, "error_message": None, "price": None,
            "price_unit": "USD", "uri": f"/2010-04-01/Accounts/{sid}/Messages/{m['provider_id']}.json",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{sid}/Messages/{m['provider_id']}/Media.json"}}


class _Callbacks:
    """Delivery receipts, sent from a few background threads (so, like a provider's, they may
    arrive out of order: the receiver keeps the provider's order)."""

    THREADS = 4

    def __init__(self, state: "SandboxState"):
        self.state = state
        self.queue: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"sandbox-callbacks-{i}")
                        for i in range(self.THREADS)]
        for thread in self.threads:
            thread.start()
        self.sent = 0

    def twilio(self, url: str, token: str, account: str, message_sid: str, form: dict, rule: dict) -> None:
        final = rule.get("delivery") or "delivered"
        for status in ("sent", final):
            params = {"MessageSid": message_sid, "SmsSid": message_sid, "MessageStatus": status, "SmsStatus": status,
                      "AccountSid": account, "From": form.get("From") or "", "To": form.get("To") or "",
                      "ApiVersion": "2010-04-01"}
            if status == final and rule.get("delivery_code"):
                params["ErrorCode"] = str(rule["delivery_code"])
            body = urlencode(params).encode()
            signature = receipts.twilio_signature(token, url, list(params.items()))
            self.queue.put((url, body, {"Content-Type": "application/x-www-form-urlencoded",
                                        "X-Twilio-Signature": signature}))

    def whatsapp(self, wamid: str, to: str, rule: dict) -> None:
        url, secret = self.state.settings["whatsapp_webhook"], self.state.settings.get("app_secret") or ""
        final = rule.get("delivery") or "read"
        for status in ("sent", "delivered", final) if final == "read" else ("sent", final):
            item = {"id": wamid, "status": status, "timestamp": str(int(time.time())), "recipient_id": to.lstrip("+")}
            if status == "failed":
                item["errors"] = [{"code": int(rule.get("delivery_code") or 131026), "title": "Message undeliverable"}]
            payload = {"object": "whatsapp_business_account", "entry": [{"id": "0", "changes": [
                {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [item]}}]}]}
            body = json.dumps(payload).encode()
            self.queue.put((url, body, {"Content-Type": "application/json",
                                        "X-Hub-Signature-256": receipts.meta_signature(secret, body)}))

    def _run(self) -> None:
        while True:
            url, body, headers = self.queue.get()
            time.sleep(float(self.state.settings.get("callback_delay_ms") or 0) / 1000)
            try:
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                urllib.request.urlopen(request, timeout=5).close()
                self.sent += 1
            except OSError:
                pass  # as a provider would: a receiver that is down misses the receipt


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return  # the client gave up (its read timeout): a provider does not print a stack for that
        super().handle_error(request, client_address)


class SandboxServer:
    """The sandbox, in a thread of this process (tests, demo) or in the foreground (`serve`)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 8787, db_path: str | None = None, **settings):
        self.state = SandboxState(settings, db_path)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = _QuietServer((host, port), handler)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "SandboxServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="sandbox")
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def configure(self, **settings) -> None:
        with self.state.lock:
            self.state.settings.update(settings)
            if "rules" in settings:
                self.state.rule_hits.clear()

    def accepted(self) -> list[dict]:
        return [m for m in self.state.received() if m["status"] == "accepted"]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.state.writer:
            self.state.writer.close()

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Return once something listens on host:port (a sandbox started in another process)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g}s") from None
            time.sleep(0.05)


def read_messages(db_path: str) -> list[dict]:
    """What a sandbox stored (`sandbox serve --db`), read-only."""
    from pathlib import Path

    from smsched.errors import UsageError

    try:
        conn = sqlite3.connect(f"{Path(db_path).absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT received_at, api, to_number, sender, body, template, smsched_id, provider_id, status, code"
                " FROM received ORDER BY id").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        raise UsageError(f"{db_path} is not a sandbox's database; give the file passed to `sandbox serve --db`") from None
    keys = ("received_at", "api", "to", "from", "body", "template", "smsched_id", "provider_id", "status", "code")
    return [dict(zip(keys, r)) for r in rows]
