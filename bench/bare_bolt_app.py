"""The floor for the acknowledgement benchmark: a bare bolt AsyncApp on FastAPI whose
/revops only acknowledges. Same bolt, same signature verification, same uvicorn.

With BARE_BOLT_PROCESS_BEFORE_RESPONSE=1 it answers as revops does (bolt's
`process_before_response=True`: the response goes out when the listener returns). Without it, bolt's
default, the response waits for bolt's poll of the ack (about 10 ms), which flatters every ratio
at low concurrency; the benchmark prints the ratio to both."""

import os

from fastapi import FastAPI, Request
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

bolt = AsyncApp(
    process_before_response=os.environ.get("BARE_BOLT_PROCESS_BEFORE_RESPONSE") == "1",
    signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    client=AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
)


@bolt.command("/revops")
async def revops(ack):
    await ack()


handler = AsyncSlackRequestHandler(bolt)
app = FastAPI()


@app.post("/slack/events")
async def events(request: Request):
    return await handler.handle(request)
