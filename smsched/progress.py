"""How a dispatch run shows itself: a live display on a terminal (stderr), one plain line per
batch and a summary line without one (cron mail)."""

from __future__ import annotations

import time

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from smsched import output


def _due_count(db, now: float | None) -> int:
    at = int(now if now is not None else time.time())
    return db.conn.execute(
        "SELECT count(*) FROM messages WHERE state = 'scheduled' AND scheduled_at <= ?", (at,)).fetchone()[0]


class DispatchDisplay:
    def __init__(self, db, now: float | None, *, enabled: bool):
        self.enabled = enabled
        self.live_mode = enabled and output.interactive()
        self.started = time.perf_counter()
        self.live = None
        self.batches = 0
        self.last_draw = 0.0
        self.db = db
        if self.live_mode:
            self.total = _due_count(db, now) if db is not None else 0
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]:>7.0f}/s"), TimeRemainingColumn(), console=output.err)
            self.task = self.bar.add_task("sending", total=self.total or None, rate=0.0)

    def __enter__(self):
        if self.live_mode:
            self.live = Live(self._render(None), console=output.err, refresh_per_second=4, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.stop()

    def _render(self, summary):
        if summary is None:
            return self.bar
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("campaign", "claimed", "sent", "retried", "failed", "unknown"):
            table.add_column(column, justify="right" if column != "campaign" else "left")
        busiest = sorted(summary.per_campaign.items(), key=lambda kv: -kv[1]["claimed"])[:5]
        for campaign_id, counts in busiest:
            table.add_row(str(campaign_id), *(str(counts.get(k, 0)) for k in ("claimed", "sent", "retried", "failed", "unknown")))
        return Group(self.bar, table)

    def event(self, kind: str, summary, extra: dict) -> None:
        output.cron_log.run_id = summary.run_id
        if not self.enabled:
            return
        elapsed = max(1e-6, time.perf_counter() - self.started)
        done = summary.sent + summary.failed + summary.unknown + summary.suppressed + summary.expired
        if self.live:
            if kind == "tick" and time.perf_counter() - self.last_draw < 0.2:
                return
            self.last_draw = time.perf_counter()
            if done > self.total:
                self.total = done
                self.bar.update(self.task, total=self.total)
            self.bar.update(self.task, completed=done, rate=summary.sent / elapsed)
            self.live.update(self._render(summary))
        elif kind == "batch":
            self.batches += 1
            output.info(f"batch {self.batches}: claimed {extra.get('claimed', 0)} | so far sent {summary.sent}, "
                        f"retried {summary.retried}, failed {summary.failed}, unknown {summary.unknown}, "
                        f"suppressed {summary.suppressed}, expired {summary.expired} | {summary.sent / elapsed:.0f} msg/s")
        if kind == "warning":
            output.warn(extra["message"])
        if kind == "breaker":
            output.warn(f"provider {extra['provider']} is failing ({extra['after']} outages in a row, or its probe "
                        f"failed): pausing it, one probe every {extra['cooldown']:g}s")

    def final(self, summary) -> None:
        output.cron_log.run_id = summary.run_id
        data = summary.as_dict()
        if summary.status == "skipped":
            output.info(summary.message)
            return
        lag = data["lag"]
        lag_text = (f"lag p50 {lag['p50']}s p99 {lag['p99']}s max {lag['max']}s" if lag["count"] else "no lag (nothing sent)")
        output.out.print(
            f"dispatch {data['status']}: sent {data['sent']}, retried {data['retried']}, failed {data['failed']}, "
            f"unknown {data['unknown']}, suppressed {data['suppressed']}, expired {data['expired']}, "
            f"deferred {data['deferred']} in {data['duration']}s ({data['messages_per_second']} msg/s); {lag_text}; "
            f"bottleneck: {data['bottleneck_detail']}", markup=False)
        recovered = data["recovered"]
        if recovered and any(recovered.values()):
            output.warn(f"recovered from an earlier run: {recovered['claimed_to_scheduled']} back to scheduled, "
                        f"{recovered.get('sending_to_sent', 0)} confirmed sent by receipts, "
                        f"{recovered['sending_to_unknown']} now unknown (see `smsched reconcile`)")
        reconciled = data.get("reconciled")
        if reconciled and reconciled["checked"]:
            output.info(f"reconciled {reconciled['checked']} unknown message(s): {reconciled['sent']} sent, "
                        f"{reconciled['requeued']} requeued, {reconciled['unresolved']} unresolved")
        if summary.message:
            (output.warn if summary.exit_code else output.info)(summary.message)
