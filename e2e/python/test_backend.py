"""The chat whose backend stays in charge (examples/chat-backend.toml), with python-socketio
clients and a real Python HTTP backend started here: the backend admits users by their session
cookie, saves each message before it is broadcast, and receives signed webhooks."""
import asyncio
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import socketio

from conftest import ROOT, RunningServer, free_port

PROXY_SECRET = "proxy-secret-for-tests"
WEBHOOK_SECRET = "webhook-secret-0123456789"
SESSIONS = {"session=s-alice": "alice", "session=s-bob": "bob"}


class Backend(BaseHTTPRequestHandler):
    saved = []
    hooks = []
    refused_secret = 0

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/realtime/hooks":
            stamp = self.headers["X-Switchboard-Timestamp"]
            expected = "v1=" + hmac.new(WEBHOOK_SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(expected, self.headers["X-Switchboard-Signature"])
            Backend.hooks.extend(json.loads(raw)["events"])
            return self.answer(200, {})
        if self.headers.get("x-proxy-secret") != PROXY_SECRET:
            Backend.refused_secret += 1
            return self.answer(401, {"message": "who are you?"})
        body = json.loads(raw)
        if self.path == "/realtime/connect":
            user = SESSIONS.get(body["headers"].get("cookie", ""))
            if user is None:
                return self.answer(200, {"accept": False, "message": "Log in first", "code": "no_session"})
            return self.answer(200, {"accept": True, "user": user, "rooms": ["room:general"]})
        if self.path == "/realtime/message":
            message = {"id": len(Backend.saved) + 1, "from": body["socket"]["user"], **body["args"][0]}
            Backend.saved.append(message)
            return self.answer(200, {
                "ack": {"ok": True, "id": message["id"]},
                "emit": [{"event": "new-message", "rooms": [message["room"]], "data": message}],
            })
        return self.answer(404, {})


def test_a_python_client_chats_through_the_backend_and_the_backend_hears_who_came():
    port = free_port()
    backend = ThreadingHTTPServer(("127.0.0.1", port), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    server = RunningServer(
        "switchboard",
        args=["--config", str(ROOT / "examples" / "chat-backend.toml")],
        env={"BACKEND": f"http://127.0.0.1:{port}", "PROXY_SECRET": PROXY_SECRET, "WEBHOOK_SECRET": WEBHOOK_SECRET},
    )
    try:
        async def scenario():
            alice, bob, stranger = socketio.AsyncClient(), socketio.AsyncClient(), socketio.AsyncClient()
            heard = asyncio.get_running_loop().create_future()
            # Recovery is on (the default): the offset comes as an extra last argument.
            bob.on("new-message", lambda message, *offset: heard.done() or heard.set_result(message))
            await alice.connect(server.url, transports=["websocket"], headers={"Cookie": "session=s-alice"})
            await bob.connect(server.url, transports=["websocket"], headers={"Cookie": "session=s-bob"})

            ack = await alice.call("message", {"room": "room:general", "text": "hello from python"}, timeout=5)
            assert ack == {"ok": True, "id": 1}
            message = await asyncio.wait_for(heard, 5)
            assert message == {"id": 1, "from": "alice", "room": "room:general", "text": "hello from python"}
            assert Backend.saved == [message], "saved before it was broadcast"

            refusal = asyncio.get_running_loop().create_future()
            stranger.on("connect_error", lambda data: refusal.done() or refusal.set_result(data))
            try:
                await stranger.connect(server.url, transports=["websocket"], wait_timeout=5)
            except socketio.exceptions.ConnectionError:
                pass
            data = await asyncio.wait_for(refusal, 5)
            assert data["message"] == "Log in first" and data["data"]["code"] == "no_session", data

            await alice.disconnect()
            await bob.disconnect()
            deadline = time.time() + 5
            while time.time() < deadline and not any(h["type"] == "user_online" and h["user"] == "bob" for h in Backend.hooks):
                await asyncio.sleep(0.05)
            online = sorted(h["user"] for h in Backend.hooks if h["type"] == "user_online")
            assert online == ["alice", "bob"], Backend.hooks
            assert Backend.refused_secret == 0

        asyncio.run(scenario())
    finally:
        server.stop()
        backend.shutdown()
