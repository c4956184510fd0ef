"""`smsched demo`: the main job end to end on a throwaway SQLite file, against the sandbox.

It writes a realistic leads CSV (Excel on Windows: cp1252, ';', Brazilian spellings, a few bad
and duplicate rows), imports it, schedules an SMS and a WhatsApp campaign, and dispatches
them over real HTTP to a sandbox provider on 127.0.0.1, at a fixed instant (10:00 in Sao Paulo
today) so quiet hours never hide the result.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import contextlib
import time

from smsched import campaigns, clock, config, leads, optouts, storage, users
from smsched.dispatch import DispatchOptions, dispatch
from smsched.receipts import ReceiptsServer
from smsched.sandbox import SandboxServer

RECEIPTS_WAIT_S = 5.0

FIRST = ["Ana", "João", "Maria", "José", "Francisca", "Antônio", "Luíza", "Carlos", "Patrícia", "Sérgio", "Fátima", "Raimundo"]
LAST = ["Silva", "Santos", "Oliveira", "Souza", "Conceição", "Araújo", "Gonçalves", "Magalhães"]
CITIES = [("11", "São Paulo"), ("21", "Rio de Janeiro"), ("31", "Belo Horizonte"), ("92", "Manaus"), ("85", "Fortaleza")]


def sample_phone(rng: random.Random, index: int) -> str:
    ddd, _ = CITIES[index % len(CITIES)]
    number = f"9{rng.randint(1000, 9999)}{index % 10000:04d}"
    spellings = [
        f"({ddd}) {number[:5]}-{number[5:]}",
        f"+55 ({ddd}) {number[:5]}-{number[5:]}",
        f"0{ddd}{number}",
        f"{ddd}{number}",
        f"55 {ddd} {number[:5]} {number[5:]}",
    ]
    return spellings[index % len(spellings)]


def write_leads_csv(path: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    lines = ["Nome;Telefone Celular;Cidade;Observação"]
    for i in range(count):
        ddd, city = CITIES[i % len(CITIES)]
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        lines.append(f'{name};{sample_phone(rng, i)};{city};"cliente desde {2015 + i % 10}; prefere manhã"')
    lines.append("Sem Telefone;;Recife;")
    lines.append("Número Errado;1234-5678;Recife;")
    lines.append(lines[1])  # the same person twice, as exports often have
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))


def run(directory: Path, *, leads_count: int = 200, progress=None) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    db_path = directory / "demo.db"
    csv_path = directory / "leads.csv"
    toml_path = directory / "smsched.toml"
    write_leads_csv(csv_path, leads_count)
    zone = clock.zone("America/Sao_Paulo")
    today = datetime.now(zone).date()
    at = clock.localize(datetime(today.year, today.month, today.day, 10, 0), zone).timestamp()
    db = storage.connect(db_path)
    with contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(SandboxServer(port=0, callbacks=True))
        config.write_example(toml_path, base_url=sandbox.url)
        # The sandbox sends signed delivery receipts to a receiver, as a provider would.
        receiver = stack.enter_context(ReceiptsServer(storage.connect(db_path), config.load(toml_path), port=0,
                                                      log=lambda line: None))  # its own connection: another thread
        config.write_example(toml_path, base_url=sandbox.url, receipts_url=receiver.url)
        receiver.config = config.load(toml_path)
        sandbox.configure(whatsapp_webhook=f"{receiver.url}/whatsapp", app_secret=config.EXAMPLE_APP_SECRET)
        bakery = users.add(db, "padaria-do-joao", now=at)
        shop = users.add(db, "loja-da-maria", tz="America/Manaus", now=at)
        imported = leads.import_leads(db, bakery, str(csv_path), now=at)
        leads.import_leads(db, shop, str(csv_path), now=at)
        fourth = leads.list_leads(db, bakery, limit=4)[-1]["phone"]
        opted = optouts.add(db, [fourth], user=bakery, reason="respondeu SAIR", now=at)
        sms = campaigns.create(db, bakery, campaigns.CampaignSpec(
            at="now", name="pão quentinho", message="Olá {name}! Pão quentinho saindo agora em {cidade|sua cidade}. Responda SAIR para não receber.",
        ), now=at)
        whatsapp = campaigns.create(db, shop, campaigns.CampaignSpec(
            at="now", name="black friday", channel="whatsapp", template="promo_black_friday", lang="pt_BR",
            params=["nome", "cidade"], priority="urgent",
        ), now=at)
        summary = dispatch(db, str(db_path), config.load(toml_path), DispatchOptions(time_budget=0),
                           clock=clock.Clock(at + 1), progress=progress)
        received = sandbox.accepted()
        deadline = time.monotonic() + RECEIPTS_WAIT_S
        while time.monotonic() < deadline and _delivered(db) < len(received):
            time.sleep(0.05)  # the receipts arrive from the sandbox's own thread
        delivered = _delivered(db)
    return {
        "directory": str(directory),
        "database": str(db_path),
        "at": clock.iso_local(at, "America/Sao_Paulo"),
        "import": imported.as_dict(),
        "optout": opted,
        "campaigns": [sms, whatsapp],
        "dispatch": summary.as_dict(),
        "sandbox_received": len(received),
        "sandbox_sample": received[:3],
        "delivered": delivered,
    }


def _delivered(db) -> int:
    return db.conn.execute("SELECT count(*) FROM messages WHERE delivery IN ('delivered', 'read')").fetchone()[0]
