"""The bot's own network checks against loopback stand-ins: Stripe reachability and
key mode, Slack scopes against the manifest; secrets never in the words."""

from __future__ import annotations

from bot.health.preflight import scopes_check
from bot.health.selfcheck import key_mode, manifest_scopes, slack_check, stripe_check
from bot.settings import load_settings
from tests.support.harness import STRIPE_KEY

from .conftest import assert_no_secrets


def env(**values):
    return load_settings(revops_config=None, **values)


async def test_stripe_reachability_and_key_mode(monitored):
    good = await stripe_check(env(stripe_secret_key=STRIPE_KEY, stripe_api_base=monitored.url))
    assert (good.status, good.detail) == ("pass", "reachable, test mode")
    wrong = "rk_live_not_the_right_key_42"
    refused = await stripe_check(env(stripe_secret_key=wrong, stripe_api_base=monitored.url))
    assert refused.status == "fail" and "key was refused (HTTP 401)" in refused.detail and "live" in refused.detail
    down = await stripe_check(env(stripe_secret_key=STRIPE_KEY, stripe_api_base=monitored.closed.rsplit("/", 1)[0]))
    assert down.status == "fail" and "unreachable (connection refused)" in down.detail
    missing = await stripe_check(env())
    assert (missing.status, missing.detail) == ("fail", "STRIPE_SECRET_KEY missing")
    assert key_mode(env(stripe_secret_key="sk_live_x1")) == "live" and key_mode(env(stripe_secret_key="pk_x")) == "unknown"
    assert_no_secrets(good.detail, refused.detail, down.detail, secrets=[STRIPE_KEY, wrong])


async def test_slack_scopes_against_the_manifest():
    assert "chat:write" in manifest_scopes()

    def gateway(scopes):
        async def auth_test():
            return {"ok": True, "team": "Test"}, {"x-oauth-scopes": scopes}
        return auth_test

    settings = env(slack_bot_token="xoxb-unit-test-token")
    full = await slack_check(settings, gateway(",".join(manifest_scopes())))
    assert scopes_check(full).status == "pass"
    partial = await slack_check(settings, gateway("commands,chat:write"))
    check = scopes_check(partial)
    assert check.status == "fail" and "chat:write.public" in check.detail and "commands," not in check.detail

    async def broken():
        raise ConnectionError("xoxb-unit-test-token refused")  # even a careless error text is not repeated

    failed = await slack_check(settings, broken)
    assert failed.check.status == "fail" and "xoxb" not in failed.check.detail
