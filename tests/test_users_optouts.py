import pytest

from tests.conftest import add_leads


def test_add_and_list_users(cli):
    created = cli.json("users", "add", "padaria")
    assert created["tz"] == "America/Sao_Paulo" and created["region"] == "BR"
    cli("users", "add", "nyc-deli", "--tz", "America/New_York", "--region", "us", "--sender", "+12125550100")
    users = cli.json("users", "list")
    assert [(u["id"], u["name"], u["tz"], u["region"], u["sender"]) for u in users] == [
        (1, "padaria", "America/Sao_Paulo", "BR", None),
        (2, "nyc-deli", "America/New_York", "US", "+12125550100"),
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["users", "add", "x", "--tz", "Mars/Olympus"], "error: unknown time zone 'Mars/Olympus': use an IANA name such as America/Sao_Paulo"),
        (["users", "add", "x", "--region", "XX"], "error: unknown region 'XX': use a two-letter country code such as BR, US or PT"),
        (["users", "add", "x", "--quiet-hours", "8-22"], "error: invalid quiet hours '8-22': give the sending window as HH:MM-HH:MM (e.g. 08:00-22:00, or 08:00-21:00 for US senders) or 'off'"),
    ],
)
def test_bad_user_input_is_one_line_and_exit_2(cli, args, message):
    result = cli(*args, code=2)
    assert result.stderr.strip() == message
    assert cli.json("users", "list") == []


def test_duplicate_user_name(cli):
    cli("users", "add", "padaria")
    result = cli("users", "add", "padaria", code=2)
    assert result.stderr.strip() == "error: user 'padaria' already exists; pick another name"


def test_user_by_id_or_name(cli, tmp_path):
    cli("users", "add", "padaria")
    add_leads(cli, tmp_path, "1", ["+5511987654321"])
    assert [lead["phone"] for lead in cli.json("leads", "list", "padaria")] == ["+5511987654321"]
    result = cli("leads", "list", "ghost", code=2)
    assert "no user 'ghost'" in result.stderr


def test_optout_global_and_per_user(cli):
    cli("users", "add", "a")
    cli("users", "add", "b")
    cli("optout", "add", "(11) 98765-4321", "--reason", "replied STOP")
    cli("optout", "add", "+55 21 99999-0000", "--user", "b", "--reason", "asked by phone")
    listed = cli.json("optout", "list")
    assert [(o["phone"], o["user"], o["reason"], o["source"]) for o in listed] == [
        ("+5511987654321", None, "replied STOP", "cli"),
        ("+5521999990000", "b", "asked by phone", "cli"),
    ]
    assert all(o["created_at"].endswith("Z") for o in listed)
    assert [o["phone"] for o in cli.json("optout", "list", "--user", "a")] == ["+5511987654321"]
    again = cli.json("optout", "add", "11987654321")
    assert again["added"] == 0 and again["already"] == 1
    cli("optout", "remove", "+5511987654321")
    assert [o["phone"] for o in cli.json("optout", "list")] == ["+5521999990000"]


def test_optout_rejects_an_invalid_number(cli):
    result = cli("optout", "add", "12", code=2)
    assert result.stderr.strip().startswith("error: invalid phone number '12'")
    assert cli.json("optout", "list") == []


def test_optout_import_from_a_plain_list_and_from_a_csv(cli, tmp_path):
    (tmp_path / "list.txt").write_text("11987654321\n(21) 99999-0000\nnot a phone\n")
    result = cli.json("optout", "import", tmp_path / "list.txt")
    assert result["added"] == 2 and [bad["line"] for bad in result["invalid"]] == [3]
    (tmp_path / "stop.csv").write_text("Nome;Celular\nAna;(31) 98888-7777\n")
    assert cli.json("optout", "import", tmp_path / "stop.csv")["added"] == 1
    assert len(cli.json("optout", "list")) == 3
