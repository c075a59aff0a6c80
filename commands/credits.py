"""`credits <account>`: balance and recent ledger entries.

(`credits adjust …` belongs to the grants family; the registry picks the longest command path,
so it can be declared there without touching this module.)"""

from bot.billing import ledger
from bot.context import Context
from bot.errors import UsageError
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role
from bot.text import Code, Em, Text

from ._billing import entry_line

commands = CommandSet("credits")


@commands.command("credits <account>", summary="credit balance and recent ledger entries (account, cus_… or email)",
                  role=Role.viewer, examples=["credits acct_42", "credits ada@example.com"])
async def show_credits(ctx: Context, args: dict) -> Reply:
    account = await ledger.find_account(ctx.session, args["account"])
    if account is None:
        raise UsageError(Text("no account matches ", Code(args["account"][:60]),
                              " (an account id, a cus_… id or an email)"))
    entries = await ledger.recent_entries(ctx.session, account.id, limit=10)
    fields = [("Balance", f"{account.balance} credits")]
    if account.stripe_customer_id:
        fields.append(("Stripe customer", account.stripe_customer_id))
    if account.email:
        fields.append(("Email", account.email))
    lines = [Text(Em("Recent entries"))] + [entry_line(e) for e in entries] if entries else ["No ledger entries yet."]
    return Reply(Text("Account ", Code(account.id), ": ", Em(str(account.balance)), " credits"), fields=fields,
                 lines=lines)
