"""`export customers|payments|invoices|ledger|audit|events [--since 30d]` (issue 18 item 4): a CSV
uploaded to the channel through Slack's external upload and served by a signed expiring link,
approver only, audited, emails blank unless `[exports] include_email`, formulas neutralised;
through signed Slack requests on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from bot import audit
from bot.billing import ledger
from bot.billing.export_models import Export
from bot.billing.models import StripeCustomer, StripeEvent, StripeInvoice, StripePayment
from bot.clock import FakeClock
from bot.models import AuditRecord
from tests.support.harness import ADMIN, APPROVER, CHANNEL, RESPONDER, VIEWER, Bot, make_settings

HEADERS = {
    "customers": ["id", "name", "email", "account_id", "deleted", "updated_at"],
    "payments": ["id", "customer_id", "invoice_id", "charge_id", "status", "currency", "amount_minor", "amount",
                 "amount_refunded_minor", "amount_refunded", "failure", "updated_at"],
    "invoices": ["id", "customer_id", "subscription_id", "status", "currency", "amount_due_minor", "amount_due",
                 "amount_paid_minor", "amount_paid", "amount_remaining_minor", "amount_remaining", "attempt_count",
                 "collection_method", "created", "due_date", "updated_at"],
    "ledger": ["id", "at", "account_id", "email", "kind", "delta", "balance_after", "reason", "actor", "ref"],
    "audit": ["id", "at", "actor", "command", "outcome", "channel", "surface", "subject", "detail", "args"],
    "events": ["id", "type", "created", "received_at", "status", "object_id", "customer_id", "livemode", "source",
               "attempts", "detail", "error"],
}
EVIL_NAME = '=HYPERLINK("http://evil.example/x","click") <!channel>'
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def clock():
    return FakeClock()


async def seed(bot: Bot, now) -> None:
    async with bot.db() as db, db.transaction() as s:
        s.add(StripeCustomer(id="cus_ADA", email="ada@example.com", name="Ada", account_id="acct_ada", version=0,
                             updated_at=now - timedelta(days=2)))
        s.add(StripeCustomer(id="cus_EVIL", email="evil@example.com", name=EVIL_NAME, version=0,
                             updated_at=now - timedelta(days=1)))
        s.add(StripeCustomer(id="cus_OLD", email="old@example.com", name="Old", version=0,
                             updated_at=now - timedelta(days=40)))  # outside the default 30 days
        s.add(StripeInvoice(id="in_1ADA", customer_id="cus_ADA", status="open", currency="usd", amount_due=4900,
                            amount_paid=0, amount_remaining=4900, attempt_count=2, payment_failed=True,
                            invoice_created=now - timedelta(days=3), version=0, updated_at=now - timedelta(days=1)))
        s.add(StripeInvoice(id="in_1YEN", customer_id="cus_ADA", status="paid", currency="jpy", amount_due=1500,
                            amount_paid=1500, amount_remaining=0, version=0, updated_at=now - timedelta(hours=2)))
        s.add(StripePayment(id="pi_ADA", customer_id="cus_ADA", invoice_id="in_1ADA", charge_id="ch_ADA",
                            status="requires_payment_method", currency="usd", amount=4900, amount_refunded=0,
                            failure="Your card 4242 4242 4242 4242 was declined.", version=1,
                            updated_at=now - timedelta(days=1)))
        s.add(StripeEvent(id="evt_1", type="invoice.payment_failed", created=now - timedelta(days=1), livemode=False,
                          object_id="in_1ADA", customer_id="cus_ADA",
                          payload={"data": {"object": {"card": {"number": "4000000000000002"},
                                                       "customer_email": "ada@example.com"}}},
                          status="processed", detail="mirror updated", source="webhook", attempts=1,
                          received_at=now - timedelta(days=1), processed_at=now - timedelta(days=1)))
        await ledger.ensure_account(s, "acct_ada", email="ada@example.com", at=now - timedelta(days=3))
        await ledger.append_entry(s, account_id="acct_ada", delta=50, kind="grant", reason="goodwill for ada@example.com",
                                  actor=APPROVER, idempotency_key="t:1", at=now - timedelta(days=2))
        await ledger.append_entry(s, account_id="acct_ada", delta=-30, kind="claim", reason="spent", actor="app",
                                  idempotency_key="t:2", at=now - timedelta(days=1))
        await audit.append(s, at=now - timedelta(hours=5), actor=RESPONDER, command="customer",
                           args={"target": "ada@example.com"}, outcome="ok", channel=CHANNEL, surface="slack",
                           detail=None, subject="cus_ADA")


def start(tmp_path, db_url, fake_slack, clock, extra_toml: str = "") -> Bot:
    settings = make_settings(tmp_path, db_url, fake_slack.api_url, extra_toml)
    bot = Bot(settings, fake_slack, clock=clock).start()
    asyncio.run(seed(bot, clock.now()))
    return bot


@pytest.fixture
def ebot(tmp_path, db_url, fake_slack, clock):
    bot = start(tmp_path, db_url, fake_slack, clock)
    yield bot
    bot.stop()


def parse(content: bytes) -> list[list[str]]:
    text = content.decode("utf-8")
    assert text.endswith("\r\n")  # RFC 4180 line ends
    return list(csv.reader(io.StringIO(text, newline="")))


def export(bot: Bot, kind: str, *, user: str = APPROVER, since: str = "") -> tuple[str, str, dict]:
    """Run it; the answer, its signed link, and the file the fake Slack received."""
    before = len(bot.slack.files)
    answer = bot.answer_text(f"export {kind}{' --since ' + since if since else ''}", user=user)
    bot.drain_sync()
    assert len(bot.slack.files) == before + 1, answer
    links = re.findall(r"http://revops\.test(/exports/[0-9a-f]+\.csv\?exp=\d+&(?:amp;)?sig=[0-9a-f]+)", answer)
    assert links, answer
    return answer, links[0].replace("&amp;", "&"), bot.slack.files[-1]


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_each_kind_is_a_csv_uploaded_to_the_channel_and_behind_its_signed_link(ebot, kind):
    answer, link, file = export(ebot, kind)
    rows = parse(file["content"])
    assert rows[0] == HEADERS[kind]
    assert all(len(r) == len(rows[0]) for r in rows)
    assert file["channel"] == CHANNEL
    ids = [r[0] for r in rows[1:]]
    if kind == "customers":
        assert ids == ["cus_ADA", "cus_EVIL"]  # oldest first; cus_OLD is past the 30 days
        assert rows[1][HEADERS[kind].index("updated_at")] and ISO.match(rows[1][-1])
    elif kind == "invoices":
        by = {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
        assert by["in_1ADA"]["amount_due_minor"] == "4900" and by["in_1ADA"]["amount_due"] == "49.00"
        assert by["in_1YEN"]["amount_paid_minor"] == "1500" and by["in_1YEN"]["amount_paid"] == "1500"  # zero-decimal
        assert ISO.match(by["in_1ADA"]["created"])
    elif kind == "payments":
        row = dict(zip(rows[0], rows[1]))
        assert (row["id"], row["amount_minor"], row["amount"], row["currency"]) == ("pi_ADA", "4900", "49.00", "USD")
        assert "4242 4242" not in row["failure"] and "[number]" in row["failure"]  # card numbers masked
    elif kind == "ledger":
        assert [(r[4], r[5], r[6]) for r in rows[1:]] == [("grant", "50", "50"), ("claim", "-30", "20")]
    elif kind == "events":
        assert ids == ["evt_1"]
        assert b"4000000000000002" not in file["content"]  # never the payload
    elif kind == "audit":
        assert "customer" in [r[3] for r in rows[1:]]
    # the signed link serves the very same bytes
    response = ebot.http.get(link)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.content == file["content"]
    assert f"{len(rows) - 1} row" in answer


def test_expired_or_tampered_links_are_refused_in_words(ebot, clock):
    _, link, _ = export(ebot, "customers")
    path, query = link.split("?")
    tampered = re.sub(r"sig=([0-9a-f])", lambda m: "sig=" + ("0" if m.group(1) != "0" else "1"), link)
    other = ebot.http.get(tampered)
    assert other.status_code == 403 and "invalid or has expired" in other.text
    assert ebot.http.get(path).status_code == 403  # no signature at all
    assert ebot.http.get(path.replace(".csv", "0.csv") + "?" + query).status_code == 403  # another export's path
    assert ebot.http.get(link).status_code == 200
    clock.advance(timedelta(hours=24, minutes=1))
    late = ebot.http.get(link)
    assert late.status_code == 403 and "invalid or has expired" in late.text


def test_expired_exports_are_pruned(ebot, clock):
    export(ebot, "customers")
    clock.advance(timedelta(hours=25))
    export(ebot, "payments")
    kinds = [r[0] for r in asyncio.run(_query(ebot, select(Export.kind)))]
    assert kinds == ["payments"]


async def _query(bot: Bot, stmt):
    async with bot.db() as db, db.transaction() as s:
        return list((await s.execute(stmt)).all())


@pytest.mark.parametrize("user", [VIEWER, RESPONDER])
def test_a_viewer_or_responder_is_refused(ebot, user):
    answer = ebot.answer_text("export customers", user=user)
    assert "approver" in answer
    ebot.drain_sync()
    assert ebot.slack.files == [] and ebot.slack.calls_of("files.getUploadURLExternal") == []
    assert asyncio.run(_query(ebot, select(Export.id))) == []
    denied = asyncio.run(_query(ebot, select(AuditRecord.outcome).where(AuditRecord.command == "export")))
    assert [d[0] for d in denied] == ["denied"]


def test_the_export_is_audited_who_what_how_many(ebot):
    _, link, _ = export(ebot, "customers")
    records = [r[0] for r in asyncio.run(_query(ebot, select(AuditRecord).where(AuditRecord.command == "export")))]
    assert len(records) == 1
    record = records[0]
    export_id = urlsplit(link).path.split("/")[-1].removesuffix(".csv")
    assert (record.actor, record.outcome, record.subject) == (APPROVER, "ok", f"export:{export_id}")
    assert record.args["choice"] == "customers" and record.args["rows"] == 2 and record.args["export"] == export_id
    assert "exported 2 customers rows" in record.detail


def test_emails_are_blank_unless_include_email(ebot):
    for kind in ("customers", "ledger", "audit"):
        _, link, file = export(ebot, kind)
        assert b"@example.com" not in file["content"], kind
        assert b"@example.com" not in ebot.http.get(link).content
    rows = parse(ebot.slack.files[0]["content"])
    assert [r[2] for r in rows[1:]] == ["", ""]  # the column is there, blank


def test_emails_appear_with_include_email(tmp_path, db_url, fake_slack, clock):
    bot = start(tmp_path, db_url, fake_slack, clock, "\n[exports]\ninclude_email = true\n")
    try:
        _, _, file = export(bot, "customers")
        rows = parse(file["content"])
        assert [r[2] for r in rows[1:]] == ["ada@example.com", "evil@example.com"]
    finally:
        bot.stop()


def test_a_formula_in_a_name_is_neutralised_and_no_mention_reaches_slack(ebot):
    answer, _, file = export(ebot, "customers")
    rows = parse(file["content"])
    evil = dict(zip(rows[0], rows[2]))
    assert evil["name"] == "'" + EVIL_NAME  # a spreadsheet reads text, not =HYPERLINK(...)
    assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row)
    # the Slack side: no mention anywhere in what was sent as a message or comment
    comment = file["initial_comment"] or ""
    assert "Export of customers" in comment and "<!channel>" not in comment
    assert "<!channel>" not in answer and "<!channel>" not in ebot.slack.everything_sent()


def test_negative_numbers_are_numbers_not_neutralised_text(ebot):
    _, _, file = export(ebot, "ledger")
    assert b",-30," in file["content"]


def test_bad_input_gets_the_usage_line(ebot):
    for text in ("export", "export secrets", "export customers --since 91d", "export customers --since soon"):
        answer = ebot.answer_text(text, user=APPROVER)
        assert "Usage: /revops export &lt;customers|payments|invoices|ledger|audit|events&gt;" in answer, (text, answer)
    ebot.drain_sync()
    assert ebot.slack.files == []


def test_dry_run_does_not_stop_an_export(ebot):
    assert "Dry-run is now on" in ebot.slash_text("dryrun on", user=ADMIN)
    _, link, file = export(ebot, "invoices")
    assert parse(file["content"])[0] == HEADERS["invoices"]
    assert ebot.http.get(link).status_code == 200


def test_the_upload_uses_slacks_external_upload(ebot):
    export(ebot, "customers")
    assert len(ebot.slack.calls_of("files.getUploadURLExternal")) == 1
    complete = ebot.slack.calls_of("files.completeUploadExternal")
    assert len(complete) == 1 and complete[0].params["channel_id"] == CHANNEL
    assert "revops customers export" in complete[0].params["files"]  # the title
