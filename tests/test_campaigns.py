from datetime import datetime, timezone

import pytest

from smsched import campaigns, clock, storage
from smsched.errors import UsageError
from tests.conftest import NOW, add_leads, write_csv

SP, MANAUS, NY = "+5511987654321", "+5592991234567", "+12125550100"


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def schedule(db_path, campaign_id):
    db = storage.connect(db_path)
    return {r[0]: r[1] for r in db.conn.execute(
        "SELECT phone, scheduled_at FROM messages WHERE campaign_id = ? ORDER BY id", (campaign_id,))}


@pytest.mark.parametrize("text, expected", [
    ("2026-11-26 09:00", utc("2026-11-26 12:00")),
    ("2026-11-26T09:00-03:00", utc("2026-11-26 12:00")),
    ("2026-11-26T12:00Z", utc("2026-11-26 12:00")),
    ("26/11/2026 09:00", utc("2026-11-26 12:00")),
    ("05/12/2026 09:00", utc("2026-12-05 12:00")),  # day first: 5 December
    ("2026-12-05 09:00", utc("2026-12-05 12:00")),  # ISO: year, month, day
    ("now", NOW),
    ("+15m", NOW + 900),
    ("+2h", NOW + 7200),
    ("+1d", NOW + 86400),
])
def test_when_is_read_in_the_campaign_zone(text, expected):
    assert clock.parse_when(text, "America/Sao_Paulo", NOW) == expected


def test_dst_gap_moves_forward_and_ambiguous_times_take_the_first():
    # 2026-03-08 02:30 does not exist in New York (02:00 -> 03:00): it becomes 03:30 EDT.
    assert clock.parse_when("2026-03-08 02:30", "America/New_York", NOW) == utc("2026-03-08 07:30")
    # 2026-11-01 01:30 happens twice: the first one, EDT (-04:00).
    assert clock.parse_when("2026-11-01 01:30", "America/New_York", NOW) == utc("2026-11-01 05:30")


def test_unreadable_time(cli):
    cli("users", "add", "u")
    result = cli("campaigns", "create", "u", "--message", "x", "--at", "amanhã cedo", code=2)
    assert result.stderr.startswith("error: cannot read the time 'amanhã cedo': use e.g.")


def test_a_time_in_the_past_is_a_typo_unless_allowed(cli, tmp_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP])
    result = cli("campaigns", "create", "u", "--message", "x", "--at", "2026-11-25 08:00", "--now", "2026-11-25T12:00Z", code=2)
    assert result.stderr.strip() == ("error: --at '2026-11-25 08:00' is 2026-11-25T08:00-03:00, in the past; "
                                     "check the date, or pass --allow-past to send it now")
    assert cli.json("campaigns", "list") == []
    report = cli.json("campaigns", "create", "u", "--message", "x", "--at", "2026-11-25 08:00",
                      "--now", "2026-11-25T12:00Z", "--allow-past")
    assert report["recipients"] == 1


def test_quiet_hours_in_the_recipients_zone(cli, tmp_path, db_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP, MANAUS, NY])
    # 07:30 in Sao Paulo is 06:30 in Manaus and 05:30 in New York: all three wait for 08:00 local.
    report = cli.json("campaigns", "create", "u", "--message", "Oi {name}", "--at", "2026-11-26 07:30", "--now", "@%d" % NOW)
    assert report["moved_by_quiet_hours"] == 3
    assert schedule(db_path, report["id"]) == {
        SP: utc("2026-11-26 11:00"), MANAUS: utc("2026-11-26 12:00"), NY: utc("2026-11-26 13:00"),
    }
    # 21:30 in Sao Paulo: fine there and in Manaus (20:30); 19:30 in New York, fine too.
    late = cli.json("campaigns", "create", "u", "--message", "x", "--at", "2026-11-26 21:30", "--now", "@%d" % NOW)
    assert late["moved_by_quiet_hours"] == 0
    # 22:30 in Sao Paulo: the Sao Paulo lead waits for tomorrow 08:00; Manaus (21:30) goes now.
    later = cli.json("campaigns", "create", "u", "--message", "x", "--at", "2026-11-26 22:30", "--now", "@%d" % NOW)
    assert later["moved_by_quiet_hours"] == 1
    times = schedule(db_path, later["id"])
    assert times[SP] == utc("2026-11-27 11:00") and times[MANAUS] == utc("2026-11-27 01:30")


def test_a_window_that_crosses_midnight(cli, tmp_path, db_path):
    cli("users", "add", "bar", "--quiet-hours", "20:00-02:00")
    add_leads(cli, tmp_path, "bar", [SP])
    at_one = cli.json("campaigns", "create", "bar", "--message", "x", "--at", "2026-11-27 01:00", "--now", "@%d" % NOW)
    assert at_one["moved_by_quiet_hours"] == 0
    at_three = cli.json("campaigns", "create", "bar", "--message", "x", "--at", "2026-11-27 03:00", "--now", "@%d" % NOW)
    assert schedule(db_path, at_three["id"])[SP] == utc("2026-11-27 23:00")  # 20:00 in Sao Paulo


def test_us_sender_window_and_dst_change(cli, tmp_path, db_path):
    cli("users", "add", "deli", "--tz", "America/New_York", "--region", "US", "--quiet-hours", "08:00-21:00")
    add_leads(cli, tmp_path, "deli", [NY])
    # Saturday 2026-10-31 21:30 EDT is outside: it moves to Sunday 08:00, which is EST after the change.
    report = cli.json("campaigns", "create", "deli", "--message", "x", "--at", "2026-10-31 21:30", "--now", "2026-10-30T12:00Z")
    assert schedule(db_path, report["id"])[NY] == utc("2026-11-01 13:00")


def test_report_keys_counts_and_optouts(cli, tmp_path):
    cli("users", "add", "u")
    cli("users", "add", "other")
    add_leads(cli, tmp_path, "u", [SP, MANAUS, "+5521999990000", "+5531988887777"])
    cli("optout", "add", MANAUS)                       # everyone's
    cli("optout", "add", "+5521999990000", "--user", "u")  # u's only
    cli("optout", "add", "+5531988887777", "--user", "other")  # not u's: still a recipient
    report = cli.json("campaigns", "create", "u", "--message", "Promoção para {name}!", "--at", "2026-11-26 10:00", "--now", "@%d" % NOW)
    assert {k: report[k] for k in ("recipients", "suppressed", "moved_by_quiet_hours", "encoding",
                                   "segments_per_message", "total_segments")} == {
        "recipients": 2, "suppressed": 2, "moved_by_quiet_hours": 0, "encoding": "UCS-2",
        "segments_per_message": 1, "total_segments": 2}
    assert isinstance(report["id"], int)


def test_long_accented_message_warns_and_gsm7_halves_the_cost(cli, tmp_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP])
    text = "Promoção de pão quentinho: só hoje, às 18h, na padaria do João. Não perca! " * 2
    result = cli("campaigns", "create", "u", "--message", text, "--at", "+1h", "--now", "@%d" % NOW, "--json")
    assert "force UCS-2: 3 segments per message instead of 1; --gsm7 transliterates them" in result.stderr
    cheap = cli.json("campaigns", "create", "u", "--message", text, "--at", "+1h", "--now", "@%d" % NOW, "--gsm7")
    assert (cheap["encoding"], cheap["segments_per_message"]) == ("GSM-7", 1)


def test_a_placeholder_no_lead_has_lists_the_fields(cli, tmp_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP])
    result = cli("campaigns", "create", "u", "--message", "Oi {bairro}", "--at", "+1h", code=2)
    assert result.stderr.strip() == ("error: no lead of u has {bairro}; the fields available are: {cidade} "
                                     "(plus {name} and {phone}); or give a fallback: {field|text}")
    assert cli.json("campaigns", "list") == []
    ok = cli.json("campaigns", "create", "u", "--message", "Oi {bairro|vizinho}", "--at", "+1h")
    assert ok["recipients"] == 1


def test_twilio_body_limit(cli, tmp_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP])
    result = cli("campaigns", "create", "u", "--message", "a" * 1601, "--at", "+1h", code=2)
    assert "is 1601 characters; providers accept at most 1600" in result.stderr


def test_whatsapp_needs_a_template_or_the_session_flag(cli, tmp_path, db_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP])
    result = cli("campaigns", "create", "u", "--channel", "whatsapp", "--message", "oi", "--at", "+1h", code=2)
    assert "WhatsApp campaigns need an approved template" in result.stderr
    report = cli.json("campaigns", "create", "u", "--channel", "whatsapp", "--template", "promo", "--lang", "pt_BR",
                      "--param", "nome", "--param", "cidade", "--at", "+1h")
    assert report["recipients"] == 1
    db = storage.connect(db_path)
    body, params = db.conn.execute("SELECT body, params FROM messages WHERE campaign_id = ?", (report["id"],)).fetchone()
    assert params == '["Lead 0", "Campinas"]' and body == "[promo/pt_BR] Lead 0 | Campinas"
    session = cli.json("campaigns", "create", "u", "--channel", "whatsapp", "--message", "oi", "--session", "--at", "+1h")
    assert session["recipients"] == 1


def test_repeating_campaign_materialises_ahead_and_shows_next_occurrences(cli, tmp_path, db_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP])
    report = cli.json("campaigns", "create", "u", "--message", "Bom dia", "--at", "2026-11-26 09:00",
                      "--repeat", "FREQ=DAILY;BYHOUR=9", "--now", "@%d" % NOW)
    # Materialised 48 h past the first occurrence (Thursday 09:00): Thursday, Friday and Saturday.
    assert report["occurrences"] == ["2026-11-26T12:00:00Z", "2026-11-27T12:00:00Z", "2026-11-28T12:00:00Z"]
    shown = cli.json("campaigns", "show", report["id"], "--now", "@%d" % NOW)
    assert shown["next_occurrences"][:3] == ["2026-11-26T12:00:00Z", "2026-11-27T12:00:00Z", "2026-11-28T12:00:00Z"]
    # Three days later a new lead and an opt-out exist; the next materialisation uses them.
    add_leads(cli, tmp_path, "u", [SP, MANAUS])
    cli("optout", "add", SP)
    db = storage.connect(db_path)
    assert campaigns.extend_repeating(db, NOW + 2 * 86400) == 0  # still more than a day ahead
    created = campaigns.extend_repeating(db, NOW + 3 * 86400)
    assert created == 2  # Sunday and Monday, Manaus only
    phones = db.conn.execute("SELECT phone, occurrence FROM messages WHERE occurrence > ? ORDER BY occurrence",
                             (utc("2026-11-28 12:00"),)).fetchall()
    assert phones == [(MANAUS, utc("2026-11-29 12:00")), (MANAUS, utc("2026-11-30 12:00"))]
    assert campaigns.extend_repeating(db, NOW + 3 * 86400) == 0  # idempotent


def test_invalid_rule(cli, tmp_path):
    cli("users", "add", "u")
    result = cli("campaigns", "create", "u", "--message", "x", "--at", "+1h", "--repeat", "FREQ=SOMETIMES", code=2)
    assert "invalid --repeat 'FREQ=SOMETIMES'" in result.stderr


def test_bulk_import_is_all_or_nothing_unless_skip_bad(cli, tmp_path):
    cli("users", "add", "a")
    cli("users", "add", "b")
    add_leads(cli, tmp_path, "a", [SP])
    add_leads(cli, tmp_path, "b", [MANAUS, NY])
    path = write_csv(tmp_path / "c.csv", [
        ["user", "at", "message", "channel", "priority", "name", "tz"],
        ["a", "2026-11-26 10:00", "Oi {name}", "sms", "urgent", "first", ""],
        ["ghost", "2026-11-26 10:00", "Oi", "", "", "", ""],
        ["b", "26/11/2026 11:00", "Olá", "", "low", "second", "America/Manaus"],
        ["b", "2026-11-26 11:00", "Olá", "", "whenever", "", ""],
    ])
    result = cli("campaigns", "import", path, "--now", "@%d" % NOW, code=2)
    assert f"{path}: line 3: no user 'ghost'" in result.stderr
    assert f"{path}: line 5: unknown priority 'whenever': use urgent, normal or low" in result.stderr
    assert result.stderr.strip().endswith("error: 2 bad row(s) in " + str(path) + "; nothing was created. "
                                          "Fix them, or pass --skip-bad to create the good rows")
    assert cli.json("campaigns", "list") == []
    report = cli.json("campaigns", "import", path, "--now", "@%d" % NOW, "--skip-bad")
    assert (report["campaigns"], report["messages"]) == (2, 3)
    listed = cli.json("campaigns", "list")
    assert [(c["user"], c["name"], c["status"], c["scheduled_at"]) for c in listed] == [
        ("a", "first", "scheduled", "2026-11-26T13:00:00Z"),
        ("b", "second", "scheduled", "2026-11-26T15:00:00Z"),
    ]
    assert listed[0]["counts"] == {"scheduled": 1} and listed[0]["scheduled"] == 1


def test_control_is_idempotent_and_refuses_the_impossible(cli, tmp_path, db_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP, MANAUS])
    cid = cli.json("campaigns", "create", "u", "--message", "x", "--at", "2026-11-26 10:00", "--now", "@%d" % NOW)["id"]
    assert cli.json("campaigns", "pause", cid)["messages_changed"] == 2
    assert cli.json("campaigns", "pause", cid)["messages_changed"] == 0
    assert cli.json("campaigns", "show", cid)["status"] == "paused"
    assert cli.json("campaigns", "resume", cid)["messages_changed"] == 2
    # One message is sent; rescheduling and cancelling leave it alone.
    db = storage.connect(db_path)
    db.conn.execute("UPDATE messages SET state = 'sent', sent_at = 1 WHERE phone = ?", (SP,))
    moved = cli.json("campaigns", "reschedule", cid, "--at", "2026-11-27 10:00", "--now", "@%d" % NOW)
    assert moved["messages_rescheduled"] == 1
    assert schedule(db_path, cid) == {SP: utc("2026-11-26 13:00"), MANAUS: utc("2026-11-27 13:00")}
    assert cli.json("campaigns", "cancel", cid)["messages_changed"] == 1
    assert cli.json("campaigns", "cancel", cid)["messages_changed"] == 0
    assert cli.json("campaigns", "show", cid)["counts"] == {"sent": 1, "cancelled": 1}
    result = cli("campaigns", "resume", cid, code=2)
    assert result.stderr.strip() == f"error: campaign {cid} is cancelled and cannot be resumed; create it again"
    assert cli("campaigns", "show", 999, code=2).stderr.strip() == "error: no campaign 999: see `smsched campaigns list`"


def test_preview_shows_rendered_messages(cli, tmp_path):
    cli("users", "add", "u")
    add_leads(cli, tmp_path, "u", [SP, MANAUS], extra={MANAUS: "Manaus"})
    cid = cli.json("campaigns", "create", "u", "--message", "Oi {name} de {cidade}", "--at", "2026-11-26 10:00", "--now", "@%d" % NOW)["id"]
    rows = cli.json("campaigns", "preview", cid, "--limit", "5")
    assert [(r["phone"], r["body"], r["recipient_local"]) for r in rows] == [
        (SP, "Oi Lead 0 de Campinas", "2026-11-26T10:00-03:00"),
        (MANAUS, "Oi Lead 1 de Manaus", "2026-11-26T09:00-04:00"),
    ]


def test_library_refuses_unknown_channel(db):
    from smsched import users

    owner = users.add(db, "u")
    with pytest.raises(UsageError, match="unknown channel 'fax'"):
        campaigns.create(db, owner, campaigns.CampaignSpec(at="+1h", message="x", channel="fax"), now=NOW)
