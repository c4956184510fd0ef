"""`smsched config check`: prove each routed provider's settings without sending a message."""

from __future__ import annotations

from smsched.config import Config
from smsched.http import MaybeSent, NotSent, Transport


def check(config: Config) -> list[dict]:
    transport = Transport(pool_size=2, connect_timeout=5, read_timeout=10, client="requests")
    results = []
    seen = set()
    for channel in ("sms", "whatsapp"):
        name = config.route(channel)
        if not name or name in seen:
            continue
        seen.add(name)
        provider = config.provider(name)
        missing = provider.missing_settings()
        if missing:
            results.append({"provider": name, "status": "error", "detail": f"missing {', '.join(missing)}"})
            continue
        request = provider.check_request()
        if request is None:
            results.append({"provider": name, "status": "unchecked",
                            "detail": "settings complete; this provider offers no way to check without sending"})
            continue
        try:
            response = transport.send(request)
        except (NotSent, MaybeSent) as exc:
            results.append({"provider": name, "status": "error", "detail": f"cannot reach it: {exc}"})
            continue
        if 200 <= response.status < 300:
            results.append({"provider": name, "status": "ok", "detail": f"credentials accepted (HTTP {response.status})"})
        elif response.status in (401, 403):
            results.append({"provider": name, "status": "error", "detail": f"credentials refused (HTTP {response.status})"})
        else:
            results.append({"provider": name, "status": "warning", "detail": f"unexpected answer HTTP {response.status}"})
    return results
