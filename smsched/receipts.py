"""Delivery receipts: what the provider says happened to each message after it took it.

`smsched receipts serve` receives them over HTTP:

- ``POST /twilio/status``: Twilio status callbacks (form fields MessageSid, MessageStatus,
  ErrorCode, To, From, AccountSid), authenticated by ``X-Twilio-Signature``: base64 HMAC-SHA1
  with the auth token over the URL Twilio called followed by the POST parameters sorted by
  name, each name then its value. The URL is ``[receipts] public_url`` + path + query when
  set, else ``http://{Host}{path}{query}``.
- ``GET /whatsapp``: Meta's verification handshake (hub.mode=subscribe, hub.verify_token
  checked against ``[receipts] verify_token``; the answer echoes hub.challenge).
- ``POST /whatsapp``: Meta webhook status notifications, authenticated by
  ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the app secret>``.
- ``GET /health``: 200 while it runs.

A missing or wrong signature is refused (403) and changes nothing. Every receipt is stored once
(a replay changes nothing); a message's delivery state follows the provider's own order, not
the order receipts arrive in (a 'sent' after a 'delivered' is old news). A receipt for an
'unknown' message proves the provider has it: it becomes 'sent'. Opt-out codes (Twilio 21610,
Meta 131050) add the number to the do-not-contact list; carrier failures only mark the delivery.
Logs name message ids and states, never a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

import sqlite_utils

from smsched import optouts, queue, storage
from smsched.config import Config
from smsched.providers import twilio as twilio_provider

# The provider's own order: a receipt of a lower rank than what is known changes nothing.
RANK = {"accepted": 0, "queued": 0, "scheduled": 0, "sending": 0, "sent": 1, "delivered": 2,
        "undelivered": 2, "failed": 2, "read": 3}
DELIVERY_STATES = ("sent", "delivered", "undelivered", "failed", "read")
MATCH_EVERY_S = 2.0


@dataclass(frozen=True)
class Event:
    provider: str
    provider_message_id: str
    status: str
    message_id: int | None = None       # ours, when the callback URL carried it
    error_code: str | None = None
    error_text: str | None = None
    occurred_at: float | None = None    # the provider's time, when it says


# ---- signatures ---------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature: the URL, then each POST parameter (sorted by name, then
    value) as name followed by value, HMAC-SHA1 with the auth token, base64."""
    data = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def twilio_signature_valid(auth_token: str, url: str, params: list[tuple[str, str]], signature: str) -> bool:
    """As Twilio's own validators: the URL as called, and with its default port left out or added."""
    if not signature or not auth_token:
        return False
    return any(hmac.compare_digest(twilio_signature(auth_token, candidate, params), signature)
               for candidate in _url_variants(url))


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    variants = [url]
    if parts.port is not None:
        variants.append(urlunsplit(parts._replace(netloc=host)))
    elif default:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    return variants


def meta_signature(app_secret: str, body: bytes) -> str:
    """Meta's X-Hub-Signature-256: sha256= and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def meta_signature_valid(app_secret: str, body: bytes, signature: str) -> bool:
    return bool(signature and app_secret) and hmac.compare_digest(meta_signature(app_secret, body), signature)


# ---- reading receipts -----------------------------------------------------------------------


def twilio_event(form: dict[str, str], query: dict[str, str]) -> Event:
    code = form.get("ErrorCode") or None
    text = None
    if code:
        try:
            text = twilio_provider.DELIVERY_ERRORS.get(int(code))
        except ValueError:
            pass
    ours = query.get("m")
    return Event("twilio", form.get("MessageSid") or form.get("SmsSid") or "",
                 (form.get("MessageStatus") or form.get("SmsStatus") or "").lower(),
                 int(ours) if ours and ours.isdigit() else None, code, text)


def meta_events(payload: dict) -> list[Event]:
    events = []
    for entry in payload.get("entry") or []:
        for change in entry.get("changes") or []:
            value = change.get("value") or {}
            for status in value.get("statuses") or []:
                errors = status.get("errors") or [{}]
                error = errors[0] if isinstance(errors[0], dict) else {}
                stamp = status.get("timestamp")
                events.append(Event(
                    "whatsapp", str(status.get("id") or ""), str(status.get("status") or "").lower(), None,
                    str(error["code"]) if error.get("code") is not None else None,
                    error.get("title") or error.get("message"),
                    float(stamp) if str(stamp or "").isdigit() else None))
    return events


# ---- recording ------------------------------------------------------------------------------


def record(db: sqlite_utils.Database, config: Config, events: list[Event], *, now: float | None = None) -> list[dict]:
    """Store each receipt once and apply it to its message; returns what happened to each."""
    stamp = now if now is not None else time.time()
    done = []
    with storage.transaction(db):
        for event in events:
            if not event.provider_message_id or event.status not in RANK:
                done.append({"event": event, "result": "ignored"})
                continue
            new = db.conn.execute(
                "INSERT INTO receipts (provider, provider_message_id, status, error_code, error_text, occurred_at,"
                " received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (event.provider, event.provider_message_id, event.status, event.error_code, event.error_text,
                 event.occurred_at, stamp)).rowcount
            if not new:
                done.append({"event": event, "result": "replay"})
                continue
            message_id = _find(db, event)
            if message_id is None:
                done.append({"event": event, "result": "unmatched"})
                continue
            done.append({"event": event, "result": _apply(db, config, event, message_id, stamp)})
    return done


def match_pending(db: sqlite_utils.Database, config: Config, *, now: float | None = None, within: float = 86400) -> int:
    """Apply receipts that came before their message had a provider id (the dispatch run had not
    recorded the answer yet)."""
    stamp = now if now is not None else time.time()
    rows = db.conn.execute(
        "SELECT r.provider, r.provider_message_id, r.status, r.error_code, r.error_text, r.occurred_at, m.id"
        " FROM receipts r JOIN messages m ON m.provider_id = r.provider_message_id"
        " WHERE r.message_id IS NULL AND r.received_at > ? ORDER BY r.id", (stamp - within,)).fetchall()
    if not rows:
        return 0
    with storage.transaction(db):
        for provider, pmid, status, code, text, occurred, message_id in rows:
            _apply(db, config, Event(provider, pmid, status, None, code, text, occurred), message_id, stamp)
    return len(rows)


def _find(db: sqlite_utils.Database, event: Event) -> int | None:
    if event.message_id is not None:
        row = db.conn.execute("SELECT provider_id FROM messages WHERE id = ?", (event.message_id,)).fetchone()
        # Our id in the callback URL, unless the message is known under another provider id.
        if row is not None and row[0] in (None, event.provider_message_id):
            return event.message_id
        return None
    row = db.conn.execute("SELECT id FROM messages WHERE provider_id = ?", (event.provider_message_id,)).fetchone()
    return row[0] if row else None


def _apply(db: sqlite_utils.Database, config: Config, event: Event, message_id: int, now: float) -> str:
    db.conn.execute(
        "UPDATE receipts SET message_id = ? WHERE provider = ? AND provider_message_id = ? AND status = ?",
        (message_id, event.provider, event.provider_message_id, event.status))
    state = queue.provider_has(db, message_id, event.provider_message_id, at=event.occurred_at or now, now=now)
    if RANK[event.status] == 0:
        return f"message {message_id} {state}"
    at = event.occurred_at or now
    error = f"[{event.error_code}] {event.error_text or 'delivery failed'}" if event.error_code else None
    changed = db.conn.execute(
        "UPDATE messages SET delivery = ?, delivery_at = ?,"
        " delivered_at = CASE WHEN ? IN ('delivered', 'read') THEN coalesce(delivered_at, ?) ELSE delivered_at END,"
        " delivery_error = CASE WHEN ? IN ('failed', 'undelivered') THEN ? ELSE delivery_error END"
        " WHERE id = ? AND (delivery IS NULL OR (CASE delivery " + " ".join(
            f"WHEN '{name}' THEN {rank}" for name, rank in RANK.items()) + " END) < ?)",
        (event.status, at, event.status, at, event.status, error, message_id, RANK[event.status])).rowcount
    if changed and event.error_code and _provider(config, event.provider).is_opt_out(event.error_code):
        _opt_out(db, message_id, event, now)
    return f"message {message_id} {state}, delivery {event.status}" if changed else f"message {message_id} {state}, older news"


def _provider(config: Config, name: str):
    return config.provider(name)


def _opt_out(db: sqlite_utils.Database, message_id: int, event: Event, now: float) -> None:
    phone, user_id, sender = db.conn.execute(
        "SELECT m.phone, m.user_id, u.sender FROM messages m JOIN users u ON u.id = m.user_id WHERE m.id = ?",
        (message_id,)).fetchone()
    # A STOP blocks the sender it was sent to: the user's own sender, else the shared one (everyone).
    optouts.add_normalized(db, [phone], user_id if sender else 0,
                           f"provider {event.provider}: [{event.error_code}] {event.error_text or 'opted out'}",
                           f"provider:{event.provider}", now)


# ---- the receiver -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "smsched-receipts/1"
    receiver: "ReceiptsServer"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        return  # one line per receipt is written by the receiver itself, without secrets

    def _reply(self, status: int, text: str = "", content_type: str = "text/plain") -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, 1 << 20)) if length else b""

    def do_GET(self):  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        if parts.path == "/health":
            self._reply(200, "ok\n")
        elif parts.path == "/whatsapp":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            expected = self.receiver.config.receipts("verify_token")
            given = query.get("hub.verify_token", "")
            if query.get("hub.mode") == "subscribe" and expected and hmac.compare_digest(given, str(expected)):
                self._reply(200, query.get("hub.challenge", ""))
                self.receiver.log("whatsapp verification handshake accepted")
            else:
                self._reply(403, "forbidden\n")
        else:
            self._reply(404, "not found\n")

    def do_POST(self):  # noqa: N802
        parts = urlsplit(self.path)
        body = self._body()
        if parts.path == "/twilio/status":
            self._twilio(parts, body)
        elif parts.path == "/whatsapp":
            self._whatsapp(body)
        else:
            self._reply(404, "not found\n")

    def _twilio(self, parts, body: bytes) -> None:
        params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        query = f"?{parts.query}" if parts.query else ""
        public = self.receiver.config.receipts("public_url")
        url = (public.rstrip("/") if public else f"http://{self.headers.get('Host', '')}") + parts.path + query
        token = self.receiver.config.provider("twilio").settings.get("auth_token") or ""
        if not twilio_signature_valid(token, url, params, self.headers.get("X-Twilio-Signature", "")):
            self.receiver.log("twilio: refused a callback with a missing or wrong signature")
            self._reply(403, "forbidden\n")
            return
        event = twilio_event(dict(params), {k: v[0] for k, v in parse_qs(parts.query).items()})
        self.receiver.apply([event])
        self._reply(200, "", "text/plain")

    def _whatsapp(self, body: bytes) -> None:
        secret = self.receiver.config.provider("whatsapp").settings.get("app_secret") or ""
        if not meta_signature_valid(secret, body, self.headers.get("X-Hub-Signature-256", "")):
            self.receiver.log("whatsapp: refused a notification with a missing or wrong signature")
            self._reply(403, "forbidden\n")
            return
        try:
            payload = json.loads(body)
        except ValueError:
            self._reply(400, "not JSON\n")
            return
        self.receiver.apply(meta_events(payload if isinstance(payload, dict) else {}))
        self._reply(200, "ok\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class ReceiptsServer:
    def __init__(self, db: sqlite_utils.Database, config: Config, *, host: str = "127.0.0.1", port: int = 8788,
                 log=None):
        self.db, self.config = db, config
        self.lock = threading.Lock()  # one connection, many request threads
        self.log = log or _log
        handler = type("Handler", (_Handler,), {"receiver": self})
        self.httpd = _Server((host, port), handler)
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def apply(self, events: list[Event]) -> None:
        with self.lock:
            done = record(self.db, self.config, events)
        for item in done:
            e = item["event"]
            self.log(f"{e.provider} {e.provider_message_id or '?'} {e.status}: {item['result']}")

    def _match_loop(self) -> None:
        while not self.stopped.wait(MATCH_EVERY_S):
            with self.lock:
                matched = match_pending(self.db, self.config)
            if matched:
                self.log(f"matched {matched} receipt(s) that arrived before their message's answer was recorded")

    def start(self) -> "ReceiptsServer":
        self.threads = [threading.Thread(target=self.httpd.serve_forever, daemon=True, name="receipts"),
                        threading.Thread(target=self._match_loop, daemon=True, name="receipts-match")]
        for thread in self.threads:
            thread.start()
        return self

    def serve_forever(self) -> None:
        matcher = threading.Thread(target=self._match_loop, daemon=True, name="receipts-match")
        matcher.start()
        try:
            self.httpd.serve_forever()
        finally:
            self.stopped.set()

    def shutdown(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()

    def stop(self) -> None:
        self.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ReceiptsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _log(line: str) -> None:
    # Always timestamped (a long-running server), and escaped: these lines carry what the
    # network sent us, which must not forge log lines or drive a terminal.
    from smsched.output import cron_log, printable

    sys.stderr.write(f"{cron_log.prefix()}receipts {printable(line)}\n")
    sys.stderr.flush()
