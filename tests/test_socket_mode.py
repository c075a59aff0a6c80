"""Socket Mode: with SLACK_APP_TOKEN set, `serve` connects out over a websocket and runs
the same router; the acknowledgement travels back over the socket."""

import asyncio
import json

from aiohttp import WSMsgType, web

from tests.support.harness import ADMIN, VIEWER, Bot, make_settings
from tests.support.net import free_port

APP_TOKEN = "xapp-1-A0REVOPS-test-socket-token"


def slash_envelope(envelope_id: str, text: str, user: str) -> dict:
    return {
        "envelope_id": envelope_id,
        "type": "slash_commands",
        "accepts_response_payload": True,
        "payload": {
            "token": "unused", "team_id": "T0TEST", "team_domain": "revops-test", "channel_id": "C0INCIDENT",
            "channel_name": "incident", "user_id": user, "user_name": user.lower(), "command": "/revops",
            "text": text, "api_app_id": "A0REVOPS", "response_url": "http://127.0.0.1:9/unused",
            "trigger_id": f"1.2.{envelope_id}",  # unique per command, as Slack makes them
        },
    }


async def test_socket_mode_runs_commands_over_the_websocket(tmp_path, fake_slack):
    acks: asyncio.Queue = asyncio.Queue()
    connected = asyncio.Event()
    sockets = []

    async def socket(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0REVOPS"}})
        connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await acks.put(json.loads(msg.data))
        return ws

    app = web.Application()
    app.router.add_get("/link", socket)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake_slack.socket_url = f"ws://127.0.0.1:{port}/link"

    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/revops.db", fake_slack.api_url,
                             slack_app_token=APP_TOKEN)
    bot = Bot(settings, fake_slack)
    await asyncio.to_thread(bot.start)
    try:
        await asyncio.wait_for(connected.wait(), 20)
        opened = fake_slack.calls_of("apps.connections.open")
        assert opened and opened[0].headers["authorization"] == f"Bearer {APP_TOKEN}"

        await sockets[0].send_json(slash_envelope("env-1", "help", VIEWER))
        ack = await asyncio.wait_for(acks.get(), 10)
        assert ack["envelope_id"] == "env-1"
        assert "/revops dryrun" in json.dumps(ack["payload"]) and "You are viewer" in json.dumps(ack["payload"])

        await sockets[0].send_json(slash_envelope("env-2", "dryrun on", ADMIN))
        ack = await asyncio.wait_for(acks.get(), 10)
        assert ack["envelope_id"] == "env-2" and "Dry-run is now *on*" in json.dumps(ack["payload"])
        flags = await asyncio.to_thread(bot.admin_get, "/flags")
        assert flags.json()["dry_run"] is True
    finally:
        await asyncio.to_thread(bot.stop)
        await runner.cleanup()
