"""`invoice <in_…>` and its actions (issue 18 item 1): the invoice from Stripe next to the mirror,
with Retry payment / Resend invoice (a responder) and Mark paid out of band / Void (four eyes:
an approver who is not the requester, expiring, audited).

Every action: Stripe is called before the unit of work's first statement (no network inside a
write transaction), with an idempotency key; dry-run (the router's, `dry_run="handler"`) calls
nothing at Stripe; Stripe's answer overwrites the mirror's row; a refusal (card declined,
already paid) is answered in words and audited as refused; the router's recorders put it on the
incident timeline of the channel."""

from bot.billing import invoices
from bot.billing.invoice_views import hhmm, invoice_reply, money, outcome_message, request_message
from bot.billing.invoices import ACTION_NAMES, Decision
from bot.billing.stripe_client import StripeRefused
from bot.context import Context
from bot.errors import NotFound, UpstreamError, UsageError
from bot.forms import Field, Form
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Icon, Text, User, clip

from ._billing import stripe_of

commands = CommandSet("invoices")

BUTTON_REASON = "asked with the button on the invoice view"


async def _show_invoice(services, raw_id: str) -> Text | None:
    """The invoice a mark-paid / void form names: Stripe's status and amount (else the mirror's)."""
    try:
        invoice_id = invoices.parse_invoice_id(raw_id)
    except UsageError as exc:
        return Text(exc.text)
    stripe = services.stripe
    try:
        stripe_obj = await stripe.invoice(invoice_id) if stripe is not None and stripe.configured else None
    except UpstreamError:
        stripe_obj = None  # said below: the mirror's row alone
    async with services.db.reading() as session:  # after Stripe: no network inside a unit of work
        view = await invoices.load_view(session, invoice_id, stripe_obj, services.clock.now())
    s, m = view.stripe or {}, view.mirror
    if not s and m is None:
        return Text("Neither Stripe nor the mirror has invoice ", Code(invoice_id), ".")
    currency = s.get("currency") or (m.currency if m else None)
    due = s.get("amount_due") if s else m.amount_due
    return Text("Invoice ", Code(invoice_id), f": {view.status or '?'}, {money(due, currency)} due",
                "" if s else " (the mirror's row; Stripe did not answer or is not configured)", ".")


def _invoice_form(title: str, submit: str, intro: str) -> Form:
    return Form(title, (
        Field("id", "Invoice", hint="its Stripe id, in_…", show=_show_invoice),
        Field("reason", "Reason", kind="multiline", hint="the approver and the audit log read it"),
    ), submit=submit, intro=intro)


commands.form("invoice mark-paid", _invoice_form("Mark an invoice paid", "Ask for approval",
                                                 "Paid out of band; a different approver must approve."))
commands.form("invoice void", _invoice_form("Void an invoice", "Ask for approval",
                                            "A voided invoice cannot be paid; a different approver must approve."))


async def show(ctx: Context, invoice_id: str) -> Reply:
    invoice_id = invoices.parse_invoice_id(invoice_id)
    stripe = ctx.services.stripe
    configured = stripe is not None and stripe.configured
    stripe_obj = await stripe.invoice(invoice_id) if configured else None  # before the first statement
    view = await invoices.load_view(ctx.session, invoice_id, stripe_obj, ctx.now)
    if stripe_obj is None and view.mirror is None:
        raise NotFound(Text("Stripe has no invoice ", Code(invoice_id), ", and neither has the mirror.") if configured
                       else Text("Stripe is not configured, and the mirror has no invoice ", Code(invoice_id), "."))
    reply = invoice_reply(view)
    if not configured:
        reply.text = Text(Icon("warning"), " Invoice ", Code(invoice_id),
                          ": Stripe is not configured (STRIPE_SECRET_KEY), so the mirror's row alone; no actions.")
    return reply


async def _single(ctx: Context, action: str, raw_id: str) -> Reply:
    """Retry payment or resend: one responder, now."""
    invoice_id = invoices.parse_invoice_id(raw_id)
    stripe = stripe_of(ctx)
    invoice = invoices.refuse_unless_allowed(await stripe.invoice(invoice_id), invoice_id, action)
    key = invoices.retry_key(invoice, action) if action == "pay" else f"revops-send-{invoice_id}-{ctx.request_id}"
    amount = money(invoice.get("amount_remaining"), invoice.get("currency"))
    ctx.note(subject=invoice_id, invoice=invoice_id, action=action, idempotency_key=key, amount=amount)
    if ctx.dry_run:
        ctx.note(detail=f"dry run: would {ACTION_NAMES[action]} ({amount})")
        return Reply(Text("Dry run: would ", ACTION_NAMES[action], " for ", Code(invoice_id),
                          f" ({amount}); Stripe was not called."), tag="dry run")
    try:
        answer = await stripe.invoice_action(action, invoice_id, idempotency_key=key)
    except StripeRefused as refusal:
        try:  # a declined attempt still counts: the mirror gets Stripe's invoice as it is now
            fresh = await stripe.invoice(invoice_id)
        except UpstreamError:
            fresh = None
        if fresh is not None:
            await invoices.mirror_answer(ctx.session, fresh, ctx.now)
        ctx.outcome = "refused"
        ctx.note(detail=f"{action} {invoice_id}: {refusal}")
        return Reply(Text(Icon("x"), " Could not ", ACTION_NAMES[action], " for ", Code(invoice_id), ": ",
                          clip(str(refusal), 400), "."))
    change = await invoices.mirror_answer(ctx.session, answer, ctx.now)
    status = answer.get("status") or "?"
    ctx.note(detail=f"{action} {invoice_id}: now {status}")
    if action == "pay":
        text = Text(Icon("white_check_mark"), " Payment retried for ", Code(invoice_id),
                    f": {status}" + (f", {money(answer.get('amount_paid'), answer.get('currency'))} paid." if status == "paid" else "."))
    else:
        text = Text(Icon("email"), " Invoice ", Code(invoice_id), " sent to the customer again.")
    return Reply(text, lines=[clip(change.sentence(), 500)] if change.changed else [])


async def _request(ctx: Context, action: str, raw_id: str, reason: str) -> Reply:
    invoice_id = invoices.parse_invoice_id(raw_id)
    invoice = invoices.refuse_unless_allowed(await stripe_of(ctx).invoice(invoice_id), invoice_id, action)
    req = await invoices.request_action(
        ctx.session, action=action, invoice=invoice, reason=reason, actor=ctx.actor, channel=ctx.channel,
        now=ctx.now, ttl=ctx.settings.cfg.credits.approval_ttl, dry_run=ctx.dry_run)
    ctx.post(req.channel, request_message(req), ref=req.ref)
    ctx.note(subject=invoice_id, detail=f"requested: {ACTION_NAMES[action]} ({req.reason})", request=req.id,
             invoice=invoice_id, action=action, requester=ctx.actor)
    return Reply(Text(f"Request #{req.id} posted for approval: {ACTION_NAMES[action]} for ", Code(invoice_id),
                      f". It expires at {hhmm(req.expires_at)}."), fields=[("Reason", clip(req.reason, 500))])


def _refused(ctx: Context, decision: Decision) -> Reply:
    req = decision.request
    if decision.expired_now:
        ctx.update(req.ref, outcome_message(req))
    if decision.outcome == "own_request":
        text = Text(f"You asked for request #{req.id}; four eyes: a different approver must approve it.")
    elif decision.outcome == "not_requester":
        text = Text("Only ", User(req.requester), f", who asked, can cancel request #{req.id}.")
    elif req.status == "expired":
        text = Text(f"Request #{req.id} expired at {hhmm(req.expires_at)}; nothing was done.")
    else:
        text = Text(f"Request #{req.id} was already {req.status}" if req.decided_by is None else
                    Text(f"Request #{req.id} was already {req.status} by ", User(req.decided_by)),
                    "; nothing more was done.")
    ctx.outcome = "refused"
    ctx.note(subject=req.invoice_id, detail=str(text), request=req.id, invoice=req.invoice_id, action=req.action,
             requester=req.requester)
    return Reply(text)


async def _approve(ctx: Context, request_id: int) -> Reply:
    async with ctx.services.db.reading() as session:  # nothing of the unit of work begins before Stripe
        req = await invoices.load_request(session, request_id)
    if req.requester == ctx.actor:
        return _refused(ctx, Decision(req, "own_request"))
    if ctx.dry_run or req.dry_run:
        decision = await invoices.simulate_approval(ctx.session, req, actor=ctx.actor, now=ctx.now)
        if decision.refused:
            return _refused(ctx, decision)
        req = decision.request
        ctx.update(req.ref, outcome_message(req))
        ctx.note(subject=req.invoice_id, detail=f"dry run: approved {ACTION_NAMES[req.action]}", request=req.id,
                 invoice=req.invoice_id, action=req.action, requester=req.requester, approver=ctx.actor)
        return Reply(Text(f"Approved request #{req.id} (dry run): Stripe was not called for ", Code(req.invoice_id),
                          "."), tag="dry run")
    stripe = stripe_of(ctx)
    async with ctx.services.db.transaction() as session:  # the claim: pending → approving, once
        claimed = await invoices.claim(session, req, actor=ctx.actor, now=ctx.now)
    if not claimed:
        return _refused(ctx, await invoices.no_transition(ctx.session, request_id, ctx.now))
    data = dict(request=req.id, invoice=req.invoice_id, action=req.action, requester=req.requester,
                approver=ctx.actor, idempotency_key=req.idempotency_key)
    try:
        answer = await stripe.invoice_action(req.action, req.invoice_id, idempotency_key=req.idempotency_key)
    except StripeRefused as refusal:
        req = await invoices.settle(ctx.session, req, "failed", now=ctx.now, note=str(refusal))
        ctx.update(req.ref, outcome_message(req))
        ctx.post(req.requester, Reply(Text(f"Your request #{req.id} ({ACTION_NAMES[req.action]} for ",
                                           Code(req.invoice_id), ") was approved by ", User(ctx.actor),
                                           ", but Stripe refused: ", clip(str(refusal), 300))))
        ctx.outcome = "refused"
        ctx.note(subject=req.invoice_id, detail=f"approved; Stripe refused: {refusal}", **data)
        return Reply(Text(Icon("x"), f" Stripe refused request #{req.id} ({ACTION_NAMES[req.action]} for ",
                          Code(req.invoice_id), "): ", clip(str(refusal), 400), "."))
    except UpstreamError as exc:
        await invoices.settle(ctx.session, req, "pending", now=ctx.now)
        ctx.outcome = "failed"
        ctx.note(subject=req.invoice_id, detail=f"Stripe not reached: {exc}", **data)
        return Reply(Text(Icon("warning"), " ", exc.text, f". Request #{req.id} is still pending: Approve again "
                          "(the same idempotency key makes a second call safe)."))
    req = await invoices.settle(ctx.session, req, "approved", now=ctx.now)
    change = await invoices.mirror_answer(ctx.session, answer, ctx.now)
    ctx.update(req.ref, outcome_message(req))
    ctx.post(req.requester, Reply(Text(f"Your request #{req.id} ({ACTION_NAMES[req.action]} for ",
                                       Code(req.invoice_id), ") was approved by ", User(ctx.actor),
                                       f". Stripe: {answer.get('status')}.")))
    ctx.note(subject=req.invoice_id, detail=f"approved {ACTION_NAMES[req.action]} for {req.invoice_id} requested by "
             f"{req.requester}: now {answer.get('status')}", **data)
    return Reply(Text(f"Approved request #{req.id}: ", Code(req.invoice_id), f" is now {answer.get('status')}."),
                 lines=[clip(change.sentence(), 500)] if change.changed else [])


async def _reject(ctx: Context, request_id: int, note: str | None = None) -> Reply:
    decision = await invoices.reject(ctx.session, request_id, actor=ctx.actor, now=ctx.now, note=note)
    if decision.refused:
        return _refused(ctx, decision)
    req = decision.request
    ctx.update(req.ref, outcome_message(req))
    ctx.post(req.requester, Reply(Text(f"Your request #{req.id} ({ACTION_NAMES[req.action]} for ",
                                       Code(req.invoice_id), ") was rejected by ", User(ctx.actor), ".")))
    ctx.note(subject=req.invoice_id, detail=f"rejected request #{req.id}" + (f": {note}" if note else ""),
             request=req.id, invoice=req.invoice_id, action=req.action, requester=req.requester)
    return Reply(f"Rejected request #{req.id}.")


async def _cancel(ctx: Context, request_id: int) -> Reply:
    decision = await invoices.cancel(ctx.session, request_id, actor=ctx.actor, now=ctx.now)
    if decision.refused:
        return _refused(ctx, decision)
    req = decision.request
    ctx.update(req.ref, outcome_message(req))
    ctx.note(subject=req.invoice_id, detail=f"cancelled request #{req.id}", request=req.id, invoice=req.invoice_id,
             action=req.action)
    return Reply(f"Cancelled request #{req.id}.")


@commands.command("invoice <id>", role=Role.viewer, slow=True, examples=["invoice in_1Abc"],
                  summary="an invoice from Stripe and the mirror side by side, with its actions by state")
async def invoice_command(ctx: Context, args: dict) -> Reply:
    return await show(ctx, args["id"])


@commands.command("invoice retry <id>", role=Role.responder, mutating=True, dry_run="handler", slow=True,
                  summary="retry an open invoice's payment now (Stripe's invoices.pay)")
async def retry_command(ctx: Context, args: dict) -> Reply:
    return await _single(ctx, "pay", args["id"])


@commands.command("invoice resend <id>", role=Role.responder, mutating=True, dry_run="handler", slow=True,
                  summary="email a send_invoice invoice to the customer again")
async def resend_command(ctx: Context, args: dict) -> Reply:
    return await _single(ctx, "send", args["id"])


@commands.command("invoice mark-paid <id> <reason...>", role=Role.responder, mutating=True, dry_run="handler",
                  slow=True, summary="ask to mark an invoice paid out of band; a different approver must approve")
async def mark_paid_command(ctx: Context, args: dict) -> Reply:
    return await _request(ctx, "mark_paid", args["id"], args["reason"])


@commands.command("invoice void <id> <reason...>", role=Role.responder, mutating=True, dry_run="handler",
                  slow=True, summary="ask to void an invoice; a different approver must approve")
async def void_command(ctx: Context, args: dict) -> Reply:
    return await _request(ctx, "void", args["id"], args["reason"])


@commands.command("invoice approve <request>", role=Role.approver, mutating=True, dry_run="handler", slow=True,
                  summary="approve a pending invoice request (same as its Approve button)")
async def approve_command(ctx: Context, args: dict) -> Reply:
    return await _approve(ctx, invoices.parse_request_id(args["request"]))


@commands.command("invoice reject <request> [reason...]", role=Role.approver, mutating=True,
                  summary="reject a pending invoice request")
async def reject_command(ctx: Context, args: dict) -> Reply:
    return await _reject(ctx, invoices.parse_request_id(args["request"]), args.get("reason"))


@commands.command("invoice cancel <request>", role=Role.responder, mutating=True,
                  summary="cancel your own pending invoice request")
async def cancel_command(ctx: Context, args: dict) -> Reply:
    return await _cancel(ctx, invoices.parse_request_id(args["request"]))


@commands.action("retry", role=Role.responder, dry_run="handler", slow=True)
async def retry_click(ctx: Context, value: str) -> Reply:
    return await _single(ctx, "pay", value)


@commands.action("resend", role=Role.responder, dry_run="handler", slow=True)
async def resend_click(ctx: Context, value: str) -> Reply:
    return await _single(ctx, "send", value)


@commands.action("mark_paid", role=Role.responder, dry_run="handler", slow=True)
async def mark_paid_click(ctx: Context, value: str) -> Reply:
    return await _request(ctx, "mark_paid", value, BUTTON_REASON)


@commands.action("void", role=Role.responder, dry_run="handler", slow=True)
async def void_click(ctx: Context, value: str) -> Reply:
    return await _request(ctx, "void", value, BUTTON_REASON)


@commands.action("approve", role=Role.approver, dry_run="handler", slow=True)
async def approve_click(ctx: Context, value: str) -> Reply:
    return await _approve(ctx, invoices.parse_request_id(value))


@commands.action("reject", role=Role.approver)
async def reject_click(ctx: Context, value: str) -> Reply:
    return await _reject(ctx, invoices.parse_request_id(value))


@commands.action("cancel", role=Role.responder)
async def cancel_click(ctx: Context, value: str) -> Reply:
    return await _cancel(ctx, invoices.parse_request_id(value))
