"""Meta WhatsApp Cloud API: JSON to /{version}/{phone-number-id}/messages, Bearer token."""

from __future__ import annotations

import json

from smsched.providers.base import (
    ACCEPTED, CONFIG, MESSAGE_ID_HEADER, PERMANENT, RETRY, UNKNOWN, Code, HttpRequest, OutMessage, Outcome, Provider,
    by_code, json_body,
)

# What the Graph API's error codes mean for a message
# (https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes).
CODES: dict[int, Code] = {
    130429: Code(RETRY, backoff=60.0, throttled=True),   # throughput limit reached: slow down
    80007: Code(RETRY, backoff=300.0, throttled=True),   # WhatsApp Business Account rate limit
    4: Code(RETRY, backoff=300.0, throttled=True),       # application request limit
    131056: Code(RETRY, backoff=60.0),   # too many messages to this pair of numbers (this recipient only)
    131026: Code(PERMANENT),             # undeliverable
    131047: Code(PERMANENT),             # more than 24 hours since the customer last replied
    131051: Code(PERMANENT),             # unsupported message type
    132000: Code(PERMANENT),             # template parameter count mismatch
    132001: Code(PERMANENT),             # template does not exist
    100: Code(PERMANENT),                # invalid parameter
    131050: Code(PERMANENT, opt_out=True),  # the person stopped marketing messages
    190: Code(CONFIG),                   # access token expired or invalid
    10: Code(CONFIG),                    # permission denied
    200: Code(CONFIG),                   # permission denied
    131031: Code(CONFIG),                # business account locked
    131000: Code(UNKNOWN),               # something went wrong
}
UNFIXABLE = (131026, 131051, 132000, 132001, 100, 131050)


class WhatsApp(Provider):
    name = "whatsapp"
    channels = ("whatsapp",)
    default_rate = 80.0
    text_settings = ("phone_number_id", "api_version")
    secret_settings = ("token", "app_secret")
    codes = CODES
    cannot_list = "the WhatsApp Cloud API offers no way to ask whether it has a message"

    def missing_settings(self) -> list[str]:
        return [k for k in ("token", "phone_number_id") if not self.settings.get(k)]

    @property
    def _base(self) -> str:
        base = self.settings.get("base_url", "https://graph.facebook.com").rstrip("/")
        return f"{base}/{self.settings.get('api_version', 'v23.0')}/{self.settings['phone_number_id']}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings['token']}", "Accept": "application/json"}

    def sender_for(self, message: OutMessage) -> str:
        return str(self.settings.get("phone_number_id", ""))

    def build(self, message: OutMessage) -> HttpRequest:
        payload: dict = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.phone.lstrip("+"),
        }
        if message.template:
            template: dict = {
                "name": message.template,
                "language": {"policy": "deterministic", "code": message.lang or "pt_BR"},
            }
            if message.params:
                template["components"] = [{
                    "type": "body",
                    "parameters": [{"type": "text", "text": value} for value in message.params],
                }]
            payload |= {"type": "template", "template": template}
        else:
            payload |= {"type": "text", "text": {"body": message.body, "preview_url": False}}
        headers = self._headers() | {"Content-Type": "application/json", MESSAGE_ID_HEADER: str(message.id)}
        return HttpRequest("POST", f"{self._base}/messages", headers,
                           json.dumps(payload, ensure_ascii=False).encode())

    def check_request(self) -> HttpRequest:
        return HttpRequest("GET", self._base, self._headers())

    def classify(self, status: int, headers: dict, body: bytes) -> Outcome:
        data = json_body(body)
        if 200 <= status < 300:
            messages = data.get("messages") or [{}]
            return Outcome(ACCEPTED, provider_id=str(messages[0].get("id") or ""))
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        return by_code(CODES, error.get("code"), status, headers, error.get("message") or error.get("error_user_msg"))
