"""`export customers|payments|invoices|ledger|audit|events [--since 30d]` (issue 18 item 4): a CSV
posted to the channel as a file (through the outbox: Slack's external upload, or a file on disk
from the console) and behind a signed link, `GET /exports/{id}.csv`, for 24 hours.

Approver: the files hold customer data. Audited like an action (who, which kind, how many rows,
the export id) — it writes the export and a post, though nothing in billing. Dry-run exempt: an
export changes no billing state, so dry-run mode does not simulate it; the file is made and
posted as usual (a simulated export would post nothing useful)."""

from datetime import timedelta

from bot.billing import exports
from bot.durations import format_duration
from bot.context import Context, PendingPost
from bot.errors import UsageError
from bot.incidents import links  # the one signer of the bot's links (incident pages, exports)
from bot.outbox import FileReply
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Link, Text


commands = CommandSet("export")

def window(since: timedelta) -> str:
    days, rest = divmod(int(since.total_seconds()), 86400)
    return f"{days} days" if days and not rest else format_duration(since)


USAGE = "export <" + "|".join(exports.KINDS) + "> [--since DURATION]"


@commands.command(USAGE, role=Role.approver, mutating=True, dry_run="exempt", slow=True,
                  summary="a CSV of customers, payments, invoices, the ledger, the audit log or the webhook log, "
                          "posted to the channel and behind a signed link for 24 h",
                  examples=["export payments --since 7d", "export customers"])
async def export_command(ctx: Context, args: dict) -> Reply:
    kind = args["choice"]
    since: timedelta = args.get("since", exports.DEFAULT_WINDOW)
    if since > exports.MAX_WINDOW or since <= timedelta(0):
        raise UsageError(Text(Code("--since"), " must be more than 0 and at most 90d"))
    include_email = ctx.settings.cfg.exports.include_email
    start = ctx.now - since
    data = await exports.table(ctx.session, kind, start, include_email=include_email)
    content = exports.to_csv(data)
    export = await exports.store(ctx.session, data, content, actor=ctx.actor, channel=ctx.channel, since=start,
                                 now=ctx.now)
    url = links.signed_url(ctx.settings, exports.path_of(export.id), ctx.now, ttl=exports.EXPORT_TTL)
    count = f"{len(data.rows)} row{'s' if len(data.rows) != 1 else ''}" + (f" (the newest {len(data.rows)} of {data.total})"
                                        if data.total > len(data.rows) else "")
    ctx.note(subject=f"export:{export.id}", detail=f"exported {len(data.rows)} {kind} rows (last {window(since)})",
             kind=kind, rows=len(data.rows), export=export.id, include_email=include_email)
    emails = "emails included" if include_email else "emails left blank ([exports] include_email is off)"
    link = Link(url, export.filename) if url else Text(Code(export.filename), " (no link: REVOPS_BASE_URL is not set)")
    if ctx.channel:
        comment = Text(f"Export of {kind}, last {window(since)}: {count}, by @{ctx.actor}; ", emails, ".")
        ctx.posts.append(PendingPost(ctx.channel, FileReply(comment, private=False, filename=export.filename,
                                                            title=f"revops {kind} export", content=content),
                                     "file", f"export:{export.id}"))
    return Reply(Text(f"Export of {kind}, last {window(since)}: {count}; posting the file to this channel."),
                 lines=[Text("Download: ", link, " — expires in 24 h.")],
                 footer=f"{', '.join(data.header)} · {emails}")
