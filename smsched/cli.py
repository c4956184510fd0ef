"""The command line: options, a call into the library, rendering. Nothing else lives here."""

from __future__ import annotations

import math
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup

from smsched import campaigns as campaigns_lib
from smsched import leads as leads_lib
from smsched import optouts as optouts_lib
from smsched import output, redact, storage
from smsched import users as users_lib
from smsched.clock import iso_utc
from smsched.errors import ExitCode, SmschedError

_state: dict = {"traceback": False, "db": None, "now": None}


INT64_MAX = 2**63 - 1  # SQLite's integers: every whole number on the command line must fit


def _finite(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None):
    """A callback for float options: nan, inf and numbers out of range are input errors."""
    def check(value):
        if value is None:
            return value
        if not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number")
        if above is not None and value <= above:
            raise typer.BadParameter(f"{value:g}: give a number above {above:g}")
        if minimum is not None and value < minimum:
            raise typer.BadParameter(f"{value:g} is below {minimum:g}")
        if maximum is not None and value > maximum:
            raise typer.BadParameter(f"{value:g} is above {maximum:g}")
        return value
    return check


# Click's exceptions, from whichever click this typer uses (newer typers carry their own copy).
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_ClickUsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


MAX_DETAILS = 10  # lines shown before an error (bad rows of a file): enough to fix the first ones
CRON_COMMANDS = ("dispatch", "reconcile")  # their lines are log lines when there is no terminal
_ROOT_OPTIONS_WITH_VALUES = ("--db", "--now")


def _command_name(argv: list[str]) -> str | None:
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _ROOT_OPTIONS_WITH_VALUES:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


class _Group(TyperGroup):
    """Turns every smsched error into one line on stderr and its exit code, in one place."""

    def main(self, *args, **kwargs):
        """Click's own errors (no such option, not a number) get the same one line as ours."""
        output.cron_log.__init__()  # one command, one log (tests run many in one process)
        argv = list(kwargs.get("args") if kwargs.get("args") is not None else (args[0] if args else sys.argv[1:]))
        if _command_name(argv) in CRON_COMMANDS:
            output.cron_log.start()  # from the first line, option errors included
        if kwargs.pop("standalone_mode", True) is False:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except _ClickUsageError as exc:
            where = exc.ctx.command_path if getattr(exc, "ctx", None) else "smsched"
            output.err.print(f"error: {exc.format_message()} (see {where} --help)", markup=False)
            sys.exit(int(ExitCode.USAGE))
        except _ClickException as exc:
            output.err.print(f"error: {exc.format_message()}", markup=False)
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            output.err.print("interrupted; nothing half-written was kept", markup=False)
            sys.exit(int(ExitCode.CTRL_C))
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SmschedError as exc:
            if _state["traceback"]:
                raise
            for line in exc.details[:MAX_DETAILS]:
                output.err.print(line, markup=False)
            if len(exc.details) > MAX_DETAILS:
                output.err.print(f"... and {len(exc.details) - MAX_DETAILS} more", markup=False)
            output.err.print(f"error: {exc}", markup=False)
            raise typer.Exit(int(exc.exit_code)) from None
        except sqlite3.OperationalError as exc:
            if _state["traceback"]:
                raise
            hint = " (disk full?)" if "full" in str(exc) else ""
            output.err.print(f"error: database failure: {exc}{hint}", markup=False)
            raise typer.Exit(int(ExitCode.ERROR)) from None
        except KeyboardInterrupt:
            output.err.print("interrupted; nothing half-written was kept", markup=False)
            raise typer.Exit(int(ExitCode.CTRL_C)) from None


def _app(help_text: str) -> typer.Typer:
    return typer.Typer(
        cls=_Group,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


app = _app("Schedule SMS and WhatsApp campaigns for many accounts; send each message once, on time.")
users_app = _app("Users (tenants): the client accounts whose campaigns you run.")
leads_app = _app("Leads: each user's phone list.")
optout_app = _app("The do-not-contact list.")
app.add_typer(users_app, name="users")
app.add_typer(leads_app, name="leads")
app.add_typer(optout_app, name="optout")
campaigns_app = _app("Campaigns: a message for every lead of a user, at a time.")
app.add_typer(campaigns_app, name="campaigns")
messages_app = _app("Messages: who got what, when, and why not.")
app.add_typer(messages_app, name="messages")
sandbox_app = _app("A local provider on 127.0.0.1 for the demo, tests, staging and load tests.")
receipts_app = _app("Delivery receipts: a small HTTP receiver for the providers' status callbacks.")
app.add_typer(receipts_app, name="receipts")
app.add_typer(sandbox_app, name="sandbox")
config_app = _app("Provider configuration (smsched.toml and environment).")
app.add_typer(config_app, name="config")
db_app = _app("The database itself: move an SQLite one to PostgreSQL.")
app.add_typer(db_app, name="db")

ConfigOption = Annotated[Optional[Path], typer.Option("--config", envvar="SMSCHED_CONFIG", help="smsched.toml [env SMSCHED_CONFIG; default ./smsched.toml]")]

# --db is read here and at the root (`smsched --db X cmd` and `smsched cmd --db X`); the
# environment variable is looked at only when neither is given: a flag always wins.
DbOption = Annotated[
    Optional[str],
    typer.Option("--db", metavar="<path|url>",
                 help="SQLite file, or postgresql://user@host:port/dbname [env SMSCHED_DB; default ./smsched.db]"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
CampaignArg = Annotated[int, typer.Argument(help="The campaign's id (smsched campaigns list).", min=1, max=INT64_MAX)]
CampaignOption = Annotated[Optional[int], typer.Option("--campaign", help="Only this campaign (its id).", min=1, max=INT64_MAX)]


def limit_option(help_text: str = "At most this many (default: all)."):
    return typer.Option(help=help_text, min=0, max=INT64_MAX)


def _version(value: bool) -> None:
    if value:
        from smsched import __version__

        output.out.print(f"smsched {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    db: DbOption = None,
    now: Annotated[Optional[str], typer.Option("--now", help="Pretend it is this instant (tests, simulations); a command's own --now wins.")] = None,
    traceback: Annotated[bool, typer.Option("--traceback", help="Show the Python traceback on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    _state["traceback"] = traceback
    _state["db"] = db
    _state["now"] = now


def db_path(db: str | None) -> str:
    """The database a command uses: its own --db, else the root's --db, else $SMSCHED_DB, else ./smsched.db."""
    import os

    chosen = db if db is not None else _state["db"]
    if chosen is not None and not str(chosen).strip():
        raise _usage("--db is empty: give the database file, e.g. --db smsched.db")
    return str(chosen or os.environ.get("SMSCHED_DB") or storage.DEFAULT_DB)


def open_db(db: str | None, **kwargs):
    return storage.connect(db_path(db), **kwargs)


# ---- users -------------------------------------------------------------------------------


@users_app.command("add")
def users_add(
    name: str,
    tz: Annotated[str, typer.Option(help="IANA time zone of the user's schedules.")] = users_lib.DEFAULT_TZ,
    region: Annotated[str, typer.Option(help="Country for numbers written without +code.")] = users_lib.DEFAULT_REGION,
    sender: Annotated[Optional[str], typer.Option(help="Sender (From number or id) overriding the provider default.")] = None,
    quiet_hours: Annotated[str, typer.Option(help="Sending window in the recipient's time, HH:MM-HH:MM or off.")] = users_lib.DEFAULT_QUIET_HOURS,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Add a user (tenant)."""
    user = users_lib.add(open_db(db), name, tz=tz, region=region, sender=sender, quiet_hours=quiet_hours)
    if json_:
        output.emit_json(user)
    else:
        output.out.print(f"user {user['id']} {user['name']} ({user['tz']}, {user['region']})", markup=False)


@users_app.command("import")
def users_import(
    file: Annotated[str, typer.Argument(help="CSV with name, and optionally tz, region, sender, quiet_hours.")],
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Add many users from one CSV, in one transaction (existing names are left alone)."""
    result = users_lib.import_csv(open_db(db), file)
    if json_:
        output.emit_json(result)
    else:
        output.out.print(f"users: {result['created']} created, {result['existing']} already there", markup=False)


@users_app.command("list")
def users_list(db: DbOption = None, json_: JsonOption = False) -> None:
    """List users."""
    rows = users_lib.list_all(open_db(db, readonly=True))
    if json_:
        output.emit_json(rows)
        return
    output.table(
        None,
        ["id", "name", "tz", "region", "sender", "quiet hours"],
        [(u["id"], u["name"], u["tz"], u["region"], u["sender"], u["quiet_hours"]) for u in rows],
    )


# ---- leads -------------------------------------------------------------------------------


PhoneColumnOption = Annotated[Optional[str], typer.Option(help="Header of the phone column (default: detected).")]
NameColumnOption = Annotated[Optional[str], typer.Option(help="Header of the name column (default: detected).")]
DelimiterOption = Annotated[Optional[str], typer.Option(help="One of , ; tab | (default: detected).")]
EncodingOption = Annotated[Optional[str], typer.Option(help="File encoding (default: detected).")]
RejectsOption = Annotated[Optional[Path], typer.Option(help="Write rejected rows, with line and reason, to this CSV.")]


@leads_app.command("import")
def leads_import(
    user: str,
    file: Annotated[str, typer.Argument(help="CSV file, or - for standard input.")],
    phone_column: PhoneColumnOption = None,
    name_column: NameColumnOption = None,
    region: Annotated[Optional[str], typer.Option(help="Country for numbers without +code (default: the user's).")] = None,
    delimiter: DelimiterOption = None,
    encoding: EncodingOption = None,
    rejects: RejectsOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Import a user's leads from CSV: numbers normalised to E.164, duplicates merged."""
    database = open_db(db)
    owner = users_lib.get(database, user)
    with _byte_progress("importing", enabled=output.interactive() and not json_) as progress:
        report = leads_lib.import_leads(
            database, owner, file,
            phone_column=phone_column, name_column=name_column, region=region,
            delimiter=delimiter, encoding=encoding,
            rejects=str(rejects) if rejects else None, progress=progress,
        )
    _print_import(report, owner["name"], json_)


def _print_import(report, target: str, json_: bool) -> None:
    if json_:
        output.emit_json(report.as_dict())
        return
    output.out.print(
        f"{report.file} → {target}: {report.encoding}, delimiter {report.as_dict()['delimiter']!r}, "
        f"phone column {report.phone_column!r}, name column {report.name_column!r}", markup=False)
    columns = ["read", "imported", "updated", "duplicates", "invalid", "blank"]
    if report.unknown_user:
        columns.append("unknown_user")

    output.table(None, [c.replace("_", " ") for c in columns], [[getattr(report, c) for c in columns]])
    if report.fields:
        output.info(f"fields for templates: {', '.join('{' + f + '}' for f in report.fields)}")
    if report.landlines:
        output.info(f"landlines: {report.landlines} (an SMS campaign leaves them out unless --include-landlines)")
    if report.invalid_reasons:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(report.invalid_reasons.items(), key=lambda x: -x[1]))
        output.info(f"invalid: {reasons}" + (f" (rows in {report.rejects_file})" if report.rejects_file else "; --rejects FILE lists them"))


@leads_app.command("import-many")
def leads_import_many(
    file: Annotated[str, typer.Argument(help="CSV with a user column, or - for standard input.")],
    user_column: Annotated[Optional[str], typer.Option(help="Header of the column naming each row's user, by name or id (default: user, usuario, account, conta).")] = None,
    phone_column: PhoneColumnOption = None,
    name_column: NameColumnOption = None,
    delimiter: DelimiterOption = None,
    encoding: EncodingOption = None,
    rejects: RejectsOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Import leads for many users from one CSV (each number normalised with its user's region)."""
    database = open_db(db)
    with _byte_progress("importing", enabled=output.interactive() and not json_) as progress:
        report = leads_lib.import_leads_many(
            database, file, user_column=user_column, phone_column=phone_column, name_column=name_column,
            delimiter=delimiter, encoding=encoding, rejects=str(rejects) if rejects else None, progress=progress,
        )
    _print_import(report, f"{report.users} users", json_)


class _byte_progress:
    """A progress bar on stderr for long imports, only on a terminal."""

    def __init__(self, label: str, enabled: bool):
        self.enabled, self.label, self.bar, self.task = enabled, label, None, None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                            TimeRemainingColumn(), console=output.err, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=None)
        return self.update

    def update(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()


@leads_app.command("list")
def leads_list(
    user: str,
    limit: Annotated[Optional[int], limit_option()] = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """List a user's leads."""
    database = open_db(db, readonly=True)
    rows = leads_lib.list_leads(database, users_lib.get(database, user), limit)
    if json_:
        output.emit_json(rows)
        return
    output.table(None, ["phone", "name", "time zone(s)", "line", "fields"],
                 [(r["phone"], r["name"], (r["tz"] or "").replace(",", "\n"), (r["line_type"] or "").replace("_", " "),
                   ", ".join(f"{k}={v}" for k, v in r["fields"].items())) for r in rows])


# ---- opt-outs ----------------------------------------------------------------------------

UserOption = Annotated[Optional[str], typer.Option("--user", help="Only for this user (default: every user).")]


@optout_app.command("add")
def optout_add(
    phones: Annotated[list[str], typer.Argument(help="Numbers, as typed.")],
    user: UserOption = None,
    reason: Annotated[Optional[str], typer.Option(help="Why (e.g. 'replied STOP', 'asked by phone').")] = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Add numbers to the do-not-contact list."""
    database = open_db(db)
    owner = users_lib.get(database, user) if user else None
    result = optouts_lib.add(database, phones, user=owner, reason=reason)
    _print_optout_result(result, json_)


def _print_optout_result(result: dict, json_: bool) -> None:
    if json_:
        output.emit_json(result)
        return
    output.out.print(
        f"opted out: {result['added']} added, {result['already']} already listed, "
        f"{result['suppressed_messages']} scheduled messages suppressed", markup=False)
    for bad in result.get("invalid", []):
        output.warn(f"line {bad['line']}: {bad['value']!r} skipped: {bad['reason']}")


@optout_app.command("import")
def optout_import(
    file: str,
    user: UserOption = None,
    reason: Annotated[Optional[str], typer.Option(help="Why these numbers opted out.")] = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Add every number in a CSV file (a phone column, or one number per line)."""
    database = open_db(db)
    owner = users_lib.get(database, user) if user else None
    _print_optout_result(optouts_lib.import_file(database, file, user=owner, reason=reason), json_)


@optout_app.command("list")
def optout_list(user: UserOption = None, db: DbOption = None, json_: JsonOption = False) -> None:
    """List opt-outs (with --user: those that apply to that user)."""
    database = open_db(db, readonly=True)
    rows = optouts_lib.list_all(database, user=users_lib.get(database, user) if user else None)
    for row in rows:
        row["created_at"] = iso_utc(row["created_at"])
    if json_:
        output.emit_json(rows)
        return
    output.table(None, ["phone", "user", "reason", "source", "when (UTC)"],
                 [(r["phone"], r["user"] or "(all)", r["reason"], r["source"], r["created_at"]) for r in rows])


@optout_app.command("remove")
def optout_remove(phones: list[str], user: UserOption = None, db: DbOption = None) -> None:
    """Remove numbers from the list (messages already suppressed stay suppressed)."""
    database = open_db(db)
    removed = optouts_lib.remove(database, phones, user=users_lib.get(database, user) if user else None)
    output.out.print(f"removed {removed} opt-out(s)", markup=False)


# ---- campaigns ---------------------------------------------------------------------------

NowOption = Annotated[Optional[str], typer.Option("--now", help="Pretend it is this instant (tests, simulations).")]


def _now(text: str | None, tz: str = "UTC") -> float | None:
    """The instant --now names (the command's own, else the root's), read in ``tz``; None: the real clock."""
    text = text if text is not None else _state["now"]
    if text is None:
        return None
    from smsched.clock import parse_when
    import time

    return float(parse_when(text, tz, time.time(), what="--now"))


def _clock(text: str | None):
    """The one clock a command runs on: the machine's, or started at --now and advancing from there."""
    from smsched.clock import Clock

    return Clock(_now(text))


@campaigns_app.command("create")
def campaigns_create(
    user: str,
    at: Annotated[str, typer.Option("--at", help="When: '2026-11-26 09:00', '26/11/2026 09:00', now, +15m, +2h, +1d.")],
    message: Annotated[Optional[str], typer.Option("--message", help="Text, with {field} and {field|fallback} placeholders.")] = None,
    name: Annotated[Optional[str], typer.Option("--name")] = None,
    channel: Annotated[str, typer.Option(help="sms or whatsapp.")] = "sms",
    priority: Annotated[str, typer.Option(help="urgent, normal or low.")] = "normal",
    tz: Annotated[Optional[str], typer.Option(help="Time zone of --at (default: the user's).")] = None,
    quiet_hours: Annotated[Optional[str], typer.Option(help="Sending window in the recipient's time, HH:MM-HH:MM or off (default: the user's).")] = None,
    repeat: Annotated[Optional[str], typer.Option(help="RFC 5545 rule, e.g. FREQ=WEEKLY;BYDAY=MO;BYHOUR=9.")] = None,
    valid_for: Annotated[Optional[str], typer.Option(help="Expire a message not sent this long after its time (default 6h).")] = None,
    gsm7: Annotated[bool, typer.Option("--gsm7", help="Transliterate to GSM-7 (ç→c, ã→a) to keep SMS cheap.")] = False,
    template: Annotated[Optional[str], typer.Option(help="WhatsApp: approved template name.")] = None,
    lang: Annotated[Optional[str], typer.Option(help="WhatsApp: template language, e.g. pt_BR.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="WhatsApp: lead field for each body parameter, in order.")] = None,
    session: Annotated[bool, typer.Option("--session", help="WhatsApp: free text inside the 24-hour service window.")] = False,
    allow_past: Annotated[bool, typer.Option("--allow-past", help="Accept an --at in the past (sends at once).")] = False,
    include_landlines: Annotated[bool, typer.Option("--include-landlines", help="SMS: send to numbers typed as landlines too (most networks cannot deliver them).")] = False,
    now: NowOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Schedule a campaign: one message per lead of USER."""
    database = open_db(db)
    owner = users_lib.get(database, user)
    spec = campaigns_lib.CampaignSpec(
        at=at, message=message, name=name, channel=channel, priority=priority, tz=tz,
        quiet_hours=quiet_hours, repeat=repeat, valid_for=valid_for, gsm7=gsm7, template=template,
        lang=lang, params=param or [], session=session, allow_past=allow_past, include_landlines=include_landlines,
    )
    report = campaigns_lib.create(database, owner, spec, now=_now(now, owner["tz"]))
    for warning in report["warnings"]:
        output.warn(warning)
    if json_:
        output.emit_json(report)
        return
    if report["channel"] == "sms":
        mix = report["encodings"]
        cost = (f"{report['encoding']}, {report['segments_per_message']} segment(s) per message, "
                f"{report['total_segments']} in all")
        if len(mix) > 1:
            cost += " (" + ", ".join(f"{m['messages']} {name} messages: {m['segments']} segments"
                                     for name, m in sorted(mix.items())) + ")"
    else:
        cost = "WhatsApp"
    extra = f"{report['not_mobile']} landline(s) left out (--include-landlines sends to them); " if report["not_mobile"] else ""
    if report["never_open"]:
        extra += f"{report['never_open']} never sendable (their time zones' windows do not overlap); "
    output.out.print(
        f"campaign {report['id']} {report['name']!r}: {report['recipients']} recipients at "
        f"{report['scheduled_local']} ({report['scheduled_at']}); {report['suppressed']} opted out; "
        f"{extra}{report['moved_by_quiet_hours']} moved by quiet hours; {cost}", markup=False)


@campaigns_app.command("import")
def campaigns_import(
    file: Annotated[str, typer.Argument(help="CSV with user, at, message [, channel, priority, name, tz, ...].")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Create the good rows even if some are bad.")] = False,
    now: NowOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Create many campaigns from one CSV, in one transaction."""
    report = campaigns_lib.import_csv(open_db(db), file, skip_bad=skip_bad, now=_now(now))
    for line in report["bad"]:
        output.warn(f"skipped {line}")
    if report["ignored_columns"]:
        output.warn(f"ignored columns: {', '.join(report['ignored_columns'])}")
    if json_:
        output.emit_json({k: v for k, v in report.items() if k != "ids"} | {"ids": report["ids"]})
        return
    output.out.print(
        f"created {report['campaigns']} campaigns, {report['messages']} messages "
        f"({report['suppressed']} opted out, {report['moved_by_quiet_hours']} moved by quiet hours)", markup=False)


@campaigns_app.command("list")
def campaigns_list(
    user: Annotated[Optional[str], typer.Option("--user")] = None,
    status: Annotated[Optional[str], typer.Option(help="scheduled, sending, completed, paused or cancelled.")] = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """List campaigns with their message counts."""
    if status and status not in campaigns_lib.STATUSES:
        raise _usage(f"unknown status {status!r}: use one of {', '.join(campaigns_lib.STATUSES)}")
    database = open_db(db, readonly=True)
    rows = campaigns_lib.list_campaigns(database, user=users_lib.get(database, user) if user else None, status=status)
    if json_:
        output.emit_json(rows)
        return
    output.table(None, ["id", "user", "name", "channel", "status", "at (local)", "total", "scheduled", "sent", "failed"],
                 [(r["id"], r["user"], r["name"], r["channel"], r["status"], r["scheduled_local"], r["total"],
                   r["scheduled"], r["sent"], r["failed"]) for r in rows])


@campaigns_app.command("show")
def campaigns_show(campaign: CampaignArg, now: NowOption = None, db: DbOption = None, json_: JsonOption = False) -> None:
    """A campaign's details, counts per state and next occurrences."""
    data = campaigns_lib.show(open_db(db, readonly=True), campaign, now=_now(now))
    if json_:
        output.emit_json(data)
        return
    for key in ("id", "user", "name", "channel", "priority", "status", "scheduled_local", "tz", "quiet_hours",
                "repeat", "template", "message", "encoding", "segments_per_message", "pending_from", "pending_until"):
        if data.get(key) is not None:
            output.out.print(f"{key:>22}: {data[key]}", markup=False)
    output.out.print(f"{'messages':>22}: " + ", ".join(f"{s} {n}" for s, n in sorted(data["counts"].items())), markup=False)
    for when in data["next_occurrences"]:
        output.out.print(f"{'next':>22}: {when}", markup=False)


@campaigns_app.command("preview")
def campaigns_preview(campaign: CampaignArg, limit: Annotated[int, limit_option("How many messages.")] = 5, db: DbOption = None, json_: JsonOption = False) -> None:
    """The first rendered messages, exactly as they will be sent."""
    rows = campaigns_lib.preview(open_db(db, readonly=True), campaign, limit=limit)
    if json_:
        output.emit_json(rows)
        return
    output.table(None, ["phone", "recipient time", "state", "cost", "body"],
                 [(r["phone"], "\n".join(f"{t} {z}" if len(r["zones"]) > 1 else t for z, t in r["recipient_times"].items()),
                   r["state"],
                   f"{r['encoding']} ×{r['segments']}" if r["encoding"] else "", r["body"]) for r in rows])


def _control(action):
    def command(campaign: CampaignArg, db: DbOption = None, json_: JsonOption = False) -> None:
        result = getattr(campaigns_lib, action)(open_db(db), campaign)
        if json_:
            output.emit_json(result)
        else:
            output.out.print(f"campaign {result['id']}: {result['status']} (was {result['was']}; "
                             f"{result['messages_changed']} messages changed)", markup=False)
    command.__doc__ = {"pause": "Pause: nothing more is sent until resume.",
                       "resume": "Resume a paused campaign.",
                       "cancel": "Cancel the messages not yet sent (sent ones are untouched)."}[action]
    return command


for _action in ("pause", "resume", "cancel"):
    campaigns_app.command(_action)(_control(_action))


@campaigns_app.command("reschedule")
def campaigns_reschedule(
    campaign: CampaignArg,
    at: Annotated[str, typer.Option("--at")],
    allow_past: Annotated[bool, typer.Option("--allow-past")] = False,
    now: NowOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Move the messages not yet sent to a new time (quiet hours applied again)."""
    result = campaigns_lib.reschedule(open_db(db), campaign, at, allow_past=allow_past, now=_now(now))
    if json_:
        output.emit_json(result)
    else:
        output.out.print(f"campaign {result['id']}: {result['messages_rescheduled']} messages now at "
                         f"{result['scheduled_local']}", markup=False)


# ---- what smsched makes of a number or a text -------------------------------------------


@app.command()
def lookup(
    numbers: Annotated[list[str], typer.Argument(help="Numbers, as typed.")],
    region: Annotated[str, typer.Option(help="Country whose dialling rules read numbers without +.")] = users_lib.DEFAULT_REGION,
    json_: JsonOption = False,
) -> None:
    """How smsched reads numbers: E.164, the recipient's time zone(s), the line type (exit 2 if any is invalid)."""
    from smsched import phones

    region_code = phones.check_region(region)
    rows = []
    for typed in numbers:
        result = phones.normalize(typed, region_code)
        rows.append({"typed": typed, "phone": result.phone, "valid": result.phone is not None,
                     "zones": result.tz.split(",") if result.tz else [], "line_type": result.line_type,
                     "sms": result.phone is not None and result.line_type != phones.LANDLINE, "reason": result.reason})
    if json_:
        output.emit_json(rows)
    else:
        output.table(None, ["typed", "E.164", "time zone(s)", "line", "note"], [
            (r["typed"], r["phone"] or "", "\n".join(r["zones"]), (r["line_type"] or "").replace("_", " "),
             r["reason"] or ("" if r["sms"] else "landline: SMS campaigns leave it out")) for r in rows])
    if not all(r["valid"] for r in rows):
        raise typer.Exit(int(ExitCode.USAGE))


@app.command("segments")
def segments_command(
    text: Annotated[str, typer.Argument(help="The message text; - reads it from standard input.")],
    gsm7: Annotated[bool, typer.Option("--gsm7", help="Transliterate to GSM-7 first, as campaigns create --gsm7 does.")] = False,
    json_: JsonOption = False,
) -> None:
    """What a text costs as SMS: encoding, characters and segments, counted as Twilio bills them."""
    from smsched import segments

    body = sys.stdin.read() if text == "-" else text
    if gsm7:
        body = segments.to_gsm7(body)
    cost = segments.cost(body)
    result = {"encoding": cost.encoding, "characters": len(segments.graphemes(body)), "units": cost.units,
              "segments": cost.segments, "non_gsm7": segments.non_gsm7_chars(body),
              "too_long": len(body) > segments.TWILIO_MAX_BODY}
    if json_:
        output.emit_json(result)
        return
    unit = "septets" if cost.encoding == "GSM-7" else "UTF-16 units"
    output.out.print(f"{cost.encoding}: {result['characters']} characters, {cost.units} {unit}, "
                     f"{cost.segments} segment(s)", markup=False)
    if result["non_gsm7"] and not gsm7:
        output.info("not in GSM-7: " + " ".join(result["non_gsm7"][:20]) + " (--gsm7 transliterates them)")
    if result["too_long"]:
        output.warn(f"longer than Twilio's {segments.TWILIO_MAX_BODY}-character limit")


# ---- dispatch ----------------------------------------------------------------------------


@app.command()
def dispatch(
    provider: Annotated[Optional[str], typer.Option(help="Send every channel it can carry through this provider.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Concurrent requests, 1-1024 (default [dispatch] workers, 32).", max=INT64_MAX)] = None,
    rate: Annotated[Optional[float], typer.Option(help="Messages/second per provider, overriding the configuration.")] = None,
    time_budget: Annotated[str, typer.Option(help="Keep sending what falls due for this long, then exit (0: only what is due now).")] = "55s",
    max_campaigns: Annotated[Optional[int], typer.Option(help="Cycle mode: at most N campaigns this run.", max=INT64_MAX)] = None,
    max_per_campaign: Annotated[Optional[int], typer.Option(help="Cycle mode: at most N messages per campaign.", max=INT64_MAX)] = None,
    parallel: Annotated[Optional[int], typer.Option(help="Cycle mode: campaigns sent at a time.", max=INT64_MAX)] = None,
    batch_delay: Annotated[str, typer.Option(help="Cycle mode: pause between batches, e.g. 200ms.")] = "0ms",
    batch: Annotated[Optional[int], typer.Option(help="Messages per claim (default: about 10 s of sending, at most [dispatch] batch).", max=INT64_MAX)] = None,
    lease: Annotated[str, typer.Option(help="How long a claim is held before another run may recover it.")] = "5m",
    concurrent: Annotated[bool, typer.Option("--concurrent", help="Share the work with dispatchers already running.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent now; change nothing.")] = False,
    now: NowOption = None,
    config: ConfigOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Send every message that is due (run it from cron every minute)."""
    from smsched import config as config_lib
    from smsched import dispatch as dispatch_lib
    from smsched.clock import parse_duration

    output.cron_log.start()
    # Everything is checked before the database is opened: a bad option changes nothing.
    options = dispatch_lib.DispatchOptions(
        provider=provider, workers=workers, rate=rate, time_budget=parse_duration(time_budget, what="--time-budget"),
        max_campaigns=max_campaigns, max_per_campaign=max_per_campaign, parallel=parallel,
        batch_delay=parse_duration(batch_delay, what="--batch-delay"), lease=parse_duration(lease, what="--lease"),
        concurrent=concurrent, batch=batch,
    ).validate()
    clock = _clock(now)
    if dry_run:
        result = dispatch_lib.preview_due(open_db(db, readonly=True), now=clock.now())
        if json_:
            output.emit_json(result)
            return
        output.out.print(f"{result['due']} message(s) due at {result['now']}", markup=False)
        output.table(None, ["campaign", "user", "due", "oldest due"],
                     [(f"{c['campaign_id']} {c['campaign']}", c["user"], c["due"], c["oldest_due"]) for c in result["campaigns"]])
        for m in result["first"]:
            output.out.print(f"  {m['phone']} [{m['channel']}] {m['body']}", markup=False)
        return
    settings = config_lib.load(config)
    if provider:
        settings.provider(provider)  # an unknown name is refused before anything is opened
    statements = [0]

    def count(_sql: str) -> None:
        statements[0] += 1

    database = open_db(db, trace=count)
    from smsched.progress import DispatchDisplay

    display = DispatchDisplay(database, clock.now() if clock.simulated else None, enabled=not json_)
    with display:
        summary = dispatch_lib.dispatch(database, db_path(db), settings, options, clock=clock,
                                        progress=display.event, statements=lambda: statements[0],
                                        per_campaign=display.live_mode)
    data = summary.as_dict()
    if json_:
        output.emit_json(data)
    else:
        display.final(summary)
    if summary.exit_code:
        raise typer.Exit(int(summary.exit_code))


@app.command()
def retry(
    unknown: Annotated[bool, typer.Option("--unknown", help="Requeue messages whose outcome is unknown (may resend).")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Requeue failed messages that ran out of retries.")] = False,
    include_permanent: Annotated[bool, typer.Option("--include-permanent", help="With --failed: also those the provider refused for good (21211 invalid number, 21614 landline, ...).")] = False,
    campaign: CampaignOption = None,
    now: NowOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Requeue unknown or failed messages on the operator's word."""
    from smsched import messages as messages_lib

    states = [s for s, on in (("unknown", unknown), ("failed", failed)) if on]
    result = messages_lib.retry(open_db(db), states=states, campaign=campaign, now=_now(now),
                                include_permanent=include_permanent)
    if json_:
        output.emit_json(result)
    else:
        output.out.print(f"requeued {result['requeued']} message(s) ({' and '.join(states)}) for {result['at']}", markup=False)
        if result.get("left_permanent"):
            output.info(f"left {result['left_permanent']} permanent failure(s) alone (no resend can fix them; "
                        "--include-permanent requeues them too)")


@app.command()
def reconcile(
    provider: Annotated[Optional[str], typer.Option(help="Only this provider's unknown messages.")] = None,
    older_than: Annotated[str, typer.Option(help="Only messages whose request left at least this long ago.")] = "0s",
    now: NowOption = None,
    config: ConfigOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Ask the provider whether it has each 'unknown' message: found -> sent, absent -> requeued (due now)."""
    from smsched import config as config_lib
    from smsched import reconcile as reconcile_lib
    from smsched.clock import parse_duration

    output.cron_log.start()
    age = parse_duration(older_than, what="--older-than")
    settings = config_lib.load(config)
    if provider:
        settings.provider(provider)  # an unknown name is refused before anything is opened
    result = reconcile_lib.reconcile(open_db(db), settings, providers=[provider] if provider else None, older_than=age,
                                     now=_now(now))
    if json_:
        output.emit_json(result.as_dict())
    else:
        if not result.providers:
            output.out.print("reconcile: no message is unknown", markup=False)
        for name, p in result.providers.items():
            line = (f"{name}: {p.checked} unknown checked, {p.sent} found sent, {p.requeued} requeued (absent), "
                    f"{p.unresolved} unresolved")
            if p.error:
                line += f" — provider error: {p.error}; nothing changed"
            elif p.detail:
                line += f" — {p.detail}"
            output.out.print(line, markup=False)
    if result.errors:
        raise typer.Exit(int(ExitCode.ERROR))


@receipts_app.command("serve")
def receipts_serve(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default [receipts] host, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default [receipts] port, 8788).", min=0, max=65535)] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Receive delivery receipts (Twilio status callbacks, WhatsApp webhooks) until SIGTERM."""
    import signal
    import threading

    from smsched import config as config_lib
    from smsched.receipts import ReceiptsServer

    output.cron_log.start()
    settings = config_lib.load(config)
    host = host or settings.receipts("host") or "127.0.0.1"
    port = port if port is not None else int(settings.receipts("port") or 8788)
    database = open_db(db)
    server = _listening(lambda: ReceiptsServer(database, settings, host=host, port=port), host, port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    public = settings.receipts("public_url")
    output.info(f"receipts: listening on {server.url}"
                + (f" (providers call {redact.url(public)})" if public else "")
                + "; POST /twilio/status, GET+POST /whatsapp; SIGTERM stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    output.info("receipts: stopped")


@messages_app.command("list")
def messages_list(
    campaign: CampaignOption = None,
    user: Annotated[Optional[str], typer.Option("--user")] = None,
    state: Annotated[Optional[str], typer.Option("--state")] = None,
    phone: Annotated[Optional[str], typer.Option("--phone", help="As typed; normalised with the user's region (BR without --user).")] = None,
    limit: Annotated[Optional[int], limit_option("At most N (default: all).")] = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Per message: campaign, user, phone, state, times, attempts, provider id, last error."""
    from smsched import messages as messages_lib
    from smsched import phones

    database = open_db(db, readonly=True)
    owner = users_lib.get(database, user) if user else None
    number = phones.normalize_or_fail(phone, owner["region"] if owner else "BR") if phone else None
    rows = messages_lib.list_messages(database, campaign=campaign, user=owner, state=state, phone=number, limit=limit)
    if json_:
        output.emit_json(rows)
        return
    output.table(None, ["id", "campaign", "user", "phone", "state", "scheduled (UTC)", "sent (UTC)", "tries", "provider id", "error"],
                 [(r["id"], r["campaign_id"], r["user"], r["phone"], r["state"], r["scheduled_at"], r["sent_at"],
                   r["attempts"], r["provider_id"], r["error"]) for r in rows])


# ---- sandbox and configuration -----------------------------------------------------------


@sandbox_app.command("serve")
def sandbox_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).", min=0, max=65535)] = 8787,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option(help="Delay every answer this long (ms, up to an hour).", callback=_finite(0, 3_600_000))] = 0.0,
    fail_rate: Annotated[float, typer.Option(help="Fraction answered HTTP 500, 0 to 1.", callback=_finite(0, 1))] = 0.0,
    rate_limit: Annotated[int, typer.Option(help="Answer 429 with Retry-After above N requests/second (0: none).", min=0, max=INT64_MAX)] = 0,
    hang_rate: Annotated[float, typer.Option(help="Fraction that hang past the client's timeout, 0 to 1.", callback=_finite(0, 1))] = 0.0,
    hang_ms: Annotated[float, typer.Option(help="How long a hang lasts (ms, up to an hour).", callback=_finite(0, 3_600_000))] = 30000.0,
    token: Annotated[Optional[str], typer.Option(help="Accept only this auth token / password (default: any).")] = None,
    webhook_secret: Annotated[Optional[str], typer.Option(help="Check X-Smsched-Signature with this secret.")] = None,
    callbacks: Annotated[bool, typer.Option("--callbacks", help="Send signed delivery receipts for what it accepts.")] = False,
    whatsapp_webhook: Annotated[Optional[str], typer.Option(help="With --callbacks: where WhatsApp status notifications go.")] = None,
    app_secret: Annotated[Optional[str], typer.Option(help="With --callbacks: the app secret that signs WhatsApp notifications.")] = None,
    sandbox_db: Annotated[Optional[Path], typer.Option("--db", help="Store received messages in this SQLite file.")] = None,
) -> None:
    """Run the local provider in the foreground (Ctrl-C stops it)."""
    from smsched.config import check_url
    from smsched.sandbox import SandboxServer

    if whatsapp_webhook:
        check_url(whatsapp_webhook, "--whatsapp-webhook", query=True, hint="give the receiver's URL, e.g. http://127.0.0.1:8788/whatsapp")

    server = _listening(lambda: SandboxServer(
        host=host, port=port, db_path=str(sandbox_db) if sandbox_db else None, latency_ms=latency_ms,
        fail_rate=fail_rate, rate_limit=rate_limit, hang_rate=hang_rate, hang_ms=hang_ms, token=token,
        webhook_secret=webhook_secret, callbacks=callbacks, whatsapp_webhook=whatsapp_webhook,
        app_secret=app_secret), host, port)
    output.info(f"sandbox listening on {server.url} (Twilio, WhatsApp Cloud API and /webhook); Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@sandbox_app.command("messages")
def sandbox_messages(
    sandbox_db: Annotated[Optional[Path], typer.Option("--db", help="The file given to `sandbox serve --db`.")] = None,
    url: Annotated[str, typer.Option(help="Or ask a running sandbox.")] = "http://127.0.0.1:8787",
    json_: JsonOption = False,
) -> None:
    """What the sandbox received."""
    from smsched import sandbox

    if sandbox_db:
        if not sandbox_db.exists():
            raise _usage(f"{sandbox_db}: no such file; give the path passed to `sandbox serve --db`")
        rows = sandbox.read_messages(str(sandbox_db))
    else:
        import requests

        try:
            rows = requests.get(f"{url.rstrip('/')}/_sandbox/messages", timeout=10).json()
        except requests.RequestException as exc:
            raise _usage(f"no sandbox answering at {url} ({type(exc).__name__}); start one with `smsched sandbox serve`") from None
    if json_:
        output.emit_json(rows)
        return
    output.table(None, ["received (UTC)", "api", "to", "status", "body"],
                 [(iso_utc(r["received_at"]), r["api"], r["to"], r["status"], r["body"]) for r in rows])


def _listening(make, host: str, port: int):
    """A server bound to host:port, or one line saying why it cannot be."""
    import errno
    import socket

    try:
        return make()
    except socket.gaierror:
        reason = "no such host or address; use an address of this machine, e.g. 127.0.0.1"
    except OverflowError:
        reason = "the port must be 0-65535"
    except OSError as exc:
        reason = {
            errno.EADDRINUSE: "the port is in use; stop what uses it, or pick another with --port (0: any free port)",
            errno.EADDRNOTAVAIL: "that address is not one of this machine's; use e.g. 127.0.0.1",
            errno.EACCES: "permission denied (ports below 1024 need privileges); use a port above 1024",
        }.get(exc.errno, exc.strerror or str(exc))
    raise _usage(f"cannot listen on {host}:{port}: {reason}")


def _usage(message: str):
    from smsched.errors import UsageError

    return UsageError(message)


@config_app.command("show")
def config_show(config: ConfigOption = None, json_: JsonOption = False) -> None:
    """The effective configuration, secrets masked."""
    from smsched import config as config_lib

    view = config_lib.load(config).masked()
    if json_:
        output.emit_json(view)
        return
    source = view.pop("source") or "(defaults and environment only)"
    output.out.print(f"# smsched configuration from {source}, secrets masked\n" + config_lib.to_toml(view),
                     markup=False, end="")


@config_app.command("check")
def config_check(config: ConfigOption = None, json_: JsonOption = False) -> None:
    """Verify each routed provider's settings and credentials, sending nothing."""
    from smsched import config as config_lib
    from smsched.providers import checks

    results = checks.check(config_lib.load(config))
    if json_:
        output.emit_json(results)
    else:
        for r in results:
            output.out.print(f"{r['provider']:<9} {r['status']:<8} {r['detail']}", markup=False)
    if any(r["status"] == "error" for r in results):
        raise typer.Exit(int(ExitCode.ERROR))


# ---- the database ------------------------------------------------------------------------


@db_app.command("migrate-to")
def db_migrate_to(
    url: Annotated[str, typer.Argument(help="The empty PostgreSQL database: postgresql://user@host:port/dbname")],
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Copy this SQLite database (--db) into an empty PostgreSQL one, in one transaction, verified by counts."""
    from smsched import pg
    from smsched.dialect import is_postgres, shown

    if not is_postgres(url):
        raise _usage(f"{url!r} is not a PostgreSQL URL: give postgresql://user@host:port/dbname")
    source_name = db_path(db)
    if is_postgres(source_name):
        raise _usage("--db is already a PostgreSQL database: migrate-to copies an SQLite file")
    source = storage.connect(source_name, readonly=True)
    report = (lambda table, count: output.info(f"{table}: {count:,} rows copied")) if not json_ else None
    counts = pg.migrate_to(source, url, progress=report)
    if json_:
        output.emit_json({"from": source_name, "to": shown(url), "tables": counts, "verified": True})
    else:
        output.out.print(f"copied {sum(counts.values()):,} rows from {source_name} to {shown(url)}; every table's "
                         f"count verified. Use --db {shown(url)} (or SMSCHED_DB) from now on.")


# ---- monitoring --------------------------------------------------------------------------


@app.command()
def stats(
    user: Annotated[Optional[str], typer.Option("--user")] = None,
    campaign: CampaignOption = None,
    since: Annotated[str, typer.Option(help="Window for rates, lag and failures.")] = "1h",
    watch: Annotated[bool, typer.Option("--watch", help="Refresh in place, like top (Ctrl-C stops).")] = False,
    prometheus: Annotated[Optional[Path], typer.Option("--prometheus", help="Write node_exporter textfile metrics here (atomically).")] = None,
    now: NowOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Messages by state, backlog, throughput, lag, recent runs, failures, busiest users."""
    import time as time_mod

    from smsched import stats as stats_lib
    from smsched.clock import parse_duration

    from smsched.outfiles import check_destination

    if watch and not output.interactive():
        raise _usage("--watch redraws a terminal; without one use `smsched stats --json`, --prometheus or `smsched check`")
    window = parse_duration(since, what="--since")
    if window <= 0:
        raise _usage(f"--since {since!r}: give a window above 0, e.g. 15m or 1h")
    if prometheus:
        check_destination(str(prometheus), what="--prometheus")
    database = open_db(db, readonly=True)
    owner = users_lib.get(database, user) if user else None
    at = _now(now)

    def gather() -> dict:
        return stats_lib.collect(database, now=at if at is not None else time_mod.time(), user=owner,
                                 campaign=campaign, since=window)

    if watch:
        from rich.live import Live

        with Live(_stats_view(gather()), console=output.out, screen=False, auto_refresh=False) as live:
            try:
                while True:
                    time_mod.sleep(2)
                    live.update(_stats_view(gather()), refresh=True)
            except KeyboardInterrupt:
                return
    data = gather()
    if prometheus:
        stats_lib.write_prometheus(str(prometheus), data)
    if json_:
        output.emit_json(data)
    elif not prometheus:
        output.out.print(_stats_view(data))


def _stats_view(data: dict):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from smsched import stats as stats_lib

    states = Table(title="messages", title_justify="left", box=None)
    for state in data["messages"]:
        states.add_column(state, justify="right")
    states.add_row(*(str(n) for n in data["messages"].values()))
    lag = data["lag_seconds"]
    parts = [
        Text(f"now {data['now']}   due backlog {data['due_backlog']}   oldest due {data['oldest_due_age_seconds']:g}s   "
             f"failure rate {data['failure_rate']}%"),
        states,
        Text(f"sent per minute (last {len(data['sent_per_minute'])} min, {data['sent_in_window']} in all): "
             f"{stats_lib.sparkline(data['sent_per_minute'])} max {max(data['sent_per_minute'] or [0])}/min"),
        Text(f"lag p50 {lag['p50']}s  p95 {lag['p95']}s  p99 {lag['p99']}s  max {lag['max']}s"),
    ]
    receipts = data["delivery"]
    if any(n for s, n in receipts["counts"].items() if s != "no_receipt"):
        median = receipts["median_seconds_to_delivery"]
        parts.append(Text("delivery: " + ", ".join(f"{s.replace('_', ' ')} {n}" for s, n in receipts["counts"].items() if n)
                          + (f"; median {median:g}s to delivery" if median is not None else "")))
    runs = Table(title="recent runs", title_justify="left", box=None)
    for column in ("started", "status", "sec", "sent", "failed", "msg/s", "lag p99", "bottleneck"):
        runs.add_column(column)
    for r in data["runs"][:5]:
        runs.add_row(r["started_at"], r["status"], f"{r['duration'] or 0:.1f}", str(r["sent"]), str(r["failed"]),
                     f"{r['messages_per_second'] or 0:.0f}", str(r["lag_p99"]), r["bottleneck_detail"])
    parts.append(runs)
    if data["failures"]:
        parts.append(Text("top failures: " + "; ".join(f"{f['count']}× {f['reason']}" for f in data["failures"])))
    if data["busiest_users"]:
        parts.append(Text("busiest users: " + ", ".join(f"{u['user']} (sent {u['sent']}, due {u['due']})" for u in data["busiest_users"])))
    return Group(*parts)


@app.command()
def check(
    max_lag: Annotated[float, typer.Option(help="Warn when lag p99 passes this many seconds (critical at 2x).", callback=_finite(0))] = 60,
    max_backlog_age: Annotated[float, typer.Option(help="Warn when the oldest due message is older (s).", callback=_finite(0))] = 300,
    max_failure_rate: Annotated[float, typer.Option(help="Warn above this failure percentage.", callback=_finite(0, 100))] = 5.0,
    max_unknown: Annotated[int, typer.Option(help="Warn when more messages than this are in unknown.", min=0, max=INT64_MAX)] = 0,
    max_run_age: Annotated[float, typer.Option(help="Warn when dispatch has not run for this long (s).", callback=_finite(0))] = 180,
    max_rate_limited: Annotated[float, typer.Option(help="Warn when the rate limit was the bottleneck this long (s).", callback=_finite(0))] = 600,
    max_undelivered: Annotated[Optional[float], typer.Option(help="Warn when more than this % of settled deliveries failed (receipts).", callback=_finite(0, 100))] = None,
    now: NowOption = None,
    db: DbOption = None,
) -> None:
    """Nagios/Icinga plugin: one line, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    import time as time_mod

    from smsched import stats as stats_lib

    try:
        database = open_db(db, readonly=True)
        at = _now(now)
        status, line = stats_lib.check(
            database, now=at if at is not None else time_mod.time(), max_lag=max_lag, max_backlog_age=max_backlog_age,
            max_failure_rate=max_failure_rate, max_unknown=max_unknown, max_run_age=max_run_age,
            max_rate_limited=max_rate_limited, max_undelivered=max_undelivered)
    except (SmschedError, sqlite3.Error) as exc:
        if _state["traceback"]:
            raise
        status, line = stats_lib.UNKNOWN, f"SMSCHED UNKNOWN - {exc}"
    sys.stdout.write(line + "\n")
    raise typer.Exit(status)


@app.command()
def plan(
    date: Annotated[Optional[str], typer.Option(help="The day to plan (default: today in --tz).")] = None,
    tz: Annotated[str, typer.Option(help="Time zone of the hours shown.")] = "America/Sao_Paulo",
    rate: Annotated[Optional[float], typer.Option(help="Capacity in messages/second (default: the configured providers' rates).", callback=_finite(above=0))] = None,
    simulate: Annotated[Optional[str], typer.Option(help="USERS:LEADS, e.g. 10000:100: plan without data.")] = None,
    distribution: Annotated[Optional[str], typer.Option(help="With --simulate: share of the day per span, e.g. '08-12:40,12-18:35,18-22:25'.")] = None,
    now: NowOption = None,
    config: ConfigOption = None,
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Per hour: messages scheduled, capacity, headroom and worst lag; warns for hours that do not fit."""
    import time as time_mod

    from smsched import config as config_lib
    from smsched import stats as stats_lib

    at = _now(now)
    routes = None
    if not rate:
        settings = config_lib.load(config)
        routes = {channel: (name, settings.provider(name).rate) for channel, name in settings.data["channels"].items()}
    result = stats_lib.plan(open_db(db, readonly=True), now=at if at is not None else time_mod.time(), date=date, tz=tz,
                            rate=rate, routes=routes, simulate=simulate, distribution=distribution)
    if json_:
        output.emit_json(result)
        return
    from rich.table import Table

    table = Table(title=f"capacity plan {result['date']} ({result['tz']})", title_justify="left")
    for column in ("hour", "messages", "capacity/h", "headroom", "worst lag", ""):
        table.add_column(column, justify="right" if column not in ("hour", "") else "left")
    top = max([h["messages"] for h in result["hours"]] + [1])  # the bars draw the day's shape
    for h in result["hours"]:
        bar = "█" * round(30 * h["messages"] / top)
        style = "red" if h["fits"] is False else None
        table.add_row(h["hour"], f"{h['messages']:,}", f"{h['capacity']:,}" if h["capacity"] else "?",
                      f"{h['headroom_percent']}%" if h["headroom_percent"] is not None else "?",
                      f"{h['worst_lag_seconds']}s" if h["worst_lag_seconds"] is not None else "?", bar, style=style)
    output.out.print(table)
    if result["capacity_per_hour"]:
        measured = result["measured_rate_per_second"]
        output.out.print(
            f"peak {result['peak_hour']}: {result['peak_messages']:,} messages; capacity "
            f"{result['capacity_per_hour']:,}/h from {result['rate_source']}; margin at the peak "
            f"{result['peak_margin_percent']}% (headroom {result['peak_headroom_percent']}% of capacity)"
            + (f"; recent runs sent {measured:,}/s" if measured else ""), markup=False)
    else:
        output.out.print(f"peak {result['peak_hour']}: {result['peak_messages']:,} messages; capacity unknown",
                         markup=False)
    for warning in result["warnings"]:
        output.warn(warning)


# ---- demo --------------------------------------------------------------------------------


@app.command()
def demo(
    keep: Annotated[Optional[Path], typer.Option("--keep", help="Keep the database, CSV and config in this folder.")] = None,
    leads: Annotated[int, typer.Option("--leads", help="How many sample leads, 1 to 100,000.", min=1, max=100_000)] = 200,
    json_: JsonOption = False,
) -> None:
    """Run the main job end to end on a throwaway database against the local sandbox."""
    import tempfile

    from smsched import demo as demo_lib
    from smsched.progress import DispatchDisplay

    if keep is not None and keep.exists() and not keep.is_dir():
        raise _usage(f"--keep {keep}: is a file; give a folder (it is created if missing)")
    with tempfile.TemporaryDirectory(prefix="smsched-demo-") as scratch:
        directory = keep or Path(scratch)
        with DispatchDisplay(None, None, enabled=not json_) as display:
            result = demo_lib.run(directory, leads_count=leads, progress=display.event)
    if json_:
        output.emit_json(result)
        return
    imp = result["import"]
    say = output.out.print
    say(f"smsched demo — at {result['at']} (São Paulo), in {result['directory'] if keep else 'a throwaway folder'}")
    say(f"1. imported {imp['file']} ({imp['encoding']}, '{imp['delimiter']}'): read {imp['read']}, imported {imp['imported']}, "
        f"duplicates {imp['duplicates']}, invalid {imp['invalid']}, blank {imp['blank']}", markup=False)
    say(f"2. opted out {result['optout']['added']} number (reason recorded)", markup=False)
    for c in result["campaigns"]:
        cost = f"{c['encoding']} ×{c['segments_per_message']}" if c["channel"] == "sms" else "template"
        say(f"3. campaign {c['id']} {c['name']!r} ({c['channel']}, {c['priority']}): {c['recipients']} recipients, "
            f"{c['suppressed']} opted out, {cost}", markup=False)
        for w in c["warnings"]:
            say(f"   note: {w}", markup=False)
    d = result["dispatch"]
    say(f"4. dispatch to the sandbox over HTTP: sent {d['sent']}, failed {d['failed']}, unknown {d['unknown']} in "
        f"{d['duration']}s ({d['messages_per_second']} msg/s), lag p99 {d['lag']['p99']}s", markup=False)
    say(f"5. the sandbox received {result['sandbox_received']} messages, e.g.:", markup=False)
    for m in result["sandbox_sample"]:
        say(f"   {m['api']:<8} {m['to']}  {m['body']}", markup=False)
    say(f"6. signed delivery receipts came back: {result['delivered']} delivered or read", markup=False)
    if keep:
        say(f"Explore: SMSCHED_DB={result['database']} smsched campaigns list; smsched messages list --limit 5; smsched stats", markup=False)


def main() -> None:
    app()
