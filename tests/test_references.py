"""Numbers, zones and windows checked against libphonenumber's documented behaviour and the IANA
zones (issue: agree with the references). Times are fixed instants; nothing reads the machine clock.
"""

from datetime import datetime, timezone

import pytest

from smsched import phones, quiet_hours, storage
from tests.conftest import NOW, add_leads, write_csv

SP_MOBILE = "+5511987654321"


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def scheduled(db_path, campaign_id):
    db = storage.connect(db_path)
    try:
        return {phone: (at, state) for phone, at, state in db.conn.execute(
            "SELECT phone, scheduled_at, state FROM messages WHERE campaign_id = ?", (campaign_id,))}
    finally:
        db.conn.close()


# ---- 1. international prefixes ---------------------------------------------------------------

@pytest.mark.parametrize("typed, region, e164", [
    ("0021 1 650 253 0000", "BR", "+16502530000"),     # Brazil: 00 + carrier 21 (Embratel) + country
    ("0014 55 11 98765 4321", "BR", "+5511987654321"),  # 00 + carrier 14 + Brazil itself
    ("0012 1 650 253 0000", "BR", "+16502530000"),
    ("001 650 253 0000", "SG", "+16502530000"),          # Singapore carriers' prefixes 001, 008
    ("008 1 650 253 0000", "SG", "+16502530000"),
    ("0011 1 650 253 0000", "AU", "+16502530000"),       # Australia: 0011
    ("011 44 7911 123456", "US", "+447911123456"),       # North America: 011
    ("00 351 912 345 678", "PT", "+351912345678"),       # Portugal: 00
])
def test_international_prefixes_are_read_by_the_users_region(typed, region, e164):
    assert phones.normalize(typed, region).phone == e164


@pytest.mark.parametrize("typed, e164", [
    ("0044 7911 123456", "+447911123456"),   # 44 is no Brazilian carrier: read 00 as +
    ("00 55 11 98765 4321", "+5511987654321"),  # carrier 55 then country 1 is no number: 00 as +
    ("0041 79 123 45 67", "+41791234567"),   # carrier 41 then +7 9123... is no number: 00 as +
])
def test_00_is_read_as_plus_only_when_the_regions_rules_give_no_number(typed, e164):
    assert phones.normalize(typed, "BR").phone == e164


def test_a_number_no_reading_makes_valid_is_still_rejected_with_the_regions_reason():
    result = phones.normalize("0015 1 650 253 0000", "SG")  # 001 + Peru 5 1650..., or +15: neither
    assert result.phone is None and result.reason.startswith("too long")


# ---- 2. every zone the number may be in ------------------------------------------------------

@pytest.mark.parametrize("number, zones", [
    ("+351912345678", "Atlantic/Azores,Europe/Lisbon"),      # Portuguese mobile
    ("+34612345678", "Atlantic/Canary,Europe/Madrid"),       # Spanish mobile
    ("+447911123456", "Europe/Guernsey,Europe/Isle_of_Man,Europe/Jersey,Europe/London"),
    ("+34922123456", "Atlantic/Canary"),                     # a Tenerife landline: one zone
    ("+16502530000", "America/Los_Angeles"),
    (SP_MOBILE, "America/Sao_Paulo"),
])
def test_zones_are_libphonenumbers_list(number, zones):
    assert phones.normalize(number, "BR").tz == zones


def test_the_window_must_be_open_in_every_zone():
    window = quiet_hours.parse_window("08:00-22:00")
    madrid_or_canaries = "Atlantic/Canary,Europe/Madrid"
    # 00:30 UTC is 01:30 in Madrid and 00:30 in the Canaries: both wait; Madrid opens at 07:00 UTC
    # but the Canaries only at 08:00 UTC.
    assert quiet_hours.place(utc("2026-11-27 00:30"), madrid_or_canaries, window) == utc("2026-11-27 08:00")
    # 21:30 UTC: 22:30 in Madrid (closed) though 21:30 in the Canaries (open): wait for the morning.
    assert quiet_hours.place(utc("2026-11-26 21:30"), madrid_or_canaries, window) == utc("2026-11-27 08:00")
    assert quiet_hours.place(utc("2026-11-26 12:00"), madrid_or_canaries, window) == utc("2026-11-26 12:00")
    minutes = quiet_hours.LocalMinutes()
    assert not minutes.allows(window, madrid_or_canaries, utc("2026-11-26 21:30"))
    assert minutes.allows(window, "Atlantic/Canary", utc("2026-11-26 21:30"))
    assert minutes.allows(window, madrid_or_canaries, utc("2026-11-26 20:59"))


def test_windows_that_never_overlap_are_named():
    # 08:00-09:00 in Lisbon (UTC+0) is 08:00-09:00 UTC; in the Azores (UTC-1) 09:00-10:00 UTC.
    window = quiet_hours.parse_window("08:00-09:00")
    assert quiet_hours.place(utc("2026-11-26 12:00"), "Atlantic/Azores,Europe/Lisbon", window) is None


def test_a_campaign_waits_for_every_zone_and_the_preview_shows_them(cli, tmp_path, db_path):
    cli("users", "add", "loja")  # Sao Paulo, 08:00-22:00
    add_leads(cli, tmp_path, "loja", [SP_MOBILE, "+34612345678", "+351912345678"])
    # 21:30 in Sao Paulo (00:30 UTC): 01:30 in Madrid.
    report = cli.json("campaigns", "create", "loja", "--message", "Oi", "--at", "2026-11-26 21:30", "--now", "@%d" % NOW)
    times = scheduled(db_path, report["id"])
    assert times["+34612345678"][0] == utc("2026-11-27 08:00")     # 08:00 in the Canaries, 09:00 Madrid
    assert times["+351912345678"][0] == utc("2026-11-27 09:00")    # 08:00 in the Azores
    assert times[SP_MOBILE][0] == utc("2026-11-27 00:30")
    rows = {r["phone"]: r for r in cli.json("campaigns", "preview", report["id"])}
    spain = rows["+34612345678"]
    assert spain["zones"] == ["Atlantic/Canary", "Europe/Madrid"]
    assert spain["recipient_times"] == {"Atlantic/Canary": "2026-11-27T08:00+00:00",
                                        "Europe/Madrid": "2026-11-27T09:00+01:00"}
    text = cli("campaigns", "preview", report["id"]).stdout
    assert "Atlantic/Canary" in text and "Europe/Madrid" in text


def test_a_number_whose_zones_never_share_an_open_hour_is_counted_and_never_sent(cli, tmp_path, db_path):
    cli("users", "add", "loja", "--quiet-hours", "08:00-09:00")
    add_leads(cli, tmp_path, "loja", [SP_MOBILE, "+351912345678"])
    report = cli.json("campaigns", "create", "loja", "--message", "Oi", "--at", "2026-11-27 08:30", "--now", "@%d" % NOW)
    assert report["never_open"] == 1 and report["recipients"] == 2
    times = scheduled(db_path, report["id"])
    assert times["+351912345678"][1] == "expired" and times[SP_MOBILE][1] == "scheduled"


# ---- 3. where the library's zone data is wrong -----------------------------------------------

@pytest.mark.parametrize("number, library_says, zones", [
    ("+5581987654321", "America/Noronha", "America/Recife"),       # Recife mobile
    ("+558132345678", "America/Noronha", "America/Recife"),        # Recife landline
    ("+559333241234", "America/Manaus", "America/Santarem"),       # Santarém landline
    ("+559435231234", "America/Manaus", "America/Belem"),          # Marabá landline
    ("+5597991234567", "America/Manaus", "America/Manaus,America/Eirunepe"),  # western Amazonas
])
def test_each_override_corrects_the_library(number, library_says, zones):
    import phonenumbers
    from phonenumbers import timezone as library_zones

    assert library_zones.time_zones_for_number(phonenumbers.parse(number)) == (library_says,)
    assert phones.normalize(number, "BR").tz == zones


def test_every_override_is_a_valid_iana_zone_and_a_brazilian_prefix():
    from zoneinfo import ZoneInfo

    for prefix, zones in phones.ZONE_OVERRIDES.items():
        assert prefix.startswith("+55") and len(prefix) == 5
        for zone in zones:
            ZoneInfo(zone)


@pytest.mark.parametrize("ddd", ["11", "21", "31", "41", "51", "61", "71", "85", "91", "92", "68"])
def test_area_codes_where_the_library_is_right_are_left_alone(ddd):
    import phonenumbers
    from phonenumbers import timezone as library_zones

    number = f"+55{ddd}991234567"
    assert phones.normalize(number, "BR").tz == ",".join(library_zones.time_zones_for_number(phonenumbers.parse(number)))


def test_recife_mornings_and_evenings_are_recifes(cli, tmp_path, db_path):
    cli("users", "add", "loja")
    add_leads(cli, tmp_path, "loja", ["+5581987654321"])
    # 07:30 in Sao Paulo is 07:30 in Recife (08:30 in Noronha): it waits for 08:00 Recife.
    morning = cli.json("campaigns", "create", "loja", "--message", "Oi", "--at", "2026-11-26 07:30", "--now", "@%d" % NOW)
    assert scheduled(db_path, morning["id"])["+5581987654321"][0] == utc("2026-11-26 11:00")
    # 21:30 in Recife is allowed (22:30 in Noronha would not be).
    evening = cli.json("campaigns", "create", "loja", "--message", "Oi", "--at", "2026-11-26 21:30", "--now", "@%d" % NOW)
    assert scheduled(db_path, evening["id"])["+5581987654321"][0] == utc("2026-11-27 00:30")


# ---- 5. landlines ----------------------------------------------------------------------------

LANDLINE = "+551132345678"  # a Sao Paulo fixed line


def test_landlines_are_counted_and_left_out_of_sms_unless_asked(cli, tmp_path, db_path):
    cli("users", "add", "loja")
    path = write_csv(tmp_path / "l.csv", [["nome", "telefone"], ["Ana", SP_MOBILE], ["Loja", "(11) 3234-5678"],
                                          ["Bia", "+1 650 253 0000"]])  # US: fixed line or mobile, kept
    result = cli("leads", "import", "loja", path, "--json")
    assert '"landlines": 1' in result.stdout
    assert "landlines: 1" in cli("leads", "import", "loja", path).stderr
    sms = cli.json("campaigns", "create", "loja", "--message", "Oi", "--at", "+1h", "--now", "@%d" % NOW)
    assert (sms["recipients"], sms["not_mobile"]) == (2, 1)
    assert LANDLINE not in scheduled(db_path, sms["id"])
    everyone = cli.json("campaigns", "create", "loja", "--message", "Oi", "--at", "+1h", "--now", "@%d" % NOW,
                        "--include-landlines")
    assert (everyone["recipients"], everyone["not_mobile"]) == (3, 0)
    whatsapp = cli.json("campaigns", "create", "loja", "--channel", "whatsapp", "--template", "promo", "--lang", "pt_BR", "--at", "+1h",
                        "--now", "@%d" % NOW)
    assert (whatsapp["recipients"], whatsapp["not_mobile"]) == (3, 0)


def test_retry_failed_leaves_permanent_refusals_unless_asked(cli, tmp_path, db_path):
    cli("users", "add", "loja")
    add_leads(cli, tmp_path, "loja", [SP_MOBILE, "+5511987650001", "+5511987650002"])
    cid = cli.json("campaigns", "create", "loja", "--message", "Oi", "--at", "+1h", "--now", "@%d" % NOW)["id"]
    db = storage.connect(db_path)
    with db.conn:
        db.conn.execute("UPDATE messages SET state = 'failed', error = '21614: not a mobile number' WHERE phone = ?", (SP_MOBILE,))
        db.conn.execute("UPDATE messages SET state = 'failed', error = '21211: invalid To' WHERE phone = '+5511987650001'")
        db.conn.execute("UPDATE messages SET state = 'failed', error = 'gave up after 5 attempts: 503' WHERE phone = '+5511987650002'")
    result = cli.json("retry", "--failed", "--now", "@%d" % NOW)
    assert (result["requeued"], result["left_permanent"]) == (1, 2)
    states = {p: s for p, s in db.conn.execute("SELECT phone, state FROM messages WHERE campaign_id = ?", (cid,))}
    assert states == {SP_MOBILE: "failed", "+5511987650001": "failed", "+5511987650002": "scheduled"}
    assert "left 2 permanent failure(s) alone" in cli("retry", "--failed", "--now", "@%d" % NOW).stderr
    assert cli.json("retry", "--failed", "--include-permanent", "--now", "@%d" % NOW)["requeued"] == 2
    db.conn.close()


# ---- 4. a campaign whose bodies mix encodings ------------------------------------------------

def test_a_mix_of_encodings_is_reported_exactly(cli, tmp_path):
    cli("users", "add", "loja")
    phones_ = [f"+55119876500{i:02d}" for i in range(5)]
    cities = {phones_[0]: "São Paulo", phones_[1]: "Maringá", phones_[2]: "Campinas", phones_[3]: "Santos",
              phones_[4]: "Jundiaí"}
    add_leads(cli, tmp_path, "loja", phones_, extra=cities)
    report = cli.json("campaigns", "create", "loja", "--message", "Oferta em {cidade}! " + "x" * 60, "--at", "+1h",
                      "--now", "@%d" % NOW)
    # São Paulo (ã) and Maringá, Jundiaí (á, í) are UCS-2; Campinas and Santos GSM-7.
    assert report["encoding"] == "UCS-2"
    assert report["segments_per_message"] == 2  # 83 UCS-2 characters
    assert report["encodings"] == {"GSM-7": {"messages": 2, "segments": 2}, "UCS-2": {"messages": 3, "segments": 6}}
    assert report["total_segments"] == 8


# ---- the same answers from the command line ---------------------------------------------------

def test_lookup_shows_what_smsched_makes_of_each_number(cli):
    rows = cli.json("lookup", "0021 1 650 253 0000", "(81) 98765-4321", "(11) 3234-5678")
    assert [(r["phone"], r["zones"], r["line_type"], r["sms"]) for r in rows] == [
        ("+16502530000", ["America/Los_Angeles"], "fixed_line_or_mobile", True),
        ("+5581987654321", ["America/Recife"], "mobile", True),
        ("+551132345678", ["America/Sao_Paulo"], "fixed_line", False),
    ]
    bad = cli("lookup", "123", "+5511987654321", code=2)
    assert "too short for region BR" in bad.stdout
    assert cli.json("lookup", "001 650 253 0000", "--region", "SG")[0]["phone"] == "+16502530000"
    assert cli("lookup", "1", "--region", "XX", code=2).stderr.startswith("error: unknown region 'XX'")


def test_segments_command_counts_as_the_calculator(cli):
    flag = cli.json("segments", "🇮🇹" + "2" * 67)
    assert (flag["encoding"], flag["characters"], flag["units"], flag["segments"]) == ("UCS-2", 68, 71, 2)
    assert flag["non_gsm7"] == ["🇮🇹"]
    assert cli.json("segments", "-", stdin="ação " * 40)["segments"] == 3
    assert cli.json("segments", "--gsm7", "-", stdin="ação " * 40) | {"non_gsm7": []} == {
        "encoding": "GSM-7", "characters": 200, "units": 200, "segments": 2, "non_gsm7": [], "too_long": False}


def test_valid_means_what_libphonenumber_says_in_every_region():
    """normalize() asks libphonenumber for a number's type once and takes "no type" as invalid,
    and finds the zones from that type: the same verdict as is_valid_number and the same zones as
    time_zones_for_number, checked on near-misses of every region's example numbers."""
    import random

    import phonenumbers
    from phonenumbers import PhoneNumberType
    from phonenumbers import timezone as library_zones

    rng = random.Random(11)
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            digits = list(str(example.national_number))
            for _ in range(4):
                variant = digits[:]
                variant[rng.randrange(len(variant))] = str(rng.randrange(10))
                typed = f"+{example.country_code}{''.join(variant[:len(variant) - rng.randrange(2)])}"
                number = phonenumbers.parse(typed, None)
                result = phones.normalize(typed, "BR")
                assert (result.phone is not None) == phonenumbers.is_valid_number(number), typed
                if result.phone is not None and not any(result.phone.startswith(p) for p in phones.ZONE_OVERRIDES):
                    library = [z for z in library_zones.time_zones_for_number(number) if z != "Etc/Unknown"]
                    assert result.tz == (",".join(library) or None), typed  # the zones as the library gives them
                checked += 1
    assert checked > 1500
