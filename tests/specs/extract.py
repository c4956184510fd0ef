"""Cut the parts of the providers' official OpenAPI documents that the contract tests need.

    python tests/specs/extract.py ../shared/specs

Keeps the named paths, every component they reference (transitively), the security schemes
and the document's info; writes them beside this script. The operations are kept unchanged, so
a request validates against the cut exactly as against the whole document.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CUTS = {
    "twilio_api_v2010.yaml": ("twilio_messages_v2010.yaml", ["/2010-04-01/Accounts/{AccountSid}/Messages.json"]),
    "whatsapp-business-messaging-api_v23.0.yaml": ("whatsapp_messages_v23.0.yaml",
                                                   ["/{Version}/{Phone-Number-ID}/messages"]),
}


def refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/"):
                found.add(value)
            else:
                refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)


def resolve(spec: dict, pointer: str):
    node = spec
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def cut(spec: dict, paths: list[str]) -> dict:
    out = {key: spec[key] for key in ("openapi", "info", "servers", "security", "tags") if key in spec}
    out["paths"] = {path: spec["paths"][path] for path in paths}
    pending, done = set(), set()
    refs(out["paths"], pending)
    components: dict = {}
    if "securitySchemes" in spec.get("components", {}):
        components["securitySchemes"] = spec["components"]["securitySchemes"]
    while pending:
        pointer = pending.pop()
        if pointer in done:
            continue
        done.add(pointer)
        node = resolve(spec, pointer)
        _, section, kind, name = pointer.split("/", 3)
        components.setdefault(kind, {})[name] = node
        refs(node, pending)
    out["components"] = components
    return out


def main(source_dir: str) -> None:
    for source, (target, paths) in CUTS.items():
        with open(Path(source_dir) / source, encoding="utf-8") as f:
            spec = yaml.load(f, Loader=yaml.CSafeLoader)
        text = yaml.dump(cut(spec, paths), Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True, width=120)
        header = f"# Cut from {source} by tests/specs/extract.py: see tests/specs/README.md (source, licence).\n"
        (HERE / target).write_text(header + text, encoding="utf-8")
        print(f"{target}: {len(text):,} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/specs")
