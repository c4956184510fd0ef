import sqlite3
import subprocess
import sys

import pytest

from smsched import storage
from smsched.errors import DatabaseError, NotSmschedDatabase


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
