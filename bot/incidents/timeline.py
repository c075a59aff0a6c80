"""The incident timeline's recorder: hooked into the router's one recording
point (`services.recorders`), inside the request's transaction.

* Incident commands hand their entries over in `ctx.timeline` as
  `(kind, text, data)` with `data["incident_id"]`; they are written as-is.
* Every other runbook action run in the channel of an open incident is recorded
  generically by name (grant, approve, replay, sync, reconcile, health, …):
  all mutating actions, plus the read-only ones listed in `RECORDED_READS`.
  Another family may add its own `(kind, text, data)` entries to
  `ctx.timeline`; they land on the channel's open incident.
* Dry-run and panic toggles are recorded on every open incident (SPEC §6).
"""

from __future__ import annotations

from typing import Any

from ..audit import jsonable
from . import service

OWN_FAMILIES = ("incident", "impact")
FLAG_COMMANDS = ("dryrun", "panic", "flags.panic_confirm")
SKIPPED = ("help",)
# Read-only commands still worth a line on the timeline (what responders looked at).
RECORDED_READS = ("health", "customer", "credits", "reconcile", "preflight", "audit")


def _family(name: str) -> str:
    return name.split(" ", 1)[0].split(".", 1)[0]


def _args_text(args: dict[str, Any]) -> str:
    text = " ".join(str(jsonable(v)) for v in args.values() if v is not None and v != "")
    return text if len(text) <= 200 else text[:199] + "…"


def _describe(record) -> str:
    what = record.name if record.kind == "command" else f"clicked {record.name}"
    args = _args_text(record.args)
    summary = (record.summary or "").strip().splitlines()[0] if record.summary else ""
    summary = summary if len(summary) <= 300 else summary[:299] + "…"
    text = f"{what}{' ' + args if args and record.kind == 'command' else ''}"  # stored: plain data
    if record.outcome != "ok":
        text += f" ({record.outcome.replace('_', ' ')})"
    return f"{text}: {summary}" if summary else text


def may_record(record) -> bool:
    """Whether `record_action` could write anything for this action (decided without the database)."""
    return record.mutating or bool(record.ctx.timeline) or _family(record.name) in RECORDED_READS


async def record_action(session, record) -> None:
    family = _family(record.name)
    ctx = record.ctx
    if family in OWN_FAMILIES:
        if record.outcome == "dry_run":
            return  # the handler's changes were rolled back; nothing happened to record
        for kind, text, data in ctx.timeline:
            incident_id = data.get("incident_id")
            if incident_id is None:
                continue
            await service.write_entry(session, incident_id, at=record.at, kind=kind, actor=record.actor,
                                      text=text, data=jsonable({k: v for k, v in data.items() if k != "incident_id"}))
        return
    if family in SKIPPED:
        return
    data = {"command": record.name, "kind": record.kind, "args": jsonable(record.args),
            "outcome": record.outcome, "channel": record.channel}
    entries = [(kind, text, jsonable(extra)) for kind, text, extra in ctx.timeline]
    if record.name in FLAG_COMMANDS:
        if not record.mutating:
            return
        entries.insert(0, ("flags", _describe(record), data))
        for incident in await service.open_incidents(session):
            for kind, text, entry_data in entries:
                await service.write_entry(session, incident.id, at=record.at, kind=kind, actor=record.actor,
                                          text=text, data=entry_data)
        return
    if record.mutating or family in RECORDED_READS:
        entries.insert(0, ("action", _describe(record), data))
    await service.write_entries_in(session, record.channel, at=record.at, actor=record.actor, entries=entries)
