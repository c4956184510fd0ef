"""Providers: how a message leaves the machine, and what each answer means."""

from smsched.providers.base import (  # noqa: F401
    ACCEPTED, CONFIG, PERMANENT, RETRY, UNKNOWN, HttpRequest, OutMessage, Outcome, Provider,
)
from smsched.providers.twilio import Twilio
from smsched.providers.webhook import Webhook
from smsched.providers.whatsapp import WhatsApp

__all__ = ["ACCEPTED", "CONFIG", "PERMANENT", "RETRY", "UNKNOWN", "HttpRequest", "OutMessage", "Outcome",
           "Provider", "Twilio", "WhatsApp", "Webhook", "REGISTRY"]

REGISTRY: dict[str, type[Provider]] = {"twilio": Twilio, "whatsapp": WhatsApp, "webhook": Webhook}
