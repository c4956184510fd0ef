"""Secrets never print: how a URL or a secret setting is shown to people, one rule for every place
(`config show`, error lines, `--json`, the receipts banner, database URLs)."""

from __future__ import annotations

import re

HIDDEN = "********"


def url(text: str) -> str:
    """A URL with its secrets hidden: the password of ``user:password@`` (the user name stays: it
    says which account), a whole userinfo without ``:`` (``https://TOKEN@host`` is a token), and
    every query value (``?token=``, PostgreSQL's ``?password=``)."""
    text = re.sub(r"(://[^/@:\s]*):[^/@\s]*@", rf"\1:{HIDDEN}@", text)
    text = re.sub(r"(://)[^/@:\s]+@", rf"\1{HIDDEN}@", text)
    return re.sub(r"([?&][^=&#\s]+=)[^&#\s]*", rf"\1{HIDDEN}", text)


def setting(value: str) -> str:
    """A secret setting as people may see it: that it is set, never any of it."""
    return f"{HIDDEN} (set)" if value else ""
