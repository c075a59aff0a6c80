"""`impact baseline=… current=… traffic=… aov=…`: revenue lost per hour and per day.

hourly loss = (baseline − current) × hourly traffic × AOV; daily = hourly × 24.
Without figures, in a channel with an open incident, it shows that incident's impact.
"""

from __future__ import annotations

from bot.context import Context
from bot.errors import UsageError
from bot.incidents import service
from bot.incidents.impact import Impact, missing, parse_figures
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role

commands = CommandSet("impact")


def impact_reply(impact: Impact, title: str, duration=None) -> Reply:
    view = impact.view(duration)
    fields = [
        ("Conversion", f"{view['baseline']} → {view['current']} (−{view['drop']}, {view['relative_drop']} relative)"),
        ("Traffic", f"{view['traffic']} visits/hour"),
        ("Average order value", f"${view['aov']}"),
        ("Hourly loss", f"${view['hourly']}"),
        ("Daily loss", f"${view['daily']}"),
    ]
    if duration is not None:
        fields.append(("Lost so far", f"${view['lost_so_far']}"))
    lines = []
    if view["no_loss"]:
        lines.append("Current is not below baseline: no revenue is being lost on these figures.")
    return Reply(f"{title}: ${view['hourly']}/hour, ${view['daily']}/day", lines=lines, fields=fields,
                 footer="hourly loss = (baseline − current) × traffic per hour × AOV; daily = hourly × 24")


@commands.command("impact [baseline=NUM] [current=NUM] [traffic=NUM] [aov=NUM]",
                  summary="revenue impact: (baseline − current) × traffic/h × AOV, hourly and daily "
                          "(rates as 3.2% or 0.032, traffic as 1200 or 1200/h)",
                  role=Role.viewer, examples=["impact baseline=3.2% current=2.1% traffic=1200/h aov=80"])
async def impact(ctx: Context, args: dict) -> Reply:
    figures = parse_figures(args)
    if not figures:
        incident = await service.open_incident_in(ctx.session, ctx.channel)
        if incident is not None:
            known = Impact.from_figures(incident.impact)
            if known is None:
                raise UsageError(f"incident #{incident.id} has no complete impact figures yet "
                                 f"(missing {', '.join(missing(incident.impact))}); give all four")
            return impact_reply(known, f"Impact of incident #{incident.id}", ctx.now - incident.detected_at)
        raise UsageError("give all four figures: baseline=, current=, traffic=, aov=")
    absent = missing(figures)
    if absent:
        raise UsageError("missing " + ", ".join(f"{name}=" for name in absent))
    return impact_reply(Impact.from_figures(figures), "Revenue impact")
