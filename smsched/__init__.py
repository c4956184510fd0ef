"""smsched: schedule SMS and WhatsApp campaigns for many accounts and send each message once, on time."""

__version__ = "0.1.0"
