"""`grant …` and `credits adjust …`: credit changes with a second person's approval (SPEC §5).

The request is validated (account, amount, reason, daily cap) before anything is
posted; Approve / Reject / Cancel buttons come back here; the router checks the
clicker's role, applies dry-run (these handlers keep money from moving themselves)
and writes the audit record in the same transaction as the decision.

`bot.grants.service` decides and returns what happened; this module says it: the answer,
the approval message and its outcome in the channel (`bot.grants.views`), the requester's
DM, and the audit record's subject and detail.
"""

from bot.billing import ledger
from bot.context import Context
from bot.forms import Field, Form
from bot.grants import service
from bot.grants.service import Decision
from bot.grants.views import amount_text, hhmm, outcome_message, reason_text, request_message
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Text, User

PENDING_SHOWN = 20  # `grant pending` shows the newest this many; `--before #N` pages back
LIST_REASON_CHARS = 300  # a reason in a list

commands = CommandSet("grants")


async def _show_account(services, ref: str) -> Text:
    """What the account field names, shown in the form once it is open."""
    async with services.db.reading() as session:
        account = await ledger.find_account(session, ref)
    if account is None:
        return Text("No account matches ", Code(ref[:60]), " (an account id, a cus_… id or an email).")
    return Text("Account ", Code(account.id), f": {account.balance} credits now.")


ACCOUNT = Field("account", "Account", hint="an account id, a cus_… id or an email", show=_show_account)
REASON = Field("reason", "Reason", kind="multiline", hint="the approver and the audit log read it")
GRANT_FORM = Form("Request credits", (
    ACCOUNT, Field("amount", "Amount (credits)", kind="number", hint="a whole number of credits to add"), REASON,
), submit="Ask for approval", intro="A different approver must approve the request before credits move.")
ADJUST_FORM = Form("Adjust credits", (
    ACCOUNT, Field("amount", "Change (credits)", kind="number", hint="signed: +50 or -20; never below zero"),
    REASON,
), submit="Ask for approval", intro="A correction goes through the same approval as a grant.")
commands.form("grant", GRANT_FORM)  # `/revops grant` with arguments missing opens it (bot/forms.py)
commands.form("credits adjust", ADJUST_FORM)


async def _request(ctx: Context, kind: str, args: dict) -> Reply:
    done = await service.request_change(
        ctx.session, ctx.settings.cfg.credits, kind=kind, account_ref=args["account"], amount=args["amount"],
        reason=args["reason"], actor=ctx.actor, channel=ctx.channel, now=ctx.now, dry_run=ctx.dry_run)
    req, account = done.request, done.account
    ctx.post(req.channel, request_message(req, account, done.balance), ref=req.ref)
    ctx.note(subject=account.id, detail=f"requested {amount_text(req)}: {req.reason}", request=req.id,
             account=account.id, amount=req.amount, reason=req.reason, requester=ctx.actor)
    return Reply(Text(f"Request #{req.id} posted for approval: {amount_text(req)} to ", Code(account.id),
                      f". It expires at {hhmm(req.expires_at)}."), fields=[("Reason", reason_text(req.reason))])


def _refusal_text(decision: Decision) -> Text:
    req = decision.request
    if decision.outcome == "own_request":
        return Text(f"You asked for request #{req.id}; four eyes: a different approver must approve it.")
    if decision.outcome == "not_requester":
        return Text("Only ", User(req.requester), f", who asked, can cancel request #{req.id}.")
    if req.status == "expired":
        return Text(f"Request #{req.id} expired at {hhmm(req.expires_at)}; nothing was granted.")
    return Text(f"Request #{req.id} was already {req.status} by ", User(req.decided_by),
                f" at {req.decided_at:%Y-%m-%d %H:%M:%S} UTC; nothing more was done.")


def _refused(ctx: Context, decision: Decision) -> Reply:
    """Nothing changed (beyond marking an overdue request expired); the audit record says why."""
    req = decision.request
    if decision.expired_now:
        ctx.update(req.ref, outcome_message(req))
    text = _refusal_text(decision)
    ctx.outcome = "refused"
    ctx.note(subject=req.account_id, detail=str(text), request=req.id, account=req.account_id, amount=req.amount,
             reason=req.reason, requester=req.requester)
    return Reply(text)


async def _approve(ctx: Context, request_id: int) -> Reply:
    decision = await service.approve(ctx.session, request_id, actor=ctx.actor, now=ctx.now, dry_run=ctx.dry_run)
    if decision.refused:
        return _refused(ctx, decision)
    req, simulated = decision.request, decision.simulated
    ctx.update(req.ref, outcome_message(req))
    ctx.post(req.requester, Reply(
        Text(f"Your {req.what} request #{req.id} ({amount_text(req)} to ", Code(req.account_id), ") was approved by ",
             User(ctx.actor), ".", "" if simulated else f" New balance: {req.balance_after} credits."),
        fields=[("Reason", reason_text(req.reason))],
        tag="dry run" if simulated else None))
    ctx.note(subject=req.account_id,
             detail=f"approved {amount_text(req)} for {req.account_id} requested by {req.requester}: {req.reason}",
             request=req.id, account=req.account_id, amount=req.amount, reason=req.reason,
             requester=req.requester, approver=ctx.actor, balance_after=req.balance_after)
    reply = Reply(Text(f"Approved request #{req.id}: {amount_text(req)} to ", Code(req.account_id), ".",
                       " Nothing moved (dry run)." if simulated else f" New balance: {req.balance_after} credits."))
    if simulated:
        reply.tag = "dry run"
    return reply


async def _reject(ctx: Context, request_id: int, note: str | None = None) -> Reply:
    decision = await service.reject(ctx.session, request_id, actor=ctx.actor, now=ctx.now, note=note)
    if decision.refused:
        return _refused(ctx, decision)
    req = decision.request
    ctx.update(req.ref, outcome_message(req))
    ctx.post(req.requester, Reply(Text(f"Your {req.what} request #{req.id} was rejected by ", User(ctx.actor), ".",
                                       Text(" Reason: ", reason_text(note)) if note else "")))
    ctx.note(subject=req.account_id, detail=f"rejected request #{req.id}" + (f": {note}" if note else ""),
             request=req.id, account=req.account_id, amount=req.amount, reason=req.reason,
             requester=req.requester, rejected_by=ctx.actor)
    return Reply(f"Rejected request #{req.id}.")


async def _cancel(ctx: Context, request_id: int) -> Reply:
    decision = await service.cancel(ctx.session, request_id, actor=ctx.actor, now=ctx.now)
    if decision.refused:
        return _refused(ctx, decision)
    req = decision.request
    ctx.update(req.ref, outcome_message(req))
    ctx.note(subject=req.account_id, detail=f"cancelled request #{req.id}", request=req.id,
             account=req.account_id, amount=req.amount, requester=req.requester)
    return Reply(f"Cancelled request #{req.id}.")


@commands.command("grant <account> <amount:int> <reason...>", role=Role.responder, mutating=True, dry_run="handler",
                  summary="ask for credits for an account; a different approver must click Approve")
async def grant_request(ctx: Context, args: dict) -> Reply:
    return await _request(ctx, "grant", args)


@commands.command("credits adjust <account> <amount:signed> <reason...>", role=Role.responder, mutating=True,
                  dry_run="handler", summary="a correction (+/-), through the same approval as a grant; never below zero")
async def adjust_request(ctx: Context, args: dict) -> Reply:
    return await _request(ctx, "adjustment", args)


@commands.command("grant approve <request>", role=Role.approver, mutating=True, dry_run="handler",
                  summary="approve a pending request (same as its Approve button)")
async def approve_command(ctx: Context, args: dict) -> Reply:
    return await _approve(ctx, service.parse_request_id(args["request"]))


@commands.command("grant reject <request> [reason...]", role=Role.approver, mutating=True,
                  summary="reject a pending request, with an optional reason")
async def reject_command(ctx: Context, args: dict) -> Reply:
    return await _reject(ctx, service.parse_request_id(args["request"]), args.get("reason"))


@commands.command("grant cancel <request>", role=Role.responder, mutating=True,
                  summary="cancel your own pending request")
async def cancel_command(ctx: Context, args: dict) -> Reply:
    return await _cancel(ctx, service.parse_request_id(args["request"]))


@commands.command("grant pending [--before N]", role=Role.viewer,
                  summary="pending credit requests, the newest 20 (--before N: those older than request #N)")
async def pending_command(ctx: Context, args: dict) -> Reply:
    before = args.get("before")
    rows = await service.pending_requests(ctx.session, ctx.now, limit=PENDING_SHOWN, before=before)
    total = await service.count_pending(ctx.session, ctx.now, before=before)
    lines = [Text(f"#{r.id} {amount_text(r)} to ", Code(r.account_id), " by ", User(r.requester, ping=False), " — ",
                  reason_text(r.reason, LIST_REASON_CHARS), f" (expires {hhmm(r.expires_at)})") for r in rows]
    head = "Pending credit requests" + (f" older than #{before}" if before is not None else "")
    if not lines:
        return Reply(head, lines=["No pending requests."])
    footer = None
    if total > len(rows):
        footer = Text(f"Showing the newest {len(rows)} of {total} pending requests — older ones: ",
                      Code(f"/revops grant pending --before {rows[0].id}"))
    return Reply(head, lines=lines, footer=footer, keep="end",
                 more=Text(Code(f"/revops grant pending --before {rows[0].id}")) if footer else None)


@commands.action("approve", role=Role.approver, dry_run="handler")
async def approve_click(ctx: Context, value: str) -> Reply:
    return await _approve(ctx, service.parse_request_id(value))


@commands.action("reject", role=Role.approver)
async def reject_click(ctx: Context, value: str) -> Reply:
    return await _reject(ctx, service.parse_request_id(value))


@commands.action("cancel", role=Role.responder)
async def cancel_click(ctx: Context, value: str) -> Reply:
    return await _cancel(ctx, service.parse_request_id(value))
