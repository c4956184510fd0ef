"""Message templates: ``{field}``, ``{field|fallback}``, and ``{{``/``}}`` for literal braces.

Fields are a lead's columns under their normalised keys (``{cidade}``), plus ``{name}`` and
``{phone}`` (``{nome}`` and ``{telefone}`` are the same two, in Portuguese).
"""

from __future__ import annotations

from dataclasses import dataclass

from smsched.csvfiles import normalise_key
from smsched.errors import UsageError

ALIASES = {"name": "name", "nome": "name", "phone": "phone", "telefone": "phone"}


@dataclass(frozen=True)
class Placeholder:
    key: str
    fallback: str | None


@dataclass(frozen=True)
class Template:
    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> list[Placeholder]:
        return [p for p in self.parts if isinstance(p, Placeholder)]

    @property
    def is_static(self) -> bool:
        return not self.placeholders

    @property
    def needs_fields(self) -> bool:
        return any(p.key not in ALIASES for p in self.placeholders)

    def render(self, name: str | None, phone: str, fields: dict) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            alias = ALIASES.get(part.key)
            value = (name if alias == "name" else phone) if alias else fields.get(part.key)
            out.append(value if value else (part.fallback or ""))
        return "".join(out)


def compile_template(text: str) -> Template:
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif char == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif char == "{":
            end = text.find("}", i)
            if end == -1:
                raise UsageError(
                    f"unclosed '{{' at character {i + 1} of the message; write {{{{ for a literal brace"
                )
            inner = text[i + 1 : end]
            name, _, fallback = inner.partition("|")
            key = normalise_key(name)
            if not key:
                raise UsageError(f"empty placeholder {{{inner}}} at character {i + 1}; write {{{{ for a literal brace")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Placeholder(key, fallback if "|" in inner else None))
            i = end + 1
        elif char == "}":
            raise UsageError(f"stray '}}' at character {i + 1} of the message; write }}}} for a literal brace")
        else:
            literal.append(char)
            i += 1
    if literal:
        parts.append("".join(literal))
    return Template(tuple(parts))
