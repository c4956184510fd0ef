import csv
import io
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsched import leads, storage, users
from smsched.csvfiles import normalise_key
from smsched.errors import ImportFailed
from tests.conftest import write_csv

SPELLINGS = ["+55 (11) 98765-4321", "(11) 98765-4321", "011987654321", "11987654321", "55 11 98765 4321"]


@pytest.fixture
def owner(db):
    return users.add(db, "padaria")


def _counts(report):
    return {k: getattr(report, k) for k in ("read", "imported", "updated", "duplicates", "invalid", "blank")}


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_brazilian_spelling_normalises_to_e164(db, owner, tmp_path, spelling):
    path = write_csv(tmp_path / "l.csv", [["nome", "telefone"], ["Ana", spelling]])
    leads.import_leads(db, owner, str(path))
    assert [lead["phone"] for lead in leads.list_leads(db, owner)] == ["+5511987654321"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_encodings_and_delimiters_are_detected(db, owner, tmp_path, encoding, delimiter):
    rows = [["Nome Completo", "Telefone Celular", "Cidade", "Observação"],
            ["João Conceição", "(11) 98765-4321", "São Paulo", "gosta de pão, café; e \"bolo\""],
            ["Maria", "(92) 99123-4567", "Manaus", "linha 1\nlinha 2"]]
    path = write_csv(tmp_path / "l.csv", rows, delimiter=delimiter, encoding=encoding, newline="\r\n")
    report = leads.import_leads(db, owner, str(path))
    assert report.read == 2 and report.imported == 2
    assert report.delimiter == delimiter
    stored = {lead["phone"]: lead for lead in leads.list_leads(db, owner)}
    joao = stored["+5511987654321"]
    assert joao["name"] is None or joao["name"] == "João Conceição"
    assert joao["fields"]["cidade"] == "São Paulo"
    assert joao["fields"]["observacao"] == "gosta de pão, café; e \"bolo\""
    assert stored["+5592991234567"]["fields"]["observacao"] == "linha 1\nlinha 2"
    assert stored["+5592991234567"]["tz"] == "America/Manaus"


def test_counts_match_what_a_careful_person_counts(db, owner, tmp_path):
    rows = [
        ["Nome", "Telefone", "Cidade"],
        ["Ana", "(11) 98765-4321", "SP"],          # imported
        ["Bruno", "(21) 99999-0000", "RJ"],        # imported
        ["Ana de novo", "+55 11 98765-4321", ""],  # duplicate of line 2
        ["Sem número", "", "Recife"],              # blank
        ["Curto", "1234", ""],                     # invalid
        ["Letras", "abc", ""],                     # invalid
        ["", "", ""],                              # blank (a row of empty cells)
        ["Carla", "011 3333-4444", "SP"],          # imported (landline)
    ]
    path = write_csv(tmp_path / "l.csv", rows)
    rejects = tmp_path / "rejects.csv"
    report = leads.import_leads(db, owner, str(path), rejects=str(rejects))
    assert _counts(report) == {"read": 8, "imported": 3, "updated": 0, "duplicates": 1, "invalid": 2, "blank": 2}
    assert report.read == report.imported + report.updated + report.duplicates + report.invalid + report.blank
    rejected = list(csv.reader(rejects.open(encoding="utf-8")))
    assert rejected[0] == ["line", "reason", "Nome", "Telefone", "Cidade"]
    assert [(r[0], r[1]) for r in rejected[1:]] == [
        ("5", "no phone number"), ("6", "too short for region BR"), ("7", "not a phone number"), ("8", "no phone number"),
    ]
    # Later fields win, empty values do not erase.
    ana = next(lead for lead in leads.list_leads(db, owner) if lead["phone"] == "+5511987654321")
    assert ana["name"] == "Ana de novo" and ana["fields"] == {"cidade": "SP"}


def test_reimporting_the_same_file_changes_nothing(db, owner, tmp_path):
    path = write_csv(tmp_path / "l.csv", [["nome", "fone"], ["Ana", "11987654321"], ["Bia", "21999990000"]])
    leads.import_leads(db, owner, str(path), now=1000)
    before = leads.list_leads(db, owner)
    report = leads.import_leads(db, owner, str(path), now=2000)
    assert _counts(report) == {"read": 2, "imported": 0, "updated": 2, "duplicates": 0, "invalid": 0, "blank": 0}
    assert leads.list_leads(db, owner) == before  # updated_at too: nothing changed


def test_a_later_import_refreshes_fields(db, owner, tmp_path):
    leads.import_leads(db, owner, str(write_csv(tmp_path / "a.csv", [["nome", "fone", "cidade"], ["Ana", "11987654321", "SP"]])))
    report = leads.import_leads(db, owner, str(write_csv(tmp_path / "b.csv", [["fone", "plano"], ["11987654321", "ouro"]])))
    assert report.updated == 1
    (ana,) = leads.list_leads(db, owner)
    assert ana["name"] == "Ana" and ana["fields"] == {"cidade": "SP", "plano": "ouro"}


def test_the_same_number_may_belong_to_several_users(db, owner, tmp_path):
    other = users.add(db, "farmacia")
    path = write_csv(tmp_path / "l.csv", [["phone"], ["+5511987654321"]])
    leads.import_leads(db, owner, str(path))
    assert leads.import_leads(db, other, str(path)).imported == 1


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "looks like a binary file"),
        ("Nome;Cidade\nAna;SP\n".encode(), "no phone column among the headers 'Nome', 'Cidade'; name it with --phone-column"),
    ],
)
def test_files_that_cannot_be_imported_exit_2_and_write_nothing(cli, tmp_path, db_path, content, message):
    cli("users", "add", "padaria")
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = cli("leads", "import", "padaria", path, code=2)
    assert message in result.stderr and "Traceback" not in result.output
    assert cli.json("leads", "list", "padaria") == []


def test_a_missing_file(cli, tmp_path):
    cli("users", "add", "padaria")
    result = cli("leads", "import", "padaria", tmp_path / "nope.csv", code=2)
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.csv'}: no such file"


def test_wrong_explicit_encoding_names_the_line_and_suggests(cli, tmp_path):
    cli("users", "add", "padaria")
    path = tmp_path / "l.csv"
    path.write_bytes("nome,fone\nAna,11987654321\nJoão,21999990000\n".encode("cp1252"))
    result = cli("leads", "import", "padaria", path, "--encoding", "utf-8", code=2)
    assert "line 3: bytes that are not utf-8; it's often worth trying --encoding latin-1" in result.stderr
    assert cli.json("leads", "list", "padaria") == []


def test_explicit_columns_and_region(cli, tmp_path):
    cli("users", "add", "deli", "--region", "US", "--tz", "America/New_York")
    path = write_csv(tmp_path / "l.csv", [["who", "cell", "contact"], ["Al", "(212) 555-0100", "x"]])
    report = cli.json("leads", "import", "deli", path, "--phone-column", "cell", "--name-column", "who")
    assert report["imported"] == 1 and report["fields"] == ["contact"]
    (lead,) = cli.json("leads", "list", "deli")
    assert (lead["phone"], lead["name"], lead["fields"]) == ("+12125550100", "Al", {"contact": "x"})


def test_standard_input(cli):
    cli("users", "add", "padaria")
    report = cli.json("leads", "import", "padaria", "-", stdin="telefone\n11987654321\n")
    assert report["imported"] == 1 and report["file"] == "standard input"


def test_the_import_is_one_transaction(db, owner, tmp_path, monkeypatch):
    """A failure after staging leaves the user's leads exactly as they were."""
    leads.import_leads(db, owner, str(write_csv(tmp_path / "a.csv", [["fone"], ["11987654321"]])))
    path = write_csv(tmp_path / "b.csv", [["fone", "x"]] + [[f"1198765{i:04d}", "y"] for i in range(50)])
    original = db.conn

    class Failing:
        def __getattr__(self, name):
            return getattr(original, name)

        def execute(self, sql, *args):
            if sql.startswith("INSERT INTO leads"):
                raise sqlite3.OperationalError("disk I/O error")
            return original.execute(sql, *args)

    monkeypatch.setattr(db, "conn", Failing())
    with pytest.raises(sqlite3.OperationalError):
        leads.import_leads(db, owner, str(path))
    monkeypatch.setattr(db, "conn", original)
    assert [lead["phone"] for lead in leads.list_leads(db, owner)] == ["+5511987654321"]


def test_header_keys_are_normalised():
    assert normalise_key("Nome Completo") == "nome_completo"
    assert normalise_key("Cidade") == "cidade"
    assert normalise_key(" Número do WhatsApp ") == "numero_do_whatsapp"
    assert normalise_key("E-mail") == "e_mail"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_and_counts_add_up(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("fuzz")
    db = storage.connect(directory / "f.db")
    owner = users.add(db, "u")
    path = directory / "f.csv"
    path.write_bytes(b"telefone;nome\n" + data)
    try:
        report = leads.import_leads(db, owner, str(path))
    except ImportFailed:
        assert db.conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 0
    else:
        assert report.read == report.imported + report.updated + report.duplicates + report.invalid + report.blank
        assert db.conn.execute("SELECT count(*) FROM leads").fetchone()[0] == report.imported
    db.conn.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(SPELLINGS + ["", "123", "(21) 99999-0000", "x"]),
                               st.text(alphabet="abcçãé ;,\"\n", max_size=8)), max_size=30),
       encoding=st.sampled_from(["utf-8", "utf-16", "cp1252"]))
def test_generated_csv_counts_are_exact(tmp_path_factory, rows, encoding):
    directory = tmp_path_factory.mktemp("gen")
    db = storage.connect(directory / "g.db")
    owner = users.add(db, "u")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";")
    writer.writerow(["Telefone", "Nome"])
    writer.writerows(rows)
    path = directory / "g.csv"
    path.write_bytes(buffer.getvalue().encode(encoding, errors="replace"))
    report = leads.import_leads(db, owner, str(path))
    valid = {"+5511987654321" if r[0] in SPELLINGS else "+5521999990000" for r in rows if r[0] in SPELLINGS + ["(21) 99999-0000"]}
    assert report.read == len(rows)
    assert report.blank == sum(1 for r in rows if r[0] == "")
    assert report.invalid == sum(1 for r in rows if r[0] in ("123", "x"))
    assert report.imported == len(valid)
    assert report.duplicates == report.read - report.blank - report.invalid - len(valid)
    db.conn.close()


def test_import_many_users_from_one_file(cli, tmp_path):
    users_csv = tmp_path / "users.csv"
    users_csv.write_text("name,tz,region\npadaria,America/Sao_Paulo,BR\ndeli,America/New_York,US\n")
    assert cli.json("users", "import", users_csv) == {"read": 2, "created": 2, "existing": 0}
    assert cli.json("users", "import", users_csv) == {"read": 2, "created": 0, "existing": 2}
    path = write_csv(tmp_path / "all.csv", [
        ["user", "telefone", "nome"],
        ["padaria", "(11) 98765-4321", "Ana"],
        ["deli", "(212) 555-0100", "Al"],       # read with the US region
        ["2", "212-555-0100", "Al again"],     # a user by id; duplicate of the row above
        ["ghost", "(11) 98765-4321", "?"],     # unknown user
        ["padaria", "", "no phone"],
    ])
    report = cli.json("leads", "import-many", path)
    assert {k: report[k] for k in ("read", "imported", "duplicates", "blank", "invalid", "unknown_user", "users")} == {
        "read": 5, "imported": 2, "duplicates": 1, "blank": 1, "invalid": 0, "unknown_user": 1, "users": 2}
    assert [(lead["phone"], lead["name"]) for lead in cli.json("leads", "list", "deli")] == [("+12125550100", "Al again")]


def test_users_import_rejects_bad_rows_and_creates_nothing(cli, tmp_path):
    users_csv = tmp_path / "users.csv"
    users_csv.write_text("name,tz\nok,America/Sao_Paulo\nbad,Nowhere/Town\n")
    result = cli("users", "import", users_csv, code=2)
    assert f"{users_csv}: line 3: unknown time zone 'Nowhere/Town'" in result.stderr
    assert cli.json("users", "list") == []
