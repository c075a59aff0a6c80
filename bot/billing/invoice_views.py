"""What people read about an invoice: the side-by-side view (Stripe | mirror), its buttons by
state, and the four-eyes approval message and its outcome (posted by `commands/invoice.py`,
updated in place by the expiry sweep, `invoice_jobs.py`).

Typed text (bot/text.py): ids are `Code`, people `User`, a reason or Stripe's message is data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.approvals import decision_buttons
from bot.reply import Button, Reply
from bot.text import Code, Em, Icon, Text, User, clip

from .mirror import ts
from .invoices import ACTION_NAMES, InvoiceActionRequest, InvoiceView, actions_for

REASON_CHARS = 500
TITLES = {"mark_paid": "Mark invoice paid out of band", "void": "Void invoice"}


def money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "—"
    return f"{amount / 100:,.2f} {(currency or '').upper()}".strip()


def when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "—"


def hhmm(value: datetime) -> str:
    return f"{value:%H:%M} UTC"


def _pair(stripe_value: str, mirror_value: str | None) -> str:
    if mirror_value is None:
        return f"{stripe_value} · mirror: —"
    if stripe_value == mirror_value:
        return f"{stripe_value} · mirror: same"
    return f"{stripe_value} · mirror: {mirror_value} (differs)"


def invoice_buttons(invoice: dict[str, Any] | None) -> list[Button]:
    buttons = []
    for action in actions_for(invoice):
        invoice_id = invoice["id"]
        amount = money(invoice.get("amount_remaining"), invoice.get("currency"))
        if action == "pay":
            buttons.append(Button("Retry payment", "invoices.retry", invoice_id, style="primary",
                                  confirm=f"Charge {amount} for {invoice_id} now?"))
        elif action == "send":
            buttons.append(Button("Resend invoice", "invoices.resend", invoice_id,
                                  confirm=f"Email {invoice_id} to the customer again?"))
        elif action == "mark_paid":
            buttons.append(Button("Mark paid out of band", "invoices.mark_paid", invoice_id,
                                  confirm=f"Ask an approver to mark {invoice_id} paid outside Stripe?"))
        elif action == "void":
            buttons.append(Button("Void", "invoices.void", invoice_id, style="danger",
                                  confirm=f"Ask an approver to void {invoice_id}? A voided invoice cannot be paid."))
    return buttons


def invoice_reply(view: InvoiceView) -> Reply:
    """Stripe's invoice and the mirror's row side by side; buttons by Stripe's state."""
    s, m = view.stripe or {}, view.mirror
    cur = s.get("currency") or (m.currency if m else None)
    if not s:
        head = Text(Icon("warning"), " ", Em("Invoice "), Code(view.invoice_id),
                    ": Stripe has no such invoice; the mirror's row is shown.")
    else:
        head = Text(Icon("receipt"), " ", Em("Invoice "), Code(view.invoice_id), f" — {s.get('status') or '?'}")
    fields: list[tuple[str, Any]] = []

    def row(label, stripe_value, mirror_value):
        fields.append((label, _pair(stripe_value, mirror_value) if s else f"— · mirror: {mirror_value or '—'}"))

    row("Status", str(s.get("status")), m.status if m else None)
    row("Amount due", money(s.get("amount_due"), cur), money(m.amount_due, cur) if m else None)
    row("Amount paid", money(s.get("amount_paid"), cur), money(m.amount_paid, cur) if m else None)
    row("Amount remaining", money(s.get("amount_remaining"), cur), money(m.amount_remaining, cur) if m else None)
    row("Attempts", str(int(s.get("attempt_count") or 0)), str(m.attempt_count) if m else None)
    row("Next attempt", when(ts(s.get("next_payment_attempt"))), when(m.next_payment_attempt) if m else None)
    if s:
        customer = view.customer
        who = Text(Code(str(s.get("customer") if not isinstance(s.get("customer"), dict) else s["customer"]["id"])))
        if customer is not None and (customer.email or customer.name):
            who = Text(who, " ", clip(customer.email or customer.name or "", 200))
        fields.append(("Customer", who))
        fields.append(("Collection", str(s.get("collection_method") or "—")))
        if s.get("due_date"):
            fields.append(("Due", when(ts(s.get("due_date")))))
    pi = view.payment_intent
    if pi is not None:
        fields.append(("Payment intent", Text(Code(pi.get("id") or "?"), f" — {pi.get('status') or '?'}")))
    if view.last_error:
        fields.append(("Last error", clip(view.last_error, 300)))
    refunds = [(rid, r) for p in view.payments for rid, r in (p.refunds or {}).items()]
    disputes = [(did, d) for p in view.payments for did, d in (p.disputes or {}).items()]
    fields.append(("Refunds", "none" if not refunds else ", ".join(
        f"{rid} {money(r.get('amount'), cur)} {r.get('status') or ''}".strip() for rid, r in refunds[:10])))
    fields.append(("Disputes", "none" if not disputes else ", ".join(
        f"{did} {money(d.get('amount'), cur)} {d.get('status') or ''} ({d.get('reason') or '?'})".strip()
        for did, d in disputes[:10])))
    lines = [Text(Icon("hourglass_flowing_sand"), f" Request #{r.id} to {ACTION_NAMES[r.action]} by ",
                  User(r.requester, ping=False), f" is {r.status} (expires {hhmm(r.expires_at)})")
             for r in view.requests]
    buttons = [] if view.requests else invoice_buttons(view.stripe)
    return Reply(head, lines=lines, fields=fields, buttons=buttons)


def request_message(req: InvoiceActionRequest) -> Reply:
    ttl_min = int((req.expires_at - req.created_at).total_seconds() // 60)
    return Reply(
        Text(Icon("hourglass_flowing_sand"), " ", Em(f"{TITLES[req.action]} — request #{req.id}"),
             " needs a second person: an approver who is not ", User(req.requester), "."),
        fields=[("Requested by", Text(User(req.requester))), ("Invoice", Text(Code(req.invoice_id))),
                ("Customer", Text(Code(req.customer_id or "—"))), ("Amount", money(req.amount, req.currency)),
                ("Reason", clip(req.reason, REASON_CHARS)),
                ("Expires", f"{hhmm(req.expires_at)} (after {ttl_min} min)")],
        buttons=request_buttons(req),
        private=False, tag="dry run" if req.dry_run else None)


def request_buttons(req: InvoiceActionRequest) -> list[Button]:
    return decision_buttons("invoices", req.id, confirm=f"Approve: {ACTION_NAMES[req.action]} for {req.invoice_id}? "
                                                        "Stripe is called now.")


def outcome_text(req: InvoiceActionRequest) -> Text:
    title = f"{TITLES[req.action]} #{req.id}"
    at = hhmm(req.decided_at) if req.decided_at else ""
    if req.status == "approved":
        return Text(Icon("white_check_mark"), " ", Em(f"{title} approved"), " by ", User(req.decided_by),
                    f" at {at}: ", Code(req.invoice_id),
                    " (dry run: Stripe was not called)." if req.dry_run else
                    (" is marked paid out of band." if req.action == "mark_paid" else " is void."))
    if req.status == "failed":
        return Text(Icon("x"), " ", Em(f"{title} approved by "), User(req.decided_by),
                    ", but Stripe refused: ", clip(req.decision_note or "", 300))
    if req.status == "rejected":
        return Text(Icon("x"), " ", Em(f"{title} rejected"), " by ", User(req.decided_by), f" at {at}.",
                    Text(" Reason: ", clip(req.decision_note, REASON_CHARS)) if req.decision_note else "")
    if req.status == "cancelled":
        return Text(Icon("heavy_multiplication_x"), " ", Em(f"{title} cancelled"), " by ", User(req.decided_by),
                    f" at {at}.")
    if req.status == "expired":
        return Text(Icon("hourglass"), " ", Em(f"{title} expired"),
                    f" at {hhmm(req.expires_at)} without a decision; nothing was done.")
    return Text(Em(title), f" is {req.status}.")


def outcome_message(req: InvoiceActionRequest) -> Reply:
    return Reply(outcome_text(req),
                 fields=[("Requested by", Text(User(req.requester))), ("Invoice", Text(Code(req.invoice_id))),
                         ("Amount", money(req.amount, req.currency)), ("Reason", clip(req.reason, REASON_CHARS))],
                 private=False, tag="dry run" if req.dry_run else None)
