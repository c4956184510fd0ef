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

from smsched import clock, redact
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
        validate(data)

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
        urls = {key for cls in REGISTRY.values() for key in cls.url_settings} | {"public_url"}
        for settings in [*view["providers"].values(), view.get("receipts", {})]:
            for key, value in list(settings.items()):
                if key in SECRET_KEYS and value:
                    settings[key] = redact.setting(str(value))
                elif key in urls and isinstance(value, str):
                    settings[key] = redact.url(value)  # http://user:SECRET@host, ?token=SECRET
        view["source"] = self.source
        return view


_URL = re.compile(r"^https?://(?:[^/@\s?#]+@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?(/[^\s?#]*)?"
                  r"(\?[^\s#]*)?$")


def check_url(value, key: str, *, query: bool = False, hint: str = "fix it in the configuration") -> str:
    """A provider address must be http(s)://host[:port][/path] (a webhook may add ?query);
    anything else is a configuration error."""
    text = value if isinstance(value, str) else ""
    match = _URL.match(text)
    if match and match.group(4) and not query:
        match = None
    if not match or (match.group(2) and not 0 < int(match.group(2)[1:]) < 65536):
        shown = redact.url(text) if text else repr(value)
        raise ConfigError(f"{key} = {shown!r} is not an http(s)://host[:port][/path] address; {hint}")
    return text


# ---- what each key may hold: one home for the configuration's types ------------------------

def _whole(low: int, high: int):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number from {low} to {high:,} (it is {_kind(value)})"
        if not low <= value <= high:
            return f"must be a whole number from {low} to {high:,}"
    return check


def _positive(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number above 0 (it is {_kind(value)})"
    if not (value > 0 and value < float("inf")):
        return "must be a finite number above 0"


def _boolean(value):
    if not isinstance(value, bool):
        return f"must be true or false (it is {_kind(value)})"


def _duration(value):
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"must be a duration such as \"30s\" or \"5m\" (it is {_kind(value)})"
    try:
        seconds = clock.parse_duration(str(value))
    except UsageError:
        return "must be a duration such as \"30s\", \"5m\" or \"1h\" (at most 100 years)"
    if seconds <= 0:
        return "must be a duration above 0, such as \"30s\""


def _one_of(*choices):
    def check(value):
        if value not in choices:
            return "must be " + " or ".join(f'"{c}"' for c in choices)
    return check


def _text(value):
    if not isinstance(value, str):
        return f"must be a string in quotes (it is {_kind(value)})"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "must not hold control characters (line breaks, escapes)"


def _url(query: bool):
    def check(value):
        if not isinstance(value, str) or not _URL.match(value) or (_URL.match(value).group(4) and not query):
            return "must be an http(s)://host[:port][/path] address" + (" (a ?query is allowed)" if query else "")
        port = _URL.match(value).group(2)
        if port and not 0 < int(port[1:]) < 65536:
            return "has a port outside 1-65535"
    return check


def _kind(value) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


SCHEMA: dict[str, dict] = {
    "dispatch": {
        "workers": _whole(1, 1024), "batch": _whole(1, 100_000), "max_attempts": _whole(1, 100),
        "retry_base": _duration, "retry_cap": _duration, "ambiguous": _one_of("unknown", "retry"),
        "breaker_threshold": _whole(1, 1_000_000), "breaker_cooldown": _duration,
        "connect_timeout": _duration, "read_timeout": _duration, "lease": _duration,
        "http_client": _one_of("urllib3", "requests"), "pin_cpu": _boolean, "time_budget": _duration,
        "reconcile": _boolean,
    },
    "receipts": {"host": _text, "port": _whole(0, 65535), "public_url": _url(False), "verify_token": _text},
}
PROVIDER_NUMBERS = {"rate": _positive, "burst": _whole(1, 1_000_000), "sender_rate": _positive}
SECRET_KEYS |= {key for cls in REGISTRY.values() for key in cls.secret_settings}


def provider_schema(name: str) -> dict:
    cls = REGISTRY[name]
    keys = dict(PROVIDER_NUMBERS)
    keys.update({key: _url(query=key == "url") for key in cls.url_settings})
    keys.update({key: _text for key in (*cls.text_settings, *cls.secret_settings)})
    return keys


def validate(data: dict) -> None:
    """Every section a table, every key known and of its type; the first problem is an error
    that names the key (and the nearest valid one) but never repeats the value: a secret typed
    into the wrong key must not end up in a cron mail."""
    _keys(data, ("channels", "dispatch", "receipts", "providers"), "the configuration", "section")
    for section in ("channels", "dispatch", "receipts", "providers"):
        if not isinstance(data.get(section), dict):
            raise ConfigError(f"{section} must be a table, e.g. [{section}] on a line of its own followed by "
                              f"its keys (it is {_kind(data.get(section))})")
    channels = data["channels"]
    _keys(channels, ("sms", "whatsapp"), "[channels]")
    for channel, provider in channels.items():
        if provider not in REGISTRY:
            raise ConfigError(f"[channels] {channel} must name a provider: {', '.join(REGISTRY)}")
        if channel not in REGISTRY[provider].channels:
            raise ConfigError(f"[channels] {channel} = \"{provider}\": {provider} cannot carry {channel}; "
                              f"use one of {', '.join(n for n, c in REGISTRY.items() if channel in c.channels)}")
    for section, keys in SCHEMA.items():
        _check_table(data[section], keys, f"[{section}]")
    _keys(data["providers"], tuple(REGISTRY), "[providers]", "provider")
    for name, settings in data["providers"].items():
        if not isinstance(settings, dict):
            raise ConfigError(f"[providers.{name}] must be a table (it is {_kind(settings)})")
        _check_table(settings, provider_schema(name), f"[providers.{name}]")


def _check_table(table: dict, keys: dict, where: str) -> None:
    _keys(table, tuple(keys), where)
    for key, value in table.items():
        problem = keys[key](value)
        if problem:
            raise ConfigError(f"{where} {key} {problem}; fix it in the configuration")


def _keys(table: dict, known: tuple, where: str, what: str = "key") -> None:
    import difflib

    for key in table:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}?" if near else f"valid: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown {what} {_printable(key)!r}; {hint}")


def _printable(text) -> str:
    return "".join(c if c.isprintable() else "?" for c in str(text))[:60]


def to_toml(view: dict) -> str:
    """A configuration as TOML that --config reads back (booleans lowercase, strings quoted)."""
    lines: list[str] = []

    def table(name: str, values: dict) -> None:
        plain = {k: v for k, v in values.items() if not isinstance(v, dict)}
        if plain or not values:
            lines.extend(["", f"[{name}]"] if lines else [f"[{name}]"])
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in plain.items())
        for key, value in values.items():
            if isinstance(value, dict):
                table(f"{name}.{_toml_key(key)}", value)

    for section, values in view.items():
        table(_toml_key(section), values)
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value) -> str:
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A TOML basic string: JSON's escapes are TOML's (backslash, quote, newline, tab, and \u with four
    # hex digits); json.dumps never writes JSON's escaped slash.
    return json.dumps(str(value), ensure_ascii=False)


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
        except UnicodeDecodeError:
            raise ConfigError(f"{candidate}: not a TOML file (not UTF-8 text); give smsched.toml to --config") from None
        except OSError as exc:
            raise ConfigError(f"{candidate}: cannot read it ({exc.strerror or exc})") from None
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
