import gc
import os
import sqlite3
import subprocess
import sys

import pytest

from smsched import storage
from smsched.errors import DatabaseError, NotSmschedDatabase
from tests.conftest import NOW, Cli


@pytest.mark.sqlite_only("pragmas of a file")
def test_first_use_creates_a_migrated_wal_database(db_path):
    db = storage.connect(db_path)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    assert db.conn.execute("PRAGMA application_id").fetchone()[0] == storage.APPLICATION_ID
    assert {"users", "leads", "optouts", "campaigns", "messages", "runs"} <= set(db.table_names())
    db.conn.close()
    # Opening again applies nothing twice.
    again = storage.connect(db_path)
    assert again.conn.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION


def test_foreign_keys_are_enforced(db):
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute("INSERT INTO leads (user_id, phone, created_at, updated_at) VALUES (999, '+1', 0, 0)")


def test_a_text_file_is_refused_and_left_untouched(tmp_path, cli):
    path = tmp_path / "notes.db"
    path.write_bytes(b"shopping list\n")
    result = cli("users", "list", "--db", path, code=2)
    assert "is not an smsched database (not an SQLite file)" in result.stderr
    assert "Traceback" not in result.output
    assert path.read_bytes() == b"shopping list\n"


def test_someone_elses_sqlite_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(NotSmschedDatabase, match="not an smsched one"):
        storage.connect(path)
    assert path.read_bytes() == before


@pytest.mark.sqlite_only("the file's user_version; PostgreSQL: test_postgres.py")
def test_a_database_from_a_newer_smsched_is_refused(db_path):
    storage.connect(db_path).conn.close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {storage.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(DatabaseError, match="newer smsched"):
        storage.connect(db_path)


def test_transaction_rolls_back_everything_on_error(db):
    with pytest.raises(RuntimeError):
        with storage.transaction(db):
            db.conn.execute("INSERT INTO users (name, tz, region, created_at) VALUES ('a', 'UTC', 'BR', 0)")
            raise RuntimeError("boom")
    assert db.conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_fifty_concurrent_cli_writers_all_succeed(db_path):
    """50 processes adding users at once, including the very first (migrating) open."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "smsched", "users", "add", f"user{i}", "--db", str(db_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(50)
    ]
    failures = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        if proc.returncode != 0:
            failures.append(err.decode())
    assert failures == []
    db = storage.connect(db_path)
    assert db.conn.execute("SELECT count(*) FROM users").fetchone()[0] == 50


# ---- the environment's faults, named (exit 1) ----------------------------------------------

def _can_mount() -> str | None:
    """Why a tmpfs cannot be mounted here, or None: read-only and full file systems are real ones."""
    import shutil
    import subprocess
    import tempfile

    if os.geteuid() != 0 or not shutil.which("mount"):
        return "needs root and mount(8) to make a real read-only / full file system"
    probe = tempfile.mkdtemp()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True)
        if done.returncode != 0:
            return f"cannot mount a tmpfs here ({done.stderr.decode().strip()})"
        subprocess.run(["umount", probe], check=True)
        return None
    finally:
        os.rmdir(probe)


NO_MOUNT = _can_mount()


@pytest.fixture
def small_fs(tmp_path):
    import subprocess

    if NO_MOUNT:
        pytest.skip(f"SKIPPED LOUDLY: {NO_MOUNT}")
    where = tmp_path / "fs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_missing_directory_is_named(tmp_path):
    result = Cli(tmp_path / "nowhere" / "s.db")("users", "add", "u", code=1)
    assert result.stderr.strip() == (f"error: cannot create {tmp_path / 'nowhere' / 's.db'}: the directory "
                                     f"{tmp_path / 'nowhere'} does not exist; create it, or fix --db")


def test_a_read_only_file_system_is_named_and_reading_still_works(small_fs, tmp_path):
    import subprocess

    db = small_fs / "s.db"
    Cli(db)("users", "add", "u")
    gc.collect()  # close what the in-process command left open, as a process's end would
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    before = db.read_bytes()
    refused = Cli(db)("users", "add", "v", code=1)
    assert "is read-only (its file system is mounted read-only)" in refused.stderr
    assert "not an smsched database" not in refused.stderr
    assert [u["name"] for u in Cli(db).json("users", "list")] == ["u"]
    Cli(db)("stats", "--now", f"@{NOW}")
    assert Cli(db)("check", "--now", f"@{NOW}", code=1).stdout.startswith("SMSCHED WARNING - dispatch has never run")
    assert db.read_bytes() == before


def test_a_full_disk_is_named_and_leaves_no_half_made_database(small_fs):
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (2048 - 24) * 1024)  # leave too little for a new database
    db = small_fs / "s.db"
    result = Cli(db)("users", "add", "u", code=1)
    assert "the disk is full" in result.stderr and "not an smsched database" not in result.stderr
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]
