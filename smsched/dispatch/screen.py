"""Before a claimed message is sent: drop what must not go out now.

Cancelled campaign, opted out (globally or for its user), past its validity, or outside its
sending window in the recipient's zone (moved to the next opening, or expired when that is
after its validity). Pure: the caller reads the campaigns and opt-outs once per claim.
"""

from __future__ import annotations

from smsched import clock as clock_lib
from smsched import quiet_hours, states
from smsched.queue import QueuedMessage
from smsched.states import Change


def screen(messages: list[QueuedMessage], campaigns: dict[int, dict], optout_scopes: dict[str, set[int]],
           now: float, local: quiet_hours.LocalMinutes) -> tuple[list[QueuedMessage], list[Change]]:
    keep: list[QueuedMessage] = []
    changes: list[Change] = []
    for m in messages:
        campaign = campaigns.get(m.campaign_id, {})
        scopes = optout_scopes.get(m.phone)
        if campaign.get("status") == "cancelled":
            changes.append(states.cancelled(m.id))
        elif scopes and (0 in scopes or m.user_id in scopes):
            changes.append(states.suppressed(m.id))
        elif now > m.expires_at:
            changes.append(states.expired(m.id, f"not sent within its validity (due {clock_lib.iso_utc(m.scheduled_at)})"))
        else:
            window = campaign.get("window")
            if window is not None and not local.allows(window, m.tz, now):
                opens = quiet_hours.place(int(now), m.tz, window)
                if opens is None:
                    changes.append(states.expired(m.id, quiet_hours.NEVER_OPEN))
                elif opens > m.expires_at:
                    changes.append(states.expired(m.id, "quiet hours until after its validity"))
                else:
                    changes.append(states.deferred(m.id, opens))
                continue
            keep.append(m)
    return keep, changes
