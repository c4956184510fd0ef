"""Configuration: ``smsched.toml`` (``--config`` / ``SMSCHED_CONFIG``, else ./smsched.toml if it
exists), with secrets from the environment taking precedence. Nothing here ever prints a secret:
``masked()`` is the only view meant for people.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path

from smsched import clock
from smsched.errors import ConfigError, UsageError
from smsched.providers import REGISTRY, Provider

DEFAULT_PATH = "smsched.toml"

DEFAULTS: dict = {
    "channels": {"sms": "twilio", "whatsapp": "whatsapp"},
    "dispatch": {
        "workers": 32,
        "batch": 1000,
        "max_attempts": 5,
        "retry_base": "30s",
        "retry_cap": "1h",
        # "unknown": an ambiguous answer is never resent (at-most-once); "retry": at-least-once.
        "ambiguous": "unknown",
        "breaker_threshold": 20,
        "breaker_cooldown": "5s",
        "connect_timeout": "3s",
        "read_timeout": "10s",
        "lease": "5m",
        "http_client": "urllib3",
        # Keep the sending process on one core: GIL hand-offs between cores cost ~40% here.
        "pin_cpu": True,
        "time_budget": "55s",
        # Ask providers that can tell (Twilio) about 'unknown' messages at the start of each run.
        "reconcile": True,
    },
    # Delivery receipts: `smsched receipts serve`. public_url is where providers reach it.
    "receipts": {"host": "127.0.0.1", "port": 8788},
    "providers": {
        "twilio": {"base_url": "https://api.twilio.com", "rate": 10},
        "whatsapp": {"base_url": "https://graph.facebook.com", "api_version": "v23.0", "rate": 80},
        "webhook": {"rate": 100},
    },
}

ENVIRONMENT = {
    ("twilio", "account_sid"): "TWILIO_ACCOUNT_SID",
    ("twilio", "auth_token"): "TWILIO_AUTH_TOKEN",
    ("twilio", "from"): "TWILIO_FROM",
    ("twilio", "messaging_service_sid"): "TWILIO_MESSAGING_SERVICE_SID",
    ("whatsapp", "token"): "WHATSAPP_TOKEN",
    ("whatsapp", "phone_number_id"): "WHATSAPP_PHONE_NUMBER_ID",
    ("webhook", "url"): "SMSCHED_WEBHOOK_URL",
    ("webhook", "secret"): "SMSCHED_WEBHOOK_SECRET",
    ("whatsapp", "app_secret"): "WHATSAPP_APP_SECRET",
}
RECEIPTS_ENVIRONMENT = {"verify_token": "SMSCHED_RECEIPTS_VERIFY_TOKEN", "public_url": "SMSCHED_RECEIPTS_PUBLIC_URL"}
SECRET_KEYS = {"auth_token", "token", "secret", "password", "api_key", "app_secret", "verify_token"}


class Config:
    def __init__(self, data: dict, source: str | None):
        self.data, self.source = data, source
        for channel, provider in data["channels"].items():
            if provider not in REGISTRY:
                raise ConfigError(
                    f"[channels] {channel} = {provider!r}: unknown provider; use one of {', '.join(REGISTRY)}"
                )
        for name, settings in data["providers"].items():
            for key in ("rate", "burst", "sender_rate"):
                if key in settings and not (isinstance(settings[key], (int, float)) and settings[key] > 0):
                    raise ConfigError(f"[providers.{name}] {key} must be a positive number, not {settings[key]!r}")
            for key in REGISTRY[name].url_settings if name in REGISTRY else ():
                if settings.get(key) is not None:
                    check_url(settings[key], f"[providers.{name}] {key}", query=key == "url")
        if data.get("receipts", {}).get("public_url"):
            check_url(data["receipts"]["public_url"], "[receipts] public_url")
        d = data["dispatch"]
        if d["ambiguous"] not in ("unknown", "retry"):
            raise ConfigError(f"[dispatch] ambiguous = {d['ambiguous']!r}: use \"unknown\" or \"retry\"")
        if d["http_client"] not in ("urllib3", "requests"):
            raise ConfigError(f"[dispatch] http_client = {d['http_client']!r}: use \"urllib3\" or \"requests\"")

    def route(self, channel: str) -> str:
        return self.data["channels"].get(channel, "")

    def provider(self, name: str) -> Provider:
        if name not in REGISTRY:
            raise UsageError(f"unknown provider {name!r}: use one of {', '.join(REGISTRY)}")
        return REGISTRY[name](self.data["providers"].get(name, {}), receipts_url=self.receipts("public_url"))

    def receipts(self, key: str):
        return self.data.get("receipts", {}).get(key)

    def seconds(self, key: str) -> float:
        return clock.parse_duration(str(self.data["dispatch"][key]), what=f"[dispatch] {key}")

    def dispatch(self, key: str):
        return self.data["dispatch"][key]

    def masked(self) -> dict:
        view = copy.deepcopy(self.data)
        for settings in [*view["providers"].values(), view.get("receipts", {})]:
            for key, value in list(settings.items()):
                if key in SECRET_KEYS and value:
                    settings[key] = mask(str(value))
        view["source"] = self.source
        return view


_URL = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?(/[^\s?#]*)?"
                  r"(\?[^\s#]*)?$")


def check_url(value, key: str, *, query: bool = False) -> str:
    """A provider address must be http(s)://host[:port][/path] (a webhook may add ?query);
    anything else is a configuration error."""
    text = value if isinstance(value, str) else ""
    match = _URL.match(text)
    if match and match.group(4) and not query:
        match = None
    if not match or (match.group(2) and not 0 < int(match.group(2)[1:]) < 65536):
        shown = mask_url(text) if text else repr(value)
        raise ConfigError(f"{key} = {shown!r} is not an http(s)://host[:port][/path] address; fix it in the configuration")
    return text


def mask_url(text: str) -> str:
    """A URL as people may see it: credentials and query values hidden."""
    text = re.sub(r"(://)[^/@\s]*@", r"\1********@", text)
    return re.sub(r"([?&][^=&#\s]+=)[^&#\s]*", r"\1********", text)


def mask(value: str) -> str:
    """A secret as people may see it: that it is set, never any of it."""
    return "******** (set)" if value else ""


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def load(path: str | os.PathLike | None = None) -> Config:
    explicit = path or os.environ.get("SMSCHED_CONFIG")
    candidate = Path(explicit) if explicit else Path(DEFAULT_PATH)
    data = copy.deepcopy(DEFAULTS)
    source = None
    if candidate.exists():
        try:
            with open(candidate, "rb") as f:
                _merge(data, tomllib.load(f))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{candidate}: {exc}; fix the TOML syntax") from None
        except OSError as exc:
            raise ConfigError(f"{candidate}: cannot read it ({exc.strerror})") from None
        source = str(candidate)
    elif explicit:
        raise ConfigError(f"{candidate}: no such configuration file (from --config or SMSCHED_CONFIG)")
    for (provider, key), variable in ENVIRONMENT.items():
        value = os.environ.get(variable)
        if value:
            data["providers"].setdefault(provider, {})[key] = value
    for key, variable in RECEIPTS_ENVIRONMENT.items():
        value = os.environ.get(variable)
        if value:
            data["receipts"][key] = value
    return Config(data, source)


EXAMPLE_APP_SECRET = "sandbox-app-secret-not-a-secret"


def write_example(path: str | os.PathLike, *, base_url: str, rate: float = 2000, receipts_url: str | None = None) -> None:
    """A working smsched.toml whose providers all point at a sandbox (the demo's)."""
    text = f"""# smsched configuration (written by `smsched demo`): every provider points at the sandbox.
[channels]
sms = "twilio"
whatsapp = "whatsapp"

[dispatch]
workers = 32

[providers.twilio]
account_sid = "AC00000000000000000000000000000000"
auth_token = "sandbox-token-not-a-secret"
from = "+15005550006"
base_url = "{base_url}"
rate = {rate}

[providers.whatsapp]
token = "sandbox-token-not-a-secret"
phone_number_id = "100000000000001"
api_version = "v23.0"
app_secret = "{EXAMPLE_APP_SECRET}"
base_url = "{base_url}"
rate = {rate}

[providers.webhook]
url = "{base_url}/webhook"
secret = "sandbox-webhook-secret"
rate = {rate}
"""
    if receipts_url:
        text += f"""
[receipts]
public_url = "{receipts_url}"
"""
    Path(path).write_text(text, encoding="utf-8")
