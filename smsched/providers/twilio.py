"""Twilio Programmable Messaging (API 2010-04-01): form-encoded Create Message, HTTP Basic."""

from __future__ import annotations

import base64
import email.utils
import functools
import json
import re
from datetime import datetime, timezone
from urllib.parse import quote, quote_plus, urlencode

from smsched.providers.base import (
    ACCEPTED, CONFIG, MESSAGE_ID_HEADER, PERMANENT, RETRY, Code, HttpRequest, Listed, OutMessage, Outcome, Provider,
    by_code, json_body,
)

# What Twilio's error codes mean (https://www.twilio.com/docs/api/errors).
CODES: dict[int, Code] = {
    20429: Code(RETRY, throttled=True),   # too many requests: slow down
    21611: Code(RETRY, backoff=60.0),     # the From number's queue is full
    30001: Code(RETRY, backoff=60.0),     # queue overflow
    21211: Code(PERMANENT),               # invalid 'To' number
    21614: Code(PERMANENT),               # 'To' is not a mobile number
    21612: Code(PERMANENT),               # cannot route to this number
    21408: Code(PERMANENT),               # region not enabled
    21610: Code(PERMANENT, opt_out=True), # the recipient replied STOP: unsubscribed
    20003: Code(CONFIG),                  # authentication failed
    20404: Code(CONFIG),                  # account or resource not found
    21606: Code(CONFIG),                  # 'From' is not a number of this account
    21659: Code(CONFIG),                  # 'From' is not a valid sender
    21703: Code(CONFIG),                  # messaging service has no senders
}
_SID = re.compile(rb'"sid"\s*:\s*"([A-Za-z0-9]+)"')
# Permanent failures that no resend can fix (`retry --failed` leaves them unless asked).
UNFIXABLE = (21211, 21614, 21612, 21408, 21610)
# Delivery receipts (status callbacks) name the carrier's failure by code only.
DELIVERY_ERRORS = {
    30003: "unreachable destination handset",
    30004: "message blocked",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered by the carrier",
    30008: "unknown error",
    21610: "the recipient replied STOP: unsubscribed",
}


class Twilio(Provider):
    name = "twilio"
    channels = ("sms", "whatsapp")
    default_rate = 10.0
    url_settings = ("base_url", "status_callback")
    text_settings = ("account_sid", "from", "messaging_service_sid")
    secret_settings = ("auth_token",)
    can_list = True
    codes = CODES

    def missing_settings(self) -> list[str]:
        missing = [k for k in ("account_sid", "auth_token") if not self.settings.get(k)]
        if not (self.settings.get("from") or self.settings.get("messaging_service_sid")):
            missing.append("from (or messaging_service_sid)")
        return missing

    @property
    def _base(self) -> str:
        return self.settings.get("base_url", "https://api.twilio.com").rstrip("/")

    def _headers(self) -> dict[str, str]:
        pair = f"{self.settings['account_sid']}:{self.settings['auth_token']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode(), "Accept": "application/json"}

    # What every Create Message request shares, worked out once (a run builds thousands per second).
    @functools.cached_property
    def _messages_url(self) -> str:
        return f"{self._base}/2010-04-01/Accounts/{quote(self.settings['account_sid'])}/Messages.json"

    @functools.cached_property
    def _send_headers(self) -> dict[str, str]:
        return self._headers() | {"Content-Type": "application/x-www-form-urlencoded"}

    @functools.cached_property
    def _service_part(self) -> str:
        return "MessagingServiceSid=" + quote_plus(self.settings.get("messaging_service_sid") or "")

    @functools.cached_property
    def _callback_part(self) -> str | None:
        if self.receipts_url:  # our id follows: the receipt names our message even if our request timed out
            return "StatusCallback=" + quote_plus(f"{self.receipts_url}/twilio/status?m=")
        if self.settings.get("status_callback"):
            return "StatusCallback=" + quote_plus(self.settings["status_callback"])
        return None

    def sender_for(self, message: OutMessage) -> str:
        return message.sender or self.settings.get("from") or self.settings.get("messaging_service_sid", "")

    def list_key(self, message: OutMessage) -> tuple[str, str | None]:
        whatsapp = message.channel == "whatsapp"
        to = f"whatsapp:{message.phone}" if whatsapp else message.phone
        sender = message.sender or self.settings.get("from")
        if sender and whatsapp and not sender.startswith("whatsapp:"):
            sender = f"whatsapp:{sender}"
        return to, sender or None  # a Messaging Service picks the From itself

    def build(self, message: OutMessage) -> HttpRequest:
        """Create Message, form-encoded: To, From (or MessagingServiceSid), Body (or ContentSid and
        ContentVariables for a WhatsApp content template), StatusCallback."""
        to, sender = self.list_key(message)
        parts = ["To=" + quote_plus(to), "From=" + quote_plus(sender) if sender else self._service_part]
        if message.channel == "whatsapp" and message.template and message.template.startswith("HX"):
            # Twilio sends WhatsApp templates as Content API items: ContentSid + numbered variables.
            variables = json.dumps({str(i + 1): v for i, v in enumerate(message.params or [])})
            parts += ["ContentSid=" + quote_plus(message.template), "ContentVariables=" + quote_plus(variables)]
        else:
            parts.append("Body=" + quote_plus(message.body))
        callback = self._callback_part
        if callback:
            parts.append(callback + str(message.id) if self.receipts_url else callback)
        headers = self._send_headers.copy()
        headers[MESSAGE_ID_HEADER] = str(message.id)
        return HttpRequest("POST", self._messages_url, headers, "&".join(parts).encode())

    def list_request(self, *, to: str, sender: str | None, since: float, page: str | None = None) -> HttpRequest:
        if page:  # next_page_uri: a path with its query, as Twilio gives it
            return HttpRequest("GET", f"{self._base}{page}", self._headers())
        # DateSent>=: an RFC 3339 instant, as the spec's format says (Twilio also takes a bare date).
        start = datetime.fromtimestamp(int(since), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = {"To": to, **({"From": sender} if sender else {}), "DateSent>": start, "PageSize": "1000"}
        url = f"{self._base}/2010-04-01/Accounts/{quote(self.settings['account_sid'])}/Messages.json?{urlencode(query)}"
        return HttpRequest("GET", url, self._headers())

    def parse_list(self, body: bytes) -> tuple[list[Listed], str | None]:
        data = json.loads(body)
        listed = []
        for m in data.get("messages") or []:
            when = email.utils.parsedate_to_datetime(m.get("date_created") or m.get("date_sent"))
            listed.append(Listed(sid=m["sid"], to=m.get("to") or "", sender=m.get("from"), body=m.get("body") or "",
                                 created_at=when.timestamp(), status=m.get("status") or ""))
        return listed, data.get("next_page_uri") or None

    def check_request(self) -> HttpRequest:
        url = f"{self._base}/2010-04-01/Accounts/{quote(self.settings['account_sid'])}.json"
        return HttpRequest("GET", url, self._headers())

    def classify(self, status: int, headers: dict, body: bytes) -> Outcome:
        if 200 <= status < 300:
            # The message's sid, without decoding the whole resource (a run reads thousands a second).
            found = _SID.search(body)
            return Outcome(ACCEPTED, provider_id=found.group(1).decode() if found else str(json_body(body).get("sid") or ""))
        data = json_body(body)
        return by_code(CODES, data.get("code"), status, headers, data.get("message"))
