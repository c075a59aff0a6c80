"""`grant …` and `credits adjust …`: credit changes with a second person's approval (SPEC §5).

The request is validated (account, amount, reason, daily cap) before anything is
posted; Approve / Reject / Cancel buttons come back here; the router checks the
clicker's role, applies dry-run (these handlers keep money from moving themselves)
and writes the audit record in the same transaction as the decision.
"""

from bot.context import Context
from bot.grants import service
from bot.registry import CommandSet
from bot.reply import Reply
from bot.roles import Role

commands = CommandSet("grants")


@commands.command("grant <account> <amount:int> <reason...>", role=Role.responder, mutating=True, dry_run="handler",
                  summary="ask for credits for an account; a different approver must click Approve")
async def grant_request(ctx: Context, args: dict) -> Reply:
    return await service.request_change(ctx, kind="grant", account_ref=args["account"], amount=args["amount"],
                                        reason=args["reason"])


@commands.command("credits adjust <account> <amount:signed> <reason...>", role=Role.responder, mutating=True,
                  dry_run="handler", summary="a correction (+/-), through the same approval as a grant; never below zero")
async def adjust_request(ctx: Context, args: dict) -> Reply:
    return await service.request_change(ctx, kind="adjustment", account_ref=args["account"], amount=args["amount"],
                                        reason=args["reason"])


@commands.command("grant approve <request>", role=Role.approver, mutating=True, dry_run="handler",
                  summary="approve a pending request (same as its Approve button)")
async def approve_command(ctx: Context, args: dict) -> Reply:
    return await service.approve(ctx, service.parse_request_id(args["request"]))


@commands.command("grant reject <request> [reason...]", role=Role.approver, mutating=True,
                  summary="reject a pending request, with an optional reason")
async def reject_command(ctx: Context, args: dict) -> Reply:
    return await service.reject(ctx, service.parse_request_id(args["request"]), args.get("reason"))


@commands.command("grant cancel <request>", role=Role.responder, mutating=True,
                  summary="cancel your own pending request")
async def cancel_command(ctx: Context, args: dict) -> Reply:
    return await service.cancel(ctx, service.parse_request_id(args["request"]))


@commands.command("grant pending", role=Role.viewer, summary="pending credit requests")
async def pending_command(ctx: Context, args: dict) -> Reply:
    return await service.pending(ctx)


@commands.action("approve", role=Role.approver, dry_run="handler")
async def approve_click(ctx: Context, value: str) -> Reply:
    return await service.approve(ctx, service.parse_request_id(value))


@commands.action("reject", role=Role.approver)
async def reject_click(ctx: Context, value: str) -> Reply:
    return await service.reject(ctx, service.parse_request_id(value))


@commands.action("cancel", role=Role.responder)
async def cancel_click(ctx: Context, value: str) -> Reply:
    return await service.cancel(ctx, service.parse_request_id(value))
