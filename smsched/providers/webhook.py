"""A generic JSON webhook: the way to reach any other gateway (Zenvia, Infobip, an in-house one).

Body: ``{id, to, body, channel, campaign, user, fields}``; header ``X-Smsched-Signature:
sha256=<hex HMAC-SHA256 of the body with the shared secret>`` when a secret is set.
2xx accepted (``id`` or ``message_id`` in the answer is kept); 429/503 retry; 401/403 stop the
run; other 4xx permanent; 5xx unknown. A JSON answer ``{"opt_out": true}`` marks an opt-out.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from smsched.providers.base import (
    ACCEPTED, MESSAGE_ID_HEADER, PERMANENT, HttpRequest, OutMessage, Outcome, Provider, by_status, json_body,
)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook(Provider):
    name = "webhook"
    channels = ("sms", "whatsapp")
    default_rate = 100.0
    url_settings = ("url",)
    secret_settings = ("secret",)
    needs_lead_fields = True  # the body carries the lead's fields
    cannot_list = "a generic webhook offers no way to ask whether it has a message"

    def missing_settings(self) -> list[str]:
        return [] if self.settings.get("url") else ["url"]

    def build(self, message: OutMessage) -> HttpRequest:
        payload = {
            "id": message.id,
            "to": message.phone,
            "body": message.body,
            "channel": message.channel,
            "campaign": message.campaign_id,
            "user": message.user,
            "fields": dict(message.fields),
        }
        if message.template:
            payload["template"] = {"name": message.template, "lang": message.lang, "params": message.params or []}
        if message.sender:
            payload["from"] = message.sender
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json", MESSAGE_ID_HEADER: str(message.id)}
        if self.settings.get("secret"):
            headers["X-Smsched-Signature"] = signature(self.settings["secret"], body)
        return HttpRequest("POST", self.settings["url"], headers, body)

    def classify(self, status: int, headers: dict, body: bytes) -> Outcome:
        data = json_body(body)
        if 200 <= status < 300:
            return Outcome(ACCEPTED, provider_id=str(data.get("id") or data.get("message_id") or "") or None)
        reason = data.get("error") or data.get("message")
        reason = reason if isinstance(reason, str) else None
        if 400 <= status < 500 and status not in (401, 403, 408, 429) and data.get("opt_out"):
            return Outcome(PERMANENT, code=str(data.get("code") or status), reason=reason or "opted out", opt_out=True)
        return by_status(status, headers, reason, str(data["code"]) if data.get("code") else None)
