"""Bad and hostile input, across every command: the documented exit code, one line that says what
was wrong, no traceback, and the database file byte for byte as it was."""

from __future__ import annotations

import gc
import hashlib
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smsched.cli import app
from tests.conftest import NOW, add_leads, write_csv

HUGE = "99999999999999999999999"
NOW_ARG = f"@{NOW}"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A database with a user, two leads and a campaign; files a careless or hostile user gives."""
    folder = tmp_path_factory.mktemp("hostile")
    db = folder / "base.db"
    cli = _Runner(db, folder)
    cli("users", "add", "u")
    cli("users", "add", "empty")
    add_leads_at(cli, folder)
    cli("campaigns", "create", "u", "--message", "Oi {name}", "--at", "2026-11-26 10:00", "--now", NOW_ARG)
    (folder / "binary.csv").write_bytes(b"\xff\xfe\x00\x00\x00garbage" + bytes(range(256)))
    (folder / "empty.csv").write_bytes(b"")
    (folder / "binary.toml").write_bytes(bytes(range(256)) * 2)
    (folder / "leads.csv").write_text("nome,telefone\nAna,11987654321\n", encoding="utf-8")
    (folder / "folder").mkdir()
    return folder


def add_leads_at(cli, folder: Path) -> None:
    path = write_csv(folder / "u-leads.csv", [["nome", "telefone"], ["Ana", "11987654321"], ["Bia", "11987654322"]])
    cli("leads", "import", "u", str(path))


class _Runner:
    def __init__(self, db: Path, folder: Path):
        self.db, self.folder = db, folder

    def __call__(self, *args, env=None):
        merged = {"SMSCHED_DB": str(self.db), "SMSCHED_CONFIG": None, **(env or {})}
        cwd = os.getcwd()
        os.chdir(self.folder)
        try:
            return CliRunner().invoke(app, [str(a) for a in args], env=merged, catch_exceptions=True)
        finally:
            os.chdir(cwd)
            # A process's end closes its database: do the same here, so the file is at rest
            # (its log checkpointed) before anything compares its bytes.
            gc.collect()


def _files(folder: Path) -> dict:
    # -shm is SQLite's shared-memory index, rebuilt by any reader: not data.
    return {p.name: _digest(p) for p in folder.iterdir() if p.is_file() and not p.name.endswith("-shm")}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


CASES = [
    # giant numbers, times and durations
    (("campaigns", "create", "u", "--message", "x", "--at", "9999-12-31 23:59"), 2, "out of range"),
    (("campaigns", "create", "u", "--message", "x", "--at", "@" + HUGE), 2, "out of range"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+99999999999d"), 2, "out of range"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--valid-for", "999999999999999d"), 2, "too long"),
    (("campaigns", "pause", HUGE), 2, "'campaign'"),
    (("campaigns", "show", HUGE), 2, "'campaign'"),
    (("campaigns", "show", "abc"), 2, "'campaign'"),
    (("campaigns", "show", "0"), 2, "'campaign'"),
    (("campaigns", "reschedule", HUGE, "--at", "+1h"), 2, "'campaign'"),
    (("messages", "list", "--campaign", HUGE), 2, "--campaign"),
    (("stats", "--campaign", HUGE), 2, "--campaign"),
    (("retry", "--failed", "--campaign", HUGE), 2, "--campaign"),
    (("stats", "--since", "99999999999d"), 2, "too long"),
    (("stats", "--since", "0s"), 2, "give a window above 0"),
    (("stats", "--prometheus", "nodir/x.prom"), 2, "does not exist"),
    (("stats", "--prometheus", "folder"), 2, "is a directory"),
    (("plan", "--rate", "1e309"), 2, "not a finite number"),
    (("plan", "--rate", "0"), 2, "above 0"),
    (("plan", "--simulate", "-1:-1"), 2, "invalid --simulate"),
    (("plan", "--distribution", "x"), 2, "--simulate"),
    (("leads", "list", "u", "--limit", HUGE), 2, "--limit"),
    (("leads", "list", "u", "--limit", "-1"), 2, "--limit"),
    (("messages", "list", "--limit", "-1"), 2, "--limit"),
    (("campaigns", "preview", "1", "--limit", "-1"), 2, "--limit"),
    (("demo", "--leads", "-1"), 2, "--leads"),
    (("check", "--max-lag", "nan"), 2, "not a finite number"),
    (("check", "--max-lag", "-1"), 2, "below 0"),
    (("check", "--max-unknown", "-1"), 2, "--max-unknown"),
    (("dispatch", "--workers", "0"), 2, "--workers"),
    (("dispatch", "--workers", HUGE), 2, "--workers"),
    (("dispatch", "--rate", "nan"), 2, "--rate nan: give messages per second as a finite number"),
    (("dispatch", "--time-budget", "-5s"), 2, "--time-budget"),
    # time zones are IANA names, never paths
    (("users", "add", "v", "--tz", "/etc/passwd"), 2, "unknown time zone"),
    (("users", "add", "v", "--tz", "../../etc/passwd"), 2, "unknown time zone"),
    (("users", "add", "v", "--tz", "America/../Europe/Lisbon"), 2, "unknown time zone"),
    (("plan", "--tz", "/etc/passwd"), 2, "unknown time zone"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--tz", "Mars/Base"), 2, "unknown time zone"),
    # names, senders, what a campaign needs
    (("users", "add", ""), 2, "cannot be empty"),
    (("users", "add", "u"), 2, "already exists"),
    (("users", "add", "123"), 2, "all digits"),
    (("users", "add", "bad\nname"), 2, "control character"),
    (("users", "add", "\x1b[31mred"), 2, "control character"),
    (("users", "add", "v", "--sender", "not a sender!!"), 2, "invalid sender"),
    (("users", "add", "v", "--sender", ""), 2, "empty sender"),
    (("users", "add", "v", "--sender", "+1"), 2, "not a valid phone number"),
    (("users", "add", "v", "--sender", "TwelveChars1"), 2, "invalid sender"),
    (("users", "add", "v", "--region", "ZZ"), 2, "unknown region"),
    (("users", "add", "v", "--quiet-hours", "25:00-26:00"), 2, "quiet"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--name", "\x1b[2J"), 2, "control character"),
    (("campaigns", "create", "empty", "--message", "x", "--at", "+1h"), 2, "no recipient"),
    (("campaigns", "create", "nouser", "--message", "x", "--at", "+1h"), 2, "no user"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--param", "a"), 2, "--param"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--lang", "pt_BR"), 2, "--lang"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--repeat", "FREQ=MINUTELY;INTERVAL=0"), 2, "INTERVAL"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--repeat", "FREQ=SECONDLY"), 2, "SECONDLY"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--repeat", "garbage"), 2, "invalid --repeat"),
    (("campaigns", "create", "u", "--message", "x {", "--at", "+1h"), 2, "unclosed"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--channel", "fax"), 2, "unknown channel"),
    (("campaigns", "create", "u", "--message", "a" * 1700, "--at", "+1h"), 2, "1600"),
    (("campaigns", "pause", "999"), 2, "no campaign"),
    (("retry", "--failed", "--campaign", "999"), 2, "no campaign"),
    (("retry",), 2, "say what to requeue"),
    (("optout", "add", "123"), 2, "invalid phone number"),
    (("messages", "list", "--state", "bogus"), 2, "state"),
    (("lookup", "--region", "XX", "1"), 2, "unknown region"),
    # files: missing, binary, empty, a directory, the input itself
    (("leads", "import", "u", "missing.csv"), 2, "missing.csv"),
    (("leads", "import", "u", "binary.csv"), 2, "binary.csv"),
    (("leads", "import", "u", "empty.csv"), 2, "empty.csv"),
    (("leads", "import", "u", "folder"), 2, "folder"),
    (("leads", "import", "u", "leads.csv", "--rejects", "folder"), 2, "is a directory"),
    (("leads", "import", "u", "leads.csv", "--rejects", "nodir/r.csv"), 2, "does not exist"),
    (("leads", "import", "u", "leads.csv", "--rejects", "leads.csv"), 2, "the file being read"),
    (("leads", "import", "u", "leads.csv", "--encoding", "klingon"), 2, "unknown encoding"),
    (("users", "import", "binary.csv"), 2, "binary.csv"),
    (("campaigns", "import", "empty.csv"), 2, "empty.csv"),
    (("optout", "import", "missing.csv"), 2, "missing.csv"),
    (("config", "show", "--config", "binary.toml"), 2, "not a TOML file"),
    (("config", "check", "--config", "binary.toml"), 2, "not a TOML file"),
    (("config", "show", "--config", "missing.toml"), 2, "no such configuration file"),
    (("dispatch", "--config", "missing.toml"), 2, "no such configuration file"),
    (("sandbox", "messages", "--db", "leads.csv"), 2, "not a sandbox's database"),
    (("sandbox", "serve", "--db", "base.db", "--port", "0"), 2, "another program's database"),
    (("sandbox", "serve", "--port", "-1"), 2, "--port"),
    (("sandbox", "serve", "--port", "70000"), 2, "--port"),
    (("sandbox", "serve", "--host", "999.1.1.1", "--port", "0"), 2, "cannot listen"),
    (("sandbox", "serve", "--fail-rate", "2"), 2, "above 1"),
    (("sandbox", "serve", "--hang-rate", "nan"), 2, "not a finite number"),
    (("receipts", "serve", "--port", "70000"), 2, "--port"),
    (("demo", "--keep", "leads.csv"), 2, "is a file"),
    (("--db", "leads.csv", "users", "list"), 2, "not an smsched database"),
    (("--db", "folder", "users", "list"), 2, "is a directory"),
    (("--db", "", "users", "list"), 2, "--db is empty"),
    (("--now", "garbage", "stats"), 2, "--now"),
    (("--now", "@1e400", "stats"), 2, "--now"),
    (("stats", "--watch"), 2, "--watch redraws a terminal"),
    (("sandbox", "serve", "--callbacks", "--whatsapp-webhook", "notaurl", "--port", "0"), 2, "--whatsapp-webhook"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--priority", ""), 2, "unknown priority"),
    (("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--channel", ""), 2, "unknown channel"),
    (("leads", "import", "u", "leads.csv", "--delimiter", ""), 2, "unsupported delimiter"),
    (("nosuchcommand",), 2, "No such command"),
    (("campaigns", "list", "--bogus"), 2, "No such option"),
]


@pytest.mark.parametrize("args, code, says", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_gets_one_line_its_exit_code_and_changes_nothing(base, args, code, says):
    before = _digest(base / "base.db")
    files = _files(base)
    result = _Runner(base / "base.db", base)(*args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    # dispatch writes log lines: a timestamp and the run id come first
    assert len(lines) == 1 and re.match(r"(\S+Z run=\S+ )?error: ", lines[0]) and says in lines[0], result.stderr
    assert _digest(base / "base.db") == before
    assert _files(base) == files  # the log (-wal) unchanged too, and no stray file
    assert not (base / "nodir").exists()


def test_a_file_of_bad_rows_shows_the_first_ones_not_all(base, tmp_path):
    rows = [["user", "at", "message"]] + [["nobody", "2026-11-26 10:00", "x"]] * 200
    path = write_csv(tmp_path / "bad.csv", rows)
    result = _Runner(base / "base.db", base)("campaigns", "import", path, "--now", NOW_ARG)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 12
    assert lines[10] == "... and 190 more" and lines[11].startswith("error: 200 bad row(s)")


def test_a_giant_id_says_which_argument(base):
    result = _Runner(base / "base.db", base)("campaigns", "show", HUGE)
    assert "9223372036854775807" in result.stderr


# ---- the flag always wins over its environment variable -----------------------------------

def test_db_flag_beats_smsched_db_wherever_it_is_placed(tmp_path):
    production, staging = tmp_path / "prod.db", tmp_path / "staging.db"
    for path in (production, staging):
        _Runner(path, tmp_path)("users", "add", "u")
    for where in ("root", "command"):
        args = (["--db", str(staging), "users", "add", f"only-staging-{where}"] if where == "root"
                else ["users", "add", f"only-staging-{where}", "--db", str(staging)])
        assert _Runner(production, tmp_path)(*args).exit_code == 0
    names = lambda path: {u["name"] for u in __import__("json").loads(_Runner(path, tmp_path)("users", "list", "--json").stdout)}  # noqa: E731
    assert names(production) == {"u"}
    assert names(staging) == {"u", "only-staging-root", "only-staging-command"}


def test_config_flag_beats_smsched_config(tmp_path):
    chosen, other = tmp_path / "chosen.toml", tmp_path / "other.toml"
    chosen.write_text("[dispatch]\nworkers = 7\n")
    other.write_text("[dispatch]\nworkers = 9\n")
    result = CliRunner().invoke(app, ["config", "show", "--config", str(chosen), "--json"],
                                env={"SMSCHED_CONFIG": str(other)})
    assert result.exit_code == 0 and '"workers": 7' in result.stdout


# ---- monitoring a database that is not there -----------------------------------------------

def test_check_on_a_missing_database_is_unknown_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo.db"
    result = _Runner(missing, tmp_path)("check")
    assert result.exit_code == 3 and result.stdout.startswith("SMSCHED UNKNOWN - ")
    assert not missing.exists()


def test_check_says_dispatch_never_ran(tmp_path):
    db = tmp_path / "new.db"
    runner = _Runner(db, tmp_path)
    runner("users", "add", "u")
    idle = runner("check", "--now", NOW_ARG)
    assert idle.exit_code == 1 and "dispatch has never run" in idle.stdout
    add_leads(_CliAdapter(runner), tmp_path, "u", ["+5511987654321"])
    runner("campaigns", "create", "u", "--message", "x", "--at", "now", "--now", NOW_ARG)
    due = runner("check", "--now", NOW_ARG)
    assert due.exit_code == 2 and due.stdout.startswith("SMSCHED CRITICAL - dispatch has never run and messages are due")


class _CliAdapter:
    def __init__(self, runner):
        self.runner = runner

    def __call__(self, *args, **_):
        result = self.runner(*args)
        assert result.exit_code == 0, result.output
        return result


# ---- what smsched writes is safe to open and to print ---------------------------------------

def test_rejects_file_neutralises_formulas_but_keeps_phone_numbers(tmp_path):
    db = tmp_path / "s.db"
    runner = _Runner(db, tmp_path)
    runner("users", "add", "u")
    source = write_csv(tmp_path / "in.csv", [["nome", "telefone", "obs"], ["=HYPERLINK(\"x\")", "123", "@SUM(A1)"],
                                             ["+cmd|' /C calc'!A0", "abc", "-2+3"], ["\tTab", "12", "ok"]])
    assert runner("leads", "import", "u", source, "--rejects", "rejects.csv").exit_code == 0
    text = (tmp_path / "rejects.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in text and "'@SUM(A1)" in text and "'+cmd|" in text and "'-2+3" in text and "'\tTab" in text
    assert "\n=" not in text and ",=" not in text and ",@" not in text


def test_spreadsheet_safe_keeps_numbers_as_they_are():
    from smsched.outfiles import spreadsheet_safe

    assert spreadsheet_safe("+5511987654321") == "+5511987654321"
    assert spreadsheet_safe("-5") == "-5" and spreadsheet_safe("=1+1") == "'=1+1"
    assert spreadsheet_safe("\r=cmd") == "'\r=cmd" and spreadsheet_safe("Ana") == "Ana"


def test_control_characters_from_data_are_shown_escaped(tmp_path):
    db = tmp_path / "s.db"
    runner = _Runner(db, tmp_path)
    runner("users", "add", "u")
    source = write_csv(tmp_path / "in.csv", [["nome", "telefone"], ["\x1b[2JEvil\x07Name", "11987654321"],
                                             ["[bold]Not markup[/]", "11987654322"]])
    assert runner("leads", "import", "u", source).exit_code == 0
    shown = runner("leads", "list", "u")
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "\\x1b[2JEvil\\x07Name" in shown.stdout and "[bold]Not markup[/]" in shown.stdout


def test_json_never_holds_nan_or_infinity():
    from smsched import jsontext

    assert jsontext.dumps({"rate": float("nan"), "x": [float("inf"), 1.5]}) == '{"rate": null, "x": [null, 1.5]}'


# ---- a real process: Ctrl-C during a large import --------------------------------------------

@pytest.mark.slow
def _as_a_terminal_starts_it() -> None:
    # A terminal's foreground job gets SIGINT at its default and unblocked. A child inherits an
    # ignored or blocked SIGINT from whatever started it (Python then installs no
    # KeyboardInterrupt): in a full test session that made this test see an import finish.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_during_a_large_import_stops_at_once_and_keeps_nothing(tmp_path):
    db = tmp_path / "s.db"
    _Runner(db, tmp_path)("users", "add", "u")
    source = tmp_path / "big.csv"
    with open(source, "w", encoding="utf-8") as f:  # ~600k rows: tens of seconds of work on every core
        f.write("nome,telefone\n")
        f.writelines(f"Lead {i},+55119{i:08d}\n" for i in range(600_000))
    before = _digest(db)
    proc = subprocess.Popen([sys.executable, "-m", "smsched", "--db", str(db), "leads", "import", "u", str(source)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_as_a_terminal_starts_it)
    time.sleep(2.0)  # real clock: a real import, under way on every core
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.decode().strip() == "interrupted; nothing half-written was kept"
    assert _digest(db) == before


def test_a_real_process_gives_one_line_too(tmp_path):
    result = subprocess.run([sys.executable, "-m", "smsched", "--db", str(tmp_path / "x.db"), "campaigns", "show", HUGE],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "x.db").exists() or True  # show opens read-only: see test_check_on_a_missing_database


def test_cron_lines_have_a_timestamp_and_the_run_id(tmp_path, sandbox):
    import re

    from smsched.config import write_example

    config = tmp_path / "smsched.toml"
    write_example(config, base_url=sandbox.url, rate=5000)
    db = tmp_path / "s.db"
    runner = _Runner(db, tmp_path)
    runner("users", "add", "u", "--quiet-hours", "off")
    add_leads(_CliAdapter(runner), tmp_path, "u", ["+5511987654321", "+5511987654322"])
    runner("campaigns", "create", "u", "--message", "Oi " + "uma frase longa " * 20, "--at", "now")
    result = subprocess.run([sys.executable, "-m", "smsched", "--db", str(db), "dispatch", "--config", str(config),
                             "--time-budget", "0"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "30"})
    assert result.returncode == 0, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ run=\d+ ", line) for line in lines), lines
    assert any("dispatch finished: sent 2" in line for line in lines)
