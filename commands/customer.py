"""`customer <email|cus_…|account>`: Stripe's live view and the local mirror side by side.

Mismatches are listed (status differs, missing locally, unknown to Stripe), failed invoices
are marked, every item of a subscription shown, refunded amounts (on their invoices, through
their payments) and open disputes listed, and the credit balance, recent ledger entries and recent billing events follow.
When Stripe cannot be reached the answer says so and shows the mirror alone.
Buttons: **Sync from Stripe** (responder), **Replay failed events** (approver).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from bot.billing import ledger, payments
from bot.billing.policy import EventPolicy
from bot.billing.invoice_views import invoice_buttons
from bot.billing.mirror import invoice_values, subscription_values, ts
from bot.billing.models import StripeCustomer, StripeEvent, StripeInvoice, StripeSubscription
from bot.context import Context
from bot.errors import UpstreamError, UsageError
from bot.registry import CommandSet
from bot.reply import Button, Reply
from bot.roles import Role
from bot.text import Code, Em, Icon, Link, Status, Text, clip

from ._billing import entry_line, money, stripe_of, when

commands = CommandSet("customer")


def item_line(item: dict[str, Any]) -> str:
    """One subscription item: its price, quantity and (today's Stripe) its own renewal."""
    renews = f", renews {when(ts(item.get('current_period_end')))}" if item.get("current_period_end") else ""
    return f"{item.get('price') or '—'} ×{item.get('quantity') or 1}{renews}"


def refunded_part(amount: int, currency: str | None) -> str:
    return f", {money(amount, currency)} refunded" if amount else ""


EVENT_ICONS = {"processed": Status("ok"), "ignored": Icon("heavy_minus_sign"), "failed": Status("failed")}
SUBSCRIPTIONS_SHOWN = 20
INVOICES_SHOWN = 10  # the newest; the Stripe dashboard lists them all
FAILED_WITH_BUTTONS = 3  # failed invoices that get the invoice actions' buttons
PAYMENTS_SHOWN = 5  # refunded payments, open disputes
EVENTS_SHOWN = 8
MISMATCHES_SHOWN = 10
TEXT_CHARS = 300  # a name, a description, an error in this view (the mirror keeps them whole)


def dashboard_link(customer_id: str, livemode: bool | None) -> Link:
    """The customer's page in the Stripe dashboard (the test-mode one unless the key is live)."""
    return Link(f"https://dashboard.stripe.com/{'' if livemode else 'test/'}customers/{customer_id}",
                "Stripe dashboard")


def shown_of(shown: int, total: int, what: str, more: Any = None) -> Text:
    """ "  showing the newest 10 of 42 invoices — full list: <more>" """
    return Text(f"  showing the newest {shown} of {total} {what}", " — full list: " if more else "", more)


async def _local_customer(ctx: Context, ref: str, account) -> StripeCustomer | None:
    if ref.startswith("cus_"):
        return await ctx.session.get(StripeCustomer, ref)
    if "@" in ref:
        rows = await ctx.session.execute(
            select(StripeCustomer).where(func.lower(StripeCustomer.email) == ref.lower())
            .order_by(StripeCustomer.deleted, StripeCustomer.updated_at.desc()).limit(1))
        return rows.scalar_one_or_none()
    if account is not None and account.stripe_customer_id:
        return await ctx.session.get(StripeCustomer, account.stripe_customer_id)
    return None


@commands.command("customer <ref>", summary="Stripe and the local mirror side by side: subscriptions, invoices, "
                  "mismatches, credits, recent events", role=Role.viewer, slow=True,
                  examples=["customer ada@example.com", "customer cus_Q1w2e3", "customer acct_42"])
async def customer(ctx: Context, args: dict) -> Reply:
    ref = args["ref"].strip()
    session = ctx.session
    account = await ledger.resolve_account(session, ref)
    local = await _local_customer(ctx, ref, account)
    customer_id = ref if ref.startswith("cus_") else (local.id if local else
                                                       account.stripe_customer_id if account else None)

    stripe_error: str | None = None
    live: dict[str, Any] | None = None
    live_subs: list[dict[str, Any]] = []
    live_invoices: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        stripe = stripe_of(ctx)
        if customer_id:
            live = await stripe.retrieve("customer", customer_id)
        elif "@" in ref:
            found = await stripe.customers_by_email(ref)
            if len(found) > 1:
                notes.append(f"Stripe has {len(found)} customers with this email: "
                             + ", ".join(c["id"] for c in found[:5]) + "; showing the first.")
            live = found[0] if found else None
            customer_id = live["id"] if live else None
        if live is not None and live.get("deleted"):
            notes.append(f"Stripe says customer {live['id']} was deleted.")
        elif live is not None:
            live_subs = await stripe.list("subscription", customer=live["id"], status="all", max_items=50)
            live_invoices = await stripe.page("invoice", customer=live["id"], limit=INVOICES_SHOWN + 1)
    except UpstreamError as exc:
        stripe_error = str(exc).removesuffix("; nothing was changed")

    if customer_id and local is None:
        local = await session.get(StripeCustomer, customer_id)
    if customer_id and account is None:
        account = await ledger.resolve_account(session, customer_id)
    if live is None and local is None and account is None:
        if stripe_error:
            raise UpstreamError(Text(f"{stripe_error}, and nothing in the local mirror matches ", Code(ref[:60])))
        raise UsageError(Text("no customer matches ", Code(ref[:60]), " in Stripe or in the local mirror"))

    livemode = EventPolicy.from_settings(ctx.settings).livemode
    mismatches: list[str] = []
    lines: list[Any] = []
    if stripe_error:
        lines.append(Text(Status("warning"), f" {stripe_error}: showing the local mirror only."))
    lines += notes

    # -- the customer itself
    if customer_id:
        if stripe_error is None:
            if live is None:
                mismatches.append(f"customer {customer_id} is unknown to Stripe")
            elif local is None:
                mismatches.append(f"customer {customer_id} is missing locally")
            elif not live.get("deleted") and (live.get("email") or None) != (local.email or None):
                mismatches.append(f"email differs: Stripe {clip(live.get('email'), 100)}, "
                                  f"mirror {clip(local.email, 100)}")
            elif bool(live.get("deleted")) != local.deleted:
                mismatches.append("deleted in Stripe, not in the mirror" if live.get("deleted")
                                  else "deleted in the mirror, not in Stripe")

    # -- subscriptions side by side
    local_subs = list((await session.execute(
        select(StripeSubscription).where(StripeSubscription.customer_id == customer_id)
        .order_by(StripeSubscription.id))).scalars()) if customer_id else []
    by_id_live = {s["id"]: subscription_values(s) for s in live_subs}
    by_id_local = {s.id: s for s in local_subs}
    sub_ids = sorted(set(by_id_live) | set(by_id_local))
    if sub_ids:
        lines.append(Text(Em("Subscriptions"), " (Stripe | mirror)"))
    for n, sub_id in enumerate(sub_ids):
        lv, lc = by_id_live.get(sub_id), by_id_local.get(sub_id)
        stripe_part = (f"{lv['status']}, {lv['plan']}, renews {when(lv['current_period_end'])}"
                       + (", cancels at period end" if lv["cancel_at_period_end"] else "")) if lv else "—"
        local_part = f"{lc.status}, {lc.plan}" + (", cancels at period end" if lc.cancel_at_period_end else "") \
            if lc else "—"
        problem = None
        if stripe_error is None:
            if lv and not lc:
                problem = f"subscription {sub_id} is missing locally"
            elif lc and not lv:
                problem = f"subscription {sub_id} is unknown to Stripe"
            elif lv and lc and lv["status"] != lc.status:
                problem = f"subscription {sub_id} status differs: Stripe {lv['status']}, mirror {lc.status}"
            elif lv and lc and lv["cancel_at_period_end"] != lc.cancel_at_period_end:
                problem = f"subscription {sub_id}: cancel at period end differs"
        if problem:
            mismatches.append(problem)
        if n >= SUBSCRIPTIONS_SHOWN:
            continue  # compared all the same
        lines.append(Text(f"  {sub_id}: {stripe_part} | {local_part}", Text(" ", Status("warning")) if problem else ""))
        items = lv["items"] if lv else (lc.items or [] if lc else [])
        if len(items) > 1:
            lines += [f"    · {item_line(i)}" for i in items[:SUBSCRIPTIONS_SHOWN]]
            if len(items) > SUBSCRIPTIONS_SHOWN:
                lines.append(f"    · and {len(items) - SUBSCRIPTIONS_SHOWN} more items")
    if len(sub_ids) > SUBSCRIPTIONS_SHOWN:
        lines.append(shown_of(SUBSCRIPTIONS_SHOWN, len(sub_ids), "subscriptions",
                              dashboard_link(customer_id, livemode) if customer_id else None))

    # -- invoices: Stripe's recent ones, else the mirror's
    local_invoices = {i.id: i for i in (await session.execute(
        select(StripeInvoice).where(StripeInvoice.customer_id == customer_id)
        .order_by(StripeInvoice.invoice_created.desc()).limit(INVOICES_SHOWN))).scalars()} if customer_id else {}
    invoices_mirrored = (await session.execute(select(func.count()).select_from(StripeInvoice).where(
        StripeInvoice.customer_id == customer_id))).scalar_one() if customer_id else 0
    stripe_has_more = len(live_invoices) > INVOICES_SHOWN
    shown = live_invoices[:INVOICES_SHOWN] if live_invoices else []
    mirrored_invoices = list(local_invoices) + [inv["id"] for inv in shown if inv["id"] not in local_invoices]
    customer_payments = await payments.of_customer(session, customer_id, mirrored_invoices) if customer_id else []
    refunds_by_invoice: dict[str, int] = {}
    for payment in customer_payments:
        if payment.invoice_id:
            refunds_by_invoice[payment.invoice_id] = refunds_by_invoice.get(payment.invoice_id, 0) + \
                payments.refunded(payment)
    failed_invoices: list[dict[str, Any]] = []  # Stripe's, for their Retry / Resend / Mark paid / Void buttons
    if shown or local_invoices:
        lines.append(Text(Em("Recent invoices"), "" if shown else " (mirror)"))
    for inv in shown:
        values = invoice_values(inv, None)
        mirrored = local_invoices.get(inv["id"]) or await session.get(StripeInvoice, inv["id"])
        failed = values["payment_failed"] or (mirrored is not None and mirrored.payment_failed
                                              and values["status"] != "paid")
        mark = Text(" ", Status("failed"), " ", Em("payment failed")) if failed else ""
        retry = f", next attempt {when(ts(inv.get('next_payment_attempt')))}" if inv.get("next_payment_attempt") else ""
        refund = refunded_part(refunds_by_invoice.get(inv["id"], 0), values["currency"])
        lines.append(Text(f"  {inv['id']}: {values['status']}, {money(values['amount_due'], values['currency'])}, "
                          f"{values['attempt_count']} attempt(s){retry}{refund}", mark))
        if failed and len(failed_invoices) < FAILED_WITH_BUTTONS:
            failed_invoices.append(inv)
        if stripe_error is None:
            if mirrored is None:
                mismatches.append(f"invoice {inv['id']} is missing locally")
            elif mirrored.status != values["status"]:
                mismatches.append(f"invoice {inv['id']} status differs: Stripe {values['status']}, mirror {mirrored.status}")
    if not shown:
        for inv in local_invoices.values():
            mark = Text(" ", Status("failed"), " ", Em("payment failed")) if inv.payment_failed else ""
            refund = refunded_part(refunds_by_invoice.get(inv.id, 0), inv.currency)
            lines.append(Text(f"  {inv.id}: {inv.status}, {money(inv.amount_due, inv.currency)}, "
                              f"{inv.attempt_count} attempt(s){refund}", mark))
    invoices_total = max(invoices_mirrored, len(shown) if shown else len(local_invoices))
    shown_count = len(shown) if shown else len(local_invoices)
    if stripe_has_more or invoices_total > shown_count:
        total = invoices_total if invoices_total > shown_count else f"more than {shown_count}"
        lines.append(shown_of(shown_count, total, "invoices", dashboard_link(customer_id, livemode)))

    # -- refunds and open disputes (the mirror: refunds reach invoices through their payments)
    refunded_payments = [p for p in customer_payments if payments.refunded(p)]
    disputes = [(p, dispute_id, d) for p in customer_payments for dispute_id, d in payments.open_disputes(p)]
    if refunded_payments:
        total = sum(payments.refunded(p) for p in refunded_payments)
        currency = refunded_payments[0].currency
        lines.append(Text(Em("Refunds"), f": {money(total, currency)} over {len(refunded_payments)} payment(s)"))
        lines += [f"  {p.id}: {money(payments.refunded(p), p.currency)} of {money(p.amount, p.currency)} refunded"
                  + (f" (invoice {p.invoice_id})" if p.invoice_id else "") for p in refunded_payments[:PAYMENTS_SHOWN]]
        if len(refunded_payments) > PAYMENTS_SHOWN:
            lines.append(shown_of(PAYMENTS_SHOWN, len(refunded_payments), "refunded payments",
                                  dashboard_link(customer_id, livemode) if customer_id else None))
    if disputes:
        lines.append(Text(Icon("rotating_light"), " ", Em("Open disputes"), f": {len(disputes)}"))
        lines += [Text(f"  {dispute_id} on {p.id}: {money(d.get('amount'), d.get('currency') or p.currency)}, "
                       f"{d.get('status')}", f" ({clip(d.get('reason'), 100)})" if d.get("reason") else "")
                  for p, dispute_id, d in disputes[:PAYMENTS_SHOWN]]
        if len(disputes) > PAYMENTS_SHOWN:
            lines.append(shown_of(PAYMENTS_SHOWN, len(disputes), "open disputes",
                                  dashboard_link(customer_id, livemode) if customer_id else None))

    # -- credits
    if account is not None:
        entries = await ledger.recent_entries(session, account.id, limit=5)
        lines.append(Text(Em("Credits"), " (account ", Code(account.id), f"): {account.balance}"))
        lines += [Text("  ", entry_line(e)) for e in entries] or ["  no ledger entries"]
        if len(entries) == 5:
            lines.append(Text("  the newest 5 entries — more: ", Code(f"/revops credits {account.id}")))
    elif customer_id:
        lines.append(Text(Em("Credits"), ": no account linked to this customer yet"))

    # -- recent billing events
    failed_count = 0
    if customer_id:
        events = list((await session.execute(
            select(StripeEvent).where(StripeEvent.customer_id == customer_id)
            .order_by(StripeEvent.created.desc(), StripeEvent.received_at.desc()).limit(EVENTS_SHOWN))).scalars())
        failed_count = (await session.execute(select(func.count()).select_from(StripeEvent).where(
            StripeEvent.customer_id == customer_id, StripeEvent.status == "failed"))).scalar_one()
        lines.append(Text(Em("Recent billing events"), f" ({failed_count} failed)" if failed_count else ""))
        lines += [Text("  ", EVENT_ICONS.get(e.status, ""), f" {when(e.created)} {e.type} {e.id}: {e.status}",
                       Text(" — ", clip(e.error, 120)) if e.error else "") for e in events] or ["  none received"]
        if len(events) == EVENTS_SHOWN:
            events_total = (await session.execute(select(func.count()).select_from(StripeEvent).where(
                StripeEvent.customer_id == customer_id))).scalar_one()
            if events_total > EVENTS_SHOWN:
                lines.append(Text(shown_of(EVENTS_SHOWN, events_total, "events"), " (failed ones: ",
                                  Code("/revops replay failed"), ")"))

    if mismatches:
        listed = "; ".join(str(clip(m, TEXT_CHARS)) for m in mismatches[:MISMATCHES_SHOWN])
        if len(mismatches) > MISMATCHES_SHOWN:
            listed += f"; and {len(mismatches) - MISMATCHES_SHOWN} more"
        lines.insert(0, Text(Status("warning"), " ",
                             Em(f"{len(mismatches)} mismatch{'es' if len(mismatches) != 1 else ''}"), ": ", listed))
    elif stripe_error is None and customer_id:
        lines.insert(0, Text(Status("ok"), " Stripe and the mirror agree."))

    # A customer's name, email and description are Stripe's data: plain text, bounded here.
    name = (live or {}).get("name") or (local.name if local else None)
    email = (live or {}).get("email") or (local.email if local else None) or (account.email if account else None)
    description = (live or {}).get("description")
    head = Text("Customer ", Code(customer_id or "—"), Text(" — ", clip(name, TEXT_CHARS)) if name else "",
                Text(" (", clip(email, TEXT_CHARS), ")") if email else "")
    fields = [("Stripe", "unavailable" if stripe_error else ("found" if live else "not found")),
              ("Mirror", "found" if local else "not found")]
    if description:
        fields.append(("Description", clip(description, TEXT_CHARS)))
    if account is not None:
        fields.append(("Account", f"{account.id}: {account.balance} credits"))
    buttons = []
    if customer_id:
        buttons.append(Button("Sync from Stripe", "sync.customer", customer_id, style="primary"))
        buttons.append(Button("Replay failed events", "replay.failed_for", customer_id,
                              confirm=f"Replay {failed_count} failed events of {customer_id}?"))
    for inv in failed_invoices:  # the invoice command's buttons, next to each failed invoice
        buttons += [Button(f"{b.label} ({inv['id']})", b.action, b.value, b.style, b.confirm)
                    for b in invoice_buttons(inv)]
    return Reply(head, lines=lines, fields=fields, buttons=buttons)
