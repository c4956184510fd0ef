"""Shared fixtures: a database file under tmp_path, the CLI, and a real sandbox on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smsched import storage
from smsched.cli import app
from smsched.config import write_example
from smsched.sandbox import SandboxServer

# A fixed instant for everything scheduled in tests: Wednesday 2026-11-25 12:00 UTC (09:00 in Sao Paulo).
NOW = 1795608000
ENV_VARS = ("SMSCHED_DB", "SMSCHED_CONFIG", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM",
            "TWILIO_MESSAGING_SERVICE_SID", "WHATSAPP_TOKEN", "WHATSAPP_PHONE_NUMBER_ID",
            "SMSCHED_WEBHOOK_URL", "SMSCHED_WEBHOOK_SECRET", "WHATSAPP_APP_SECRET", "SMSCHED_RECEIPTS_VERIFY_TOKEN",
            "SMSCHED_RECEIPTS_PUBLIC_URL")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # nothing a test does lands in the working tree


# The backend the suite runs on: SQLite (the default), or PostgreSQL with
# SMSCHED_TEST_BACKEND=postgresql (a throwaway server the tests start; see tests/pg_server.py).
BACKEND = os.environ.get("SMSCHED_TEST_BACKEND", "sqlite")


class PgTarget(str):
    """A test's PostgreSQL database, where a test expects a database path."""

    def exists(self) -> bool:
        return True


def pytest_collection_modifyitems(config, items):
    if BACKEND != "postgresql":
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker:
            reason = marker.args[0] if marker.args else "SQLite file behaviour"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for the session (skipped, saying why, when it cannot start)."""
    from tests import pg_server as pg

    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("SKIPPED LOUDLY: psycopg is not installed: pip install '.[test,postgres]'")
    if pg.binaries() is None:
        pytest.skip("SKIPPED LOUDLY: PostgreSQL server binaries not found: apt-get install postgresql")
    server = pg.Server()
    template = server.create_database("smsched_template")
    storage.connect(template).conn.close()  # migrated once; every test's database is a copy
    yield server
    server.stop()


_databases = iter(range(1, 10**9))


@pytest.fixture
def pg_url(pg_server):
    """A fresh, migrated PostgreSQL database for one test."""
    import psycopg

    name = f"t{next(_databases)}"
    url = PgTarget(pg_server.create_database(name, template="smsched_template"))
    yield url
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_path(tmp_path, request) -> Path:
    if BACKEND == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "smsched.db"


@pytest.fixture
def db(db_path):
    database = storage.connect(db_path)
    yield database
    database.conn.close()


class Cli:
    """Runs `smsched ...` in-process against one database file."""

    def __init__(self, db_path: Path, config: Path | None = None):
        self.db_path, self.config = db_path, config
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int | None = 0, stdin: str | bytes | None = None):
        argv = [str(a) for a in args]
        env = {"SMSCHED_DB": str(self.db_path)}
        if self.config:
            env["SMSCHED_CONFIG"] = str(self.config)
        result = self.runner.invoke(app, argv, env=env, input=stdin, catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
        return result

    def json(self, *args: str, code: int | None = 0, stdin: str | bytes | None = None):
        result = self(*args, "--json", code=code, stdin=stdin)
        return json.loads(result.stdout)


@pytest.fixture
def cli(db_path) -> Cli:
    return Cli(db_path)


@pytest.fixture
def sandbox():
    server = SandboxServer(port=0).start()
    yield server
    server.stop()


@pytest.fixture
def config_file(tmp_path, sandbox) -> Path:
    path = tmp_path / "smsched.toml"
    write_example(path, base_url=sandbox.url, rate=5000)
    return path


@pytest.fixture
def sending_cli(db_path, config_file) -> Cli:
    return Cli(db_path, config_file)


def write_csv(path: Path, rows: list[list[str]], *, delimiter: str = ",", encoding: str = "utf-8", newline: str = "\n") -> Path:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator=newline).writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def add_leads(cli: Cli, tmp_path: Path, user: str, phones: list[str], *, name_prefix: str = "Lead", extra=None) -> None:
    header = ["nome", "telefone", "cidade"]
    rows = [header] + [[f"{name_prefix} {i}", phone, (extra or {}).get(phone, "Campinas")] for i, phone in enumerate(phones)]
    path = write_csv(tmp_path / f"{user}-leads.csv", rows)
    cli("leads", "import", user, path)


def br_mobiles(count: int, start: int = 0, ddd: str = "11") -> list[str]:
    return [f"+55{ddd}9{(start + i) // 10000 % 10000:04d}{(start + i) % 10000:04d}" for i in range(count)]


def python() -> str:
    return sys.executable


def smsched_command() -> list[str]:
    return [sys.executable, "-m", "smsched"]


def subprocess_env(db_path: Path, config: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["SMSCHED_DB"] = str(db_path)
    if config:
        env["SMSCHED_CONFIG"] = str(config)
    return env
