"""Four-eyes credit changes: request → one atomic decision → ledger entry, exactly once.

The decision is a conditional UPDATE (pending → approved|rejected|cancelled|expired)
in the same transaction as the ledger entry (idempotency key = the request id) and
the audit record the router writes: a second click, a concurrent click or a
replayed request finds the row no longer pending and changes nothing.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from sqlalchemy import func, select, update

from bot import audit
from bot.billing import ledger
from bot.billing.models import LedgerEntry
from bot.context import Context
from bot.errors import NotFound, UsageError
from bot.grammar import as_id
from bot.outbox import enqueue
from bot.reply import Button, Reply
from bot.services import Services

from .models import GrantRequest

SYSTEM_ACTOR = "revops"


def parse_request_id(raw: str) -> int:
    request_id = as_id(raw)
    if request_id is None:
        raise UsageError(f"a request is named by its number, such as #12; got `{raw[:40]}`")
    return request_id


def _hhmm(when: datetime) -> str:
    return f"{when:%H:%M} UTC"


def _amount(req: GrantRequest) -> str:
    return f"{req.amount:+d} credits" if req.kind == "adjustment" else f"{req.amount} credits"


def _account_label(account) -> str:
    extra = [x for x in (account.email, account.stripe_customer_id) if x and x != account.id]
    return f"`{account.id}`" + (f" ({', '.join(extra)})" if extra else "")


def request_message(req: GrantRequest, account, balance: int) -> Reply:
    title = "Credit grant" if req.kind == "grant" else "Credit adjustment"
    return Reply(
        f":hourglass_flowing_sand: *{title} request #{req.id}* needs a second person: an approver who is not "
        f"<@{req.requester}>.",
        fields=[
            ("Requested by", f"<@{req.requester}>"),
            ("Account", _account_label(account)),
            ("Amount", _amount(req)),
            ("Reason", req.reason),
            ("Current balance", f"{balance} credits"),
            ("Expires", f"{_hhmm(req.expires_at)} (after {int((req.expires_at - req.created_at).total_seconds() // 60)} min)"),
        ],
        buttons=[
            Button("Approve", "grants.approve", str(req.id), style="primary",
                   confirm=f"Approve {_amount(req)} for {req.account_id}? This moves credits."),
            Button("Reject", "grants.reject", str(req.id), style="danger"),
            Button("Cancel request", "grants.cancel", str(req.id)),
        ],
        private=False,
        tag="dry run" if req.dry_run else None,
    )


def outcome_message(req: GrantRequest) -> Reply:
    title = "Credit grant" if req.kind == "grant" else "Credit adjustment"
    when = _hhmm(req.decided_at) if req.decided_at else ""
    lines = {
        "approved": f":white_check_mark: *{title} #{req.id} approved* by <@{req.decided_by}> at {when}: "
                    f"{_amount(req)} to `{req.account_id}`."
                    + (f" New balance: {req.balance_after} credits." if req.balance_after is not None else ""),
        "rejected": f":x: *{title} #{req.id} rejected* by <@{req.decided_by}> at {when}."
                    + (f" Reason: {req.decision_note}" if req.decision_note else ""),
        "cancelled": f":heavy_multiplication_x: *{title} #{req.id} cancelled* by <@{req.decided_by}> at {when}.",
        "expired": f":hourglass: *{title} #{req.id} expired* at {_hhmm(req.expires_at)} without a decision; "
                   "nothing was granted.",
    }
    return Reply(
        lines[req.status],
        fields=[("Requested by", f"<@{req.requester}>"), ("Account", f"`{req.account_id}`"),
                ("Amount", _amount(req)), ("Reason", req.reason)],
        private=False,
        tag="dry run" if req.dry_run else None,
    )


def _describe_decided(req: GrantRequest) -> str:
    if req.status == "expired":
        return f"Request #{req.id} expired at {_hhmm(req.expires_at)}; nothing was granted."
    return (f"Request #{req.id} was already {req.status} by <@{req.decided_by}> at "
            f"{req.decided_at:%Y-%m-%d %H:%M:%S} UTC; nothing more was done.")


async def _cap_used(ctx: Context, account_id: str) -> tuple[int, int]:
    """Credits added to the account today (grants and positive adjustments) and still pending."""
    start = datetime.combine(ctx.now.date(), time(0), tzinfo=timezone.utc)
    granted = (await ctx.session.execute(
        select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.kind.in_(("grant", "adjustment")),
            LedgerEntry.delta > 0, LedgerEntry.at >= start, LedgerEntry.at < start + timedelta(days=1))
    )).scalar_one()
    pending = (await ctx.session.execute(
        select(func.coalesce(func.sum(GrantRequest.amount), 0)).where(
            GrantRequest.account_id == account_id, GrantRequest.status == "pending",
            GrantRequest.expires_at > ctx.now, GrantRequest.amount > 0, GrantRequest.dry_run.is_(False))
    )).scalar_one()
    return int(granted), int(pending)


async def request_change(ctx: Context, *, kind: str, account_ref: str, amount: int, reason: str) -> Reply:
    """Validate, then post the approval request to the channel. Nothing moves yet."""
    credits = ctx.settings.cfg.credits
    account = await ledger.resolve_account(ctx.session, account_ref)
    if account is None:
        raise UsageError(f"no account matches `{account_ref[:60]}` (give an email, a cus_… id or an account id)")
    reason = reason.strip()
    if not reason:
        raise UsageError("a reason is required")
    if kind == "grant" and not 1 <= amount <= credits.max_grant:
        raise UsageError(f"amount must be a whole number from 1 to {credits.max_grant} credits; got {amount}")
    if kind == "adjustment" and (amount == 0 or abs(amount) > credits.max_grant):
        raise UsageError(f"an adjustment must be non-zero and at most ±{credits.max_grant} credits; got {amount:+d}")
    current = await ledger.balance(ctx.session, account.id)
    if current + amount < 0:
        raise UsageError(f"that adjustment would take `{account.id}` below zero: the balance is {current} credits "
                         f"and the change is {amount:+d}")
    if amount > 0:
        granted, pending = await _cap_used(ctx, account.id)
        if granted + pending + amount > credits.daily_cap:
            raise UsageError(
                f"daily cap: `{account.id}` has {granted} credits granted and {pending} pending today; "
                f"{amount} more would exceed the cap of {credits.daily_cap} (at most {max(0, credits.daily_cap - granted - pending)} more today)"
            )
    req = GrantRequest(kind=kind, account_id=account.id, amount=amount, reason=reason[:1000], requester=ctx.actor,
                       channel=ctx.channel or "C0CONSOLE", status="pending", dry_run=ctx.dry_run,
                       created_at=ctx.now, expires_at=ctx.now + credits.approval_ttl)
    ctx.session.add(req)
    await ctx.session.flush()
    ctx.post(req.channel, request_message(req, account, current), ref=req.ref)
    ctx.note(subject=account.id, detail=f"requested {_amount(req)}: {req.reason}", request=req.id,
             account=account.id, amount=amount, reason=req.reason, requester=ctx.actor)
    return Reply(f"Request #{req.id} posted for approval: {_amount(req)} to `{account.id}`. "
                 f"It expires at {_hhmm(req.expires_at)}.")


async def _load(ctx: Context, request_id: int) -> GrantRequest:
    req = await ctx.session.get(GrantRequest, request_id, populate_existing=True)
    if req is None:
        raise NotFound(f"there is no grant request #{request_id}")
    return req


def _refused(ctx: Context, req: GrantRequest, text: str) -> Reply:
    ctx.outcome = "refused"
    ctx.note(subject=req.account_id, detail=text, request=req.id, account=req.account_id, amount=req.amount,
             reason=req.reason, requester=req.requester)
    return Reply(text)


async def _transition(ctx: Context, req: GrantRequest, status: str, note: str | None = None) -> bool:
    """pending → status, once. False when someone else decided first or it has expired."""
    result = await ctx.session.execute(
        update(GrantRequest)
        .where(GrantRequest.id == req.id, GrantRequest.status == "pending", GrantRequest.expires_at > ctx.now)
        .values(status=status, decided_by=ctx.actor, decided_at=ctx.now, decision_note=note)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def _explain_no_transition(ctx: Context, req: GrantRequest) -> Reply:
    req = await _load(ctx, req.id)
    if req.status == "pending":  # still pending, so it is past its expiry: record that now
        await expire_one(ctx.session, req, ctx.now)
        ctx.update(req.ref, outcome_message(req))
    return _refused(ctx, req, _describe_decided(req))


async def approve(ctx: Context, request_id: int) -> Reply:
    req = await _load(ctx, request_id)
    if req.requester == ctx.actor:
        return _refused(ctx, req, f"You asked for request #{req.id}; four eyes: a different approver must approve it.")
    if not await _transition(ctx, req, "approved"):
        return await _explain_no_transition(ctx, req)
    req = await _load(ctx, request_id)
    simulated = req.dry_run or ctx.dry_run
    if simulated:
        req.balance_after = await ledger.balance(ctx.session, req.account_id)
        req.dry_run = True
    else:
        entry = await ledger.append_entry(
            ctx.session, account_id=req.account_id, delta=req.amount, kind=req.kind, reason=req.reason,
            actor=ctx.actor, idempotency_key=f"grant-request:{req.id}", at=ctx.now, ref=req.ref,
        )
        req.ledger_entry_id = entry.id
        req.balance_after = entry.balance_after
    await ctx.session.flush()
    ctx.update(req.ref, outcome_message(req))
    ctx.post(req.requester, Reply(
        f"Your {req.what} request #{req.id} ({_amount(req)} to `{req.account_id}`) was approved by <@{ctx.actor}>."
        + ("" if simulated else f" New balance: {req.balance_after} credits."),
        tag="dry run" if simulated else None))
    ctx.note(subject=req.account_id,
             detail=f"approved {_amount(req)} for {req.account_id} requested by {req.requester}: {req.reason}",
             request=req.id, account=req.account_id, amount=req.amount, reason=req.reason,
             requester=req.requester, approver=ctx.actor, balance_after=req.balance_after)
    reply = Reply(f"Approved request #{req.id}: {_amount(req)} to `{req.account_id}`."
                  + (" Nothing moved (dry run)." if simulated else f" New balance: {req.balance_after} credits."))
    if simulated:
        reply.tag = "dry run"
    return reply


async def reject(ctx: Context, request_id: int, note: str | None = None) -> Reply:
    req = await _load(ctx, request_id)
    if not await _transition(ctx, req, "rejected", note):
        return await _explain_no_transition(ctx, req)
    req = await _load(ctx, request_id)
    ctx.update(req.ref, outcome_message(req))
    ctx.post(req.requester, Reply(f"Your {req.what} request #{req.id} was rejected by <@{ctx.actor}>."
                                  + (f" Reason: {note}" if note else "")))
    ctx.note(subject=req.account_id, detail=f"rejected request #{req.id}" + (f": {note}" if note else ""),
             request=req.id, account=req.account_id, amount=req.amount, reason=req.reason,
             requester=req.requester, rejected_by=ctx.actor)
    return Reply(f"Rejected request #{req.id}.")


async def cancel(ctx: Context, request_id: int) -> Reply:
    req = await _load(ctx, request_id)
    if req.requester != ctx.actor:
        return _refused(ctx, req, f"Only <@{req.requester}>, who asked, can cancel request #{req.id}.")
    if not await _transition(ctx, req, "cancelled"):
        return await _explain_no_transition(ctx, req)
    req = await _load(ctx, request_id)
    ctx.update(req.ref, outcome_message(req))
    ctx.note(subject=req.account_id, detail=f"cancelled request #{req.id}", request=req.id,
             account=req.account_id, amount=req.amount, requester=req.requester)
    return Reply(f"Cancelled request #{req.id}.")


async def pending(ctx: Context) -> Reply:
    rows = (await ctx.session.execute(
        select(GrantRequest).where(GrantRequest.status == "pending", GrantRequest.expires_at > ctx.now)
        .order_by(GrantRequest.id).limit(25))).scalars().all()
    lines = [f"#{r.id} {_amount(r)} to `{r.account_id}` by <@{r.requester}> — {r.reason} "
             f"(expires {_hhmm(r.expires_at)})" for r in rows] or ["No pending requests."]
    return Reply("Pending credit requests", lines=lines)


async def expire_one(session, req: GrantRequest, now: datetime) -> bool:
    result = await session.execute(
        update(GrantRequest)
        .where(GrantRequest.id == req.id, GrantRequest.status == "pending", GrantRequest.expires_at <= now)
        .values(status="expired").execution_options(synchronize_session=False))
    if result.rowcount == 1:
        await session.refresh(req)
        return True
    return False


async def expire_due(services: Services) -> int:
    """The sweep: expire every pending request past its time and update its message in place."""
    now = services.clock.now()
    count = 0
    async with services.db.transaction() as session:
        due = (await session.execute(
            select(GrantRequest).where(GrantRequest.status == "pending", GrantRequest.expires_at <= now)
            .order_by(GrantRequest.id).limit(200))).scalars().all()
        for req in due:
            if not await expire_one(session, req, now):
                continue
            count += 1
            await enqueue(session, channel=req.channel, reply=outcome_message(req), at=now, kind="update",
                          ref=req.ref)
            await audit.append(session, at=now, actor=SYSTEM_ACTOR, command="grants.expire",
                               args={"request": req.id, "account": req.account_id, "amount": req.amount},
                               outcome="expired", channel=req.channel, surface="worker",
                               detail=f"request #{req.id} expired without a decision", subject=req.account_id)
    if count:
        for notify in services.on_posts:
            notify()
    return count
