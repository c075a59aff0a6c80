"""`receivables [--min AMOUNT] [--overdue DURATION] [--limit N]` (issue 18 item 3): the priority
collection list from the mirror — open invoices with money owed, ranked by amount × days
overdue — with **Remind** (the operator-editable `templates/friendly_reminder.md`, rendered for
that invoice, answered privately, ready to copy) and, for `send_invoice` invoices, **Resend
invoice** (`invoices.resend`, commands/invoice.py)."""

from typing import Any

from bot.billing import receivables as domain
from bot.billing.invoice_views import money
from bot.billing.receivables import Receivable
from bot.context import Context
from bot.errors import NotFound
from bot.registry import CommandSet
from bot.reply import Button, Reply
from bot.roles import Role
from bot.settings import Settings
from bot.templating import render_reply
from bot.text import Code, Text, clip

from bot.billing.invoices import parse_invoice_id

commands = CommandSet("receivables")

DEFAULT_LIMIT = 20
MAX_LIMIT = 50  # buttons per message stay within Slack's limits
TEMPLATE = "friendly_reminder.md"


def _who(r: Receivable) -> str:
    c = r.customer
    if c is None:
        return r.invoice.customer_id or "unknown customer"
    return c.email or c.name or c.id


def _row(r: Receivable) -> Text:
    inv = r.invoice
    failure = Text(" — last failure: ", clip(r.last_failure, 200)) if r.last_failure else ""
    return Text(Code(inv.id), " ", clip(_who(r), 120), f" — {money(r.amount, inv.currency)}, "
                f"{r.days_overdue} days overdue, {inv.attempt_count} attempts", failure)


@commands.command("receivables [--min AMOUNT] [--overdue DURATION] [--limit N]", role=Role.viewer,
                  examples=["receivables", "receivables --min 500 --overdue 7d --limit 10"],
                  summary="the priority collection list: open invoices by amount × days overdue, with Remind")
async def receivables_command(ctx: Context, args: dict) -> Reply:
    limit = min(max(int(args.get("limit") or DEFAULT_LIMIT), 1), MAX_LIMIT)
    min_amount = domain.parse_amount(args.get("min"))
    rows, total = await domain.receivables(ctx.session, ctx.now, min_amount=min_amount,
                                           overdue=args.get("overdue"), limit=limit)
    head = "Receivables: open invoices by amount × days overdue"
    if not rows:
        return Reply(head, lines=["No open invoices with money owed match."])
    lines = [Text(f"{i}. ", _row(r)) for i, r in enumerate(rows, 1)]
    buttons = []
    for i, r in enumerate(rows, 1):  # labelled by the row's number
        buttons.append(Button(f"Remind {i}", "receivables.remind", r.invoice.id))
        if r.resendable:
            buttons.append(Button(f"Resend {i}", "invoices.resend", r.invoice.id,
                                  confirm=f"Email {r.invoice.id} to the customer again?"))
    footer = (Text(f"Showing the first {len(rows)} of {total} — more: ",
                   Code(f"/revops receivables --limit {MAX_LIMIT}"), " or narrow with --min / --overdue")
              if total > len(rows) else None)
    return Reply(head, lines=lines, buttons=buttons, footer=footer)


def reminder_context(r: Receivable) -> dict[str, Any]:
    inv = r.invoice
    due = domain.due_of(inv)
    return {"customer": _who(r), "recipient": (r.customer.name if r.customer and r.customer.name else _who(r)),
            "invoice": inv.id, "amount": money(r.amount, inv.currency), "days": r.days_overdue,
            "due": f"due {due:%Y-%m-%d}" if due else "due date unknown",
            "failure": r.last_failure or "none recorded"}


@commands.action("remind", role=Role.responder, mutating=False)
async def remind_click(ctx: Context, value: str) -> Reply:
    """The reminder text for one invoice, privately, ready to copy (nothing is sent to anyone)."""
    invoice_id = parse_invoice_id(value)
    r = await domain.one(ctx.session, invoice_id, ctx.now)
    if r is None:
        raise NotFound(Text("the mirror has no invoice ", Code(invoice_id)))
    reply = render_reply(ctx.settings, TEMPLATE, **reminder_context(r))
    reply.private = True
    if r.resendable and r.invoice.status == "open":
        reply.buttons = [Button("Resend invoice", "invoices.resend", invoice_id,
                                confirm=f"Email {invoice_id} to the customer again?")]
    return reply


def sample_contexts(settings: Settings) -> dict[str, dict[str, Any]]:
    """Sample data for the reminder template (start-up and preflight render it)."""
    return {TEMPLATE: {"customer": "ada@example.com", "recipient": "Ada", "invoice": "in_1SAMPLE",
                       "amount": "1,250.00 USD", "days": 12, "due": "due 2026-01-05",
                       "failure": "Your card was declined. (insufficient_funds)"}}


