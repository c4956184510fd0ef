"""PostgreSQL as a new user meets it: the same answers as SQLite, dispatchers on several processes
and hosts sharing the work, a killed host's work recovered, an SQLite database moved over.

Every test here runs against a real server the tests start (tests/pg_server.py), whichever
backend the rest of the suite uses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from smsched import queue, storage
from smsched.errors import DatabaseError, NotSmschedDatabase
from tests.conftest import NOW, Cli, subprocess_env
from tests.dispatch_helpers import phones, rows, seed_users, states

AT = "2026-11-25 10:00"
DUE = "2026-11-25T13:00:00Z"


def accepted_ids(sandbox) -> Counter:
    return Counter(int(m["smsched_id"]) for m in sandbox.accepted())


# ---- the same steps, the same answers -----------------------------------------------------

def _script(cli: Cli, tmp_path: Path) -> dict:
    """A new user's first hour, through the CLI; what each reading command answers."""
    answers = {}
    cli("users", "add", "padaria")
    cli("users", "add", "loja", "--tz", "America/New_York", "--region", "US", "--quiet-hours", "08:00-21:00")
    leads = tmp_path / "leads.csv"
    leads.write_text("nome;telefone;cidade\nAna;(11) 98765-4321;São Paulo\nBia;11 91234-5678;Campinas\n"
                     "Caio;(81) 98888-7777;Recife\nsem número;;x\nErrado;123;y\nLoja;(11) 3234-5678;SP\n", encoding="utf-8")
    answers["import"] = cli.json("leads", "import", "padaria", leads)
    us = tmp_path / "us.csv"
    us.write_text("name,phone\nJoe,(212) 555-0100\nAmy,+1 650 253 0000\n", encoding="utf-8")
    cli.json("leads", "import", "loja", us)
    cli("optout", "add", "+5511912345678", "--reason", "asked")
    answers["create"] = cli.json("campaigns", "create", "padaria", "--message", "Oi {name}, pão quente em {cidade|sua cidade}!",
                                 "--at", AT, "--now", f"@{NOW}")
    cli.json("campaigns", "create", "loja", "--message", "Hi {name}", "--at", "2026-11-25 08:30", "--now", f"@{NOW}",
             "--priority", "urgent")
    cli("campaigns", "pause", "2")
    answers["users"] = cli.json("users", "list")
    answers["leads"] = cli.json("leads", "list", "padaria")
    answers["optouts"] = cli.json("optout", "list")
    answers["campaigns"] = cli.json("campaigns", "list")
    answers["show"] = cli.json("campaigns", "show", "1", "--now", f"@{NOW}")
    answers["preview"] = cli.json("campaigns", "preview", "1")
    answers["messages"] = cli.json("messages", "list")
    answers["stats"] = cli.json("stats", "--now", DUE)
    check = cli("check", "--now", DUE, code=None)
    answers["check"] = (check.exit_code, check.stdout.split(" | ")[0])
    answers["plan"] = cli.json("plan", "--date", "2026-11-25", "--tz", "UTC", "--rate", "10", "--now", DUE)
    return answers


_WALL_CLOCK_KEYS = {"created_at", "updated_at", "started_at"}


def _without_wall_clock(value):
    if isinstance(value, dict):
        return {k: _without_wall_clock(v) for k, v in value.items() if k not in _WALL_CLOCK_KEYS}
    if isinstance(value, list):
        return [_without_wall_clock(v) for v in value]
    return value


def test_the_same_steps_give_the_same_answers_on_both_backends(pg_url, tmp_path):
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "pg").mkdir()
    on_sqlite = _script(Cli(tmp_path / "sqlite" / "s.db"), tmp_path / "sqlite")
    on_postgres = _script(Cli(pg_url), tmp_path / "pg")
    for key in on_sqlite:
        expected, got = _without_wall_clock(on_sqlite[key]), _without_wall_clock(on_postgres[key])
        if key == "import":
            expected.pop("file"), got.pop("file")
        assert got == expected, key
    assert on_postgres["check"][0] == 2  # due, and dispatch never ran: the same verdict on both


def test_exit_codes_and_errors_agree(pg_url, tmp_path):
    for target in (tmp_path / "s.db", pg_url):
        cli = Cli(target)
        cli("users", "add", "u")
        assert "already exists" in cli("users", "add", "u", code=2).stderr
        assert "no campaign 7" in cli("campaigns", "show", "7", code=2).stderr
        assert "no user 'x'" in cli("leads", "list", "x", code=2).stderr


# ---- what the server says about itself -----------------------------------------------------

def test_a_newer_schema_is_refused(pg_url):
    db = storage.connect(pg_url)
    db.conn.execute("INSERT INTO smsched_schema (step, name, applied_at) VALUES (99, '0099_future', 0)")
    db.conn.close()
    with pytest.raises(DatabaseError, match="newer smsched"):
        storage.connect(pg_url)


def test_someone_elses_database_is_refused_and_left_alone(pg_server):
    import psycopg

    url = pg_server.create_database("foreign")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    with pytest.raises(NotSmschedDatabase, match="not an smsched database"):
        storage.connect(url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('smsched_schema')").fetchone()[0] is None


def test_a_command_that_only_reads_does_not_create_the_schema(pg_server):
    url = pg_server.create_database("empty")
    result = Cli(url)("check", code=3)
    assert result.exit_code == 3 and "no smsched schema" in result.stdout
    assert Cli(url)("users", "list", code=1).stderr.startswith("error: ")


def test_a_password_in_the_url_is_never_shown(pg_server, tmp_path):
    url = f"postgresql://postgres:S3cretPass@127.0.0.1:{pg_server.port + 1}/nowhere"  # nothing listens there
    result = Cli(url)("users", "list", code=1)
    assert "S3cretPass" not in result.output and "postgres:********@" in result.stderr
    # libpq also takes the password as a query parameter
    result = Cli(f"postgresql://postgres@127.0.0.1:{pg_server.port + 1}/nowhere?password=S3cretPass")("users", "list", code=1)
    assert "S3cretPass" not in result.output and "?password=********" in result.stderr


# ---- many dispatchers ------------------------------------------------------------------------

def test_a_killed_dispatchers_claims_are_orphans_at_once_and_live_ones_are_not(pg_url, tmp_path):
    seed_users(pg_url, tmp_path, [5], at=AT, now=NOW)
    db = storage.connect(pg_url)
    alive = db.dialect.run_lock(db, "alive")
    alive.try_exclusive()
    mine = queue.claim_due(db, now=NOW + 3600, limit=2, owner="alive", lease_until=9e12)
    theirs = queue.claim_due(db, now=NOW + 3600, limit=2, owner="killed", lease_until=9e12)  # its session is gone
    assert db.dialect.live_dispatchers(db) == 1
    assert queue.recover(db, before=db.dialect.wall(db), now=NOW)["claimed_to_scheduled"] == 2
    state = dict(db.conn.execute("SELECT id, state FROM messages").fetchall())
    assert [state[m.id] for m in mine + theirs] == ["claimed", "claimed", "scheduled", "scheduled"]
    alive.release()
    assert db.dialect.live_dispatchers(db) == 0


def test_leases_are_read_on_the_servers_clock(pg_url, monkeypatch):
    db = storage.connect(pg_url)
    server_now = db.conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this host's clock is an hour fast
    assert abs(db.dialect.wall(db) - server_now) < 5


def test_each_dispatcher_keeps_to_its_share_of_a_providers_rate():
    from smsched.ratelimit import RateLimiter

    limiter = RateLimiter(90, clock=lambda: 0.0, sleep=lambda s: None)
    limiter.share(3)
    assert limiter.rate == 30 and limiter.effective == 30
    limiter.share(1)
    assert limiter.rate == 90 and limiter.effective == 30  # back up by the additive increase


@pytest.mark.slow
def test_three_dispatchers_with_no_flag_send_ten_thousand_messages_exactly_once(pg_url, tmp_path, sandbox, config_file):
    seed_users(pg_url, tmp_path, [2500] * 4, at=AT, now=NOW)
    config_file.write_text(config_file.read_text().replace("rate = 5000", "rate = 30000"))
    env = subprocess_env(pg_url, config_file)
    procs = [subprocess.Popen([sys.executable, "-m", "smsched", "dispatch", "--now", DUE, "--time-budget", "0",
                               "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        outputs.append(json.loads(out))
    sent = [o["sent"] for o in outputs]
    assert sum(sent) == 10_000 and all(n > 0 for n in sent), sent  # shared, and shared out
    assert states(pg_url) == {"sent": 10_000}
    counts = accepted_ids(sandbox)
    assert len(counts) == 10_000 and set(counts.values()) == {1}


# ---- hosts: one dispatcher in each of three network namespaces -------------------------------

def _netns_unavailable() -> str | None:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return "needs root and ip(8) to make network namespaces"
    probe = f"smsprobe{os.getpid() % 10000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot create a network namespace here ({made.stderr.decode().strip()})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class _Hosts:
    """A bridge with 10.231.<n>.1 and three namespaces at .11, .12, .13: no default route, removed at the end."""

    def __init__(self, count: int = 3):
        tag = os.getpid() % 10000
        self.net = 231
        self.bridge, self.namespaces, self.links = f"smsbr{tag}", [], []
        self.gateway = f"10.{self.net}.{tag % 250}.1"
        self.prefix = self.gateway.rsplit(".", 1)[0]
        self._ip("link", "add", self.bridge, "type", "bridge")
        self._ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        self._ip("link", "set", self.bridge, "up")
        for i in range(count):
            ns, host_end, ns_end = f"smsns{tag}-{i}", f"smsh{tag}{i}", f"smsn{tag}{i}"
            self._ip("netns", "add", ns)
            self.namespaces.append(ns)
            self._ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            self.links.append(host_end)
            self._ip("link", "set", ns_end, "netns", ns)
            self._ip("link", "set", host_end, "master", self.bridge)
            self._ip("link", "set", host_end, "up")
            self._ip("-n", ns, "addr", "add", f"{self.prefix}.{11 + i}/24", "dev", ns_end)
            self._ip("-n", ns, "link", "set", ns_end, "up")
            self._ip("-n", ns, "link", "set", "lo", "up")

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def remove(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@pytest.mark.slow
def test_one_dispatcher_on_each_of_three_hosts_sends_every_message_once(tmp_path):
    why = _netns_unavailable()
    if why:
        pytest.skip(f"SKIPPED LOUDLY: {why}")
    from smsched.config import write_example
    from smsched.sandbox import SandboxServer
    from tests.pg_server import Server, binaries

    if binaries() is None:
        pytest.skip("SKIPPED LOUDLY: PostgreSQL server binaries not found: apt-get install postgresql")
    hosts = _Hosts()
    server = sandbox = None
    try:
        server = Server(listen=f"127.0.0.1,{hosts.gateway}")
        server.create_database("shared")
        local_url, shared_url = server.url("shared", host="127.0.0.1"), server.url("shared", host=hosts.gateway)
        seed_users(local_url, tmp_path, [1000] * 3, at=AT, now=NOW)
        sandbox = SandboxServer(host=hosts.gateway, port=0).start()
        config = tmp_path / "smsched.toml"
        # 300/s for the provider, shared by the live dispatchers: ~10 s of work, so that all three
        # take part whatever the order they start in.
        write_example(config, base_url=sandbox.url, rate=300)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMSCHED_")}
        procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "smsched", "--db", shared_url,
                                   "dispatch", "--config", str(config), "--now", DUE, "--time-budget", "0", "--json"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for ns in hosts.namespaces]
        sent = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()
            sent.append(json.loads(out)["sent"])
        assert sum(sent) == 3000 and all(n > 0 for n in sent), sent
        assert rows(local_url, "SELECT state, count(*) FROM messages GROUP BY state") == [("sent", 3000)]
        counts = accepted_ids(sandbox)
        assert len(counts) == 3000 and set(counts.values()) == {1}
        # Each request came from a namespace's own address: three hosts, as far as the network can tell.
        assert {m["remote"] for m in sandbox.state.received()} == {f"{hosts.prefix}.{11 + i}" for i in range(3)}
    finally:
        if sandbox:
            sandbox.stop()
        if server:
            server.stop()
        hosts.remove()
    assert subprocess.run(["ip", "link", "show", hosts.bridge], capture_output=True).returncode != 0  # gone


# ---- moving an SQLite database over ------------------------------------------------------------

def test_migrate_to_copies_everything_and_verifies_it(pg_url, tmp_path, sandbox, config_file):
    source = tmp_path / "s.db"
    seed_users(source, tmp_path, [40, 10], at=AT, now=NOW)
    Cli(source, config_file)("dispatch", "--now", DUE, "--time-budget", "0")
    Cli(source)("optout", "add", "+5511900000001")
    import psycopg

    with psycopg.connect(str(pg_url), autocommit=True) as conn:  # the target starts empty
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    report = Cli(source).json("db", "migrate-to", pg_url)
    assert report["verified"] is True and report["tables"]["messages"] == 50 and report["tables"]["users"] == 2
    for command in (["users", "list"], ["campaigns", "list"], ["messages", "list"], ["stats", "--now", DUE]):
        assert _without_wall_clock(Cli(pg_url).json(*command)) == _without_wall_clock(Cli(source).json(*command))
    Cli(pg_url)("users", "add", "after")  # the ids go on from where SQLite left them
    assert Cli(pg_url).json("users", "list")[-1]["id"] == 3
    again = Cli(source)("db", "migrate-to", pg_url, code=2)
    assert "is not empty" in again.stderr
