"""The plain WebSocket endpoint of examples/online-status.toml from Python's `websockets`, as a
non-Socket.IO client (a mobile app, a service) would use it."""
import asyncio
import json

import websockets

from conftest import ROOT, RunningServer


def test_plain_websocket_presence_from_python():
    server = RunningServer(
        "switchboard",
        args=["--config", str(ROOT / "examples" / "online-status.toml")],
        env={"SWITCHBOARD_PRESENCE_GRACE": "200ms"},
    )
    base = f"ws://127.0.0.1:{server.port}/ws-online-status"
    try:
        async def receive(ws, kind, user):
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["type"] == kind and message.get("userId") == user:
                    return message

        async def scenario():
            async with websockets.connect(f"{base}?userId=py-watcher") as watcher:
                hello = await receive(watcher, "CONNECTION_ESTABLISHED", "py-watcher")
                assert hello["connectionId"]
                async with websockets.connect(f"{base}?userId=py-42") as other:
                    await receive(other, "CONNECTION_ESTABLISHED", "py-42")
                    online = await receive(watcher, "USER_ONLINE", "py-42")
                    assert online["timestamp"]
                    await other.send(json.dumps({"type": "GET_ONLINE_USERS"}))
                    while True:
                        answer = json.loads(await asyncio.wait_for(other.recv(), 5))
                        if answer["type"] == "ONLINE_USERS":
                            break
                    assert {"py-watcher", "py-42"} <= set(answer["users"])
                offline = await receive(watcher, "USER_OFFLINE", "py-42")
                assert offline["userId"] == "py-42"

        asyncio.run(scenario())
    finally:
        server.stop()
