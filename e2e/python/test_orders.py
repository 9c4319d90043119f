"""The orders system driven from Python: `requests` plays the Django backend, a python-socketio
AsyncClient plays the back-office screen."""
import asyncio
import subprocess
import time

import requests
import socketio

from conftest import ROOT, RunningServer, free_port


def test_django_backend_pushes_orders_to_a_python_client():
    server = RunningServer("switchboard", args=["--config", str(ROOT / "examples" / "orders.toml")])
    try:
        async def scenario():
            screen = socketio.AsyncClient()
            loop = asyncio.get_running_loop()
            greeted, created, status = loop.create_future(), loop.create_future(), loop.create_future()
            # Recovery is on in the example for the clients that ask (`recover: true`);
            # python-socketio does not implement it and asks for nothing, so each event comes as
            # sent: one argument, no offset. A handler of one argument would fail on a second.
            def keep(future):
                return lambda data: future.set_result(data)

            screen.on("connection_established", keep(greeted))
            screen.on("order_created", keep(created))
            screen.on("order_status_changed", keep(status))
            await screen.connect(server.url, transports=["websocket"])
            greeting = await asyncio.wait_for(greeted, 5)
            assert greeting["sid"] == screen.get_sid("/")

            order = {"id": 99, "table": 3, "items": [{"name": "pasta", "qty": 1}]}
            # What the Django view does after saving: a plain HTTP POST (run off the event loop).
            response = await asyncio.to_thread(
                requests.post, f"{server.url}/broadcast/order-created", json={"order": order}, timeout=5
            )
            assert response.status_code == 200
            assert response.json()["success"] is True and response.json()["reached"] == 1
            assert await asyncio.wait_for(created, 5) == {"order": order}

            change = {"order_id": 99, "old_status": "new", "new_status": "ready", "order": order}
            response = await asyncio.to_thread(
                requests.post, f"{server.url}/broadcast/order-status-changed", json=change, timeout=5
            )
            assert response.status_code == 200
            assert await asyncio.wait_for(status, 5) == change

            bad = await asyncio.to_thread(
                requests.post, f"{server.url}/broadcast/order-deleted", json={"wrong": 1}, timeout=5
            )
            assert bad.status_code == 400
            assert bad.json()["error"]["field"] == "order_id"
            await screen.disconnect()

        asyncio.run(scenario())
    finally:
        server.stop()


def test_orders_on_two_nodes_reach_a_screen_on_the_other_node():
    """Two nodes of the orders example share rooms through a real redis-server: the Django
    backend's POST to one node reaches a Python screen connected to the other."""
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    env = {"SWITCHBOARD_CLUSTER_REDIS_URL": f"redis://127.0.0.1:{redis_port}"}
    args = ["--config", str(ROOT / "examples" / "orders.toml")]
    nodes = []
    try:
        nodes = [RunningServer("switchboard", args=args, env=env) for _ in range(2)]
        deadline = time.time() + 10
        while not all(requests.get(f"{n.url}/ready", timeout=1).status_code == 200 for n in nodes):
            assert time.time() < deadline, "the nodes never linked through Redis"
            time.sleep(0.05)
        taking_requests, serving_the_screen = nodes

        async def scenario():
            screen = socketio.AsyncClient()
            created = asyncio.get_running_loop().create_future()
            screen.on("order_created", lambda data: created.set_result(data))
            await screen.connect(serving_the_screen.url, transports=["websocket"])
            await asyncio.sleep(0.2)
            order = {"id": 7, "table": 1, "items": []}
            response = await asyncio.to_thread(
                requests.post, f"{taking_requests.url}/broadcast/order-created", json={"order": order}, timeout=5
            )
            assert response.status_code == 200
            assert await asyncio.wait_for(created, 5) == {"order": order}
            members = requests.get(f"{taking_requests.url}/api/rooms/order_updates", timeout=5).json()
            assert [s["id"] for s in members["sockets"]] == [screen.get_sid("/")]
            await screen.disconnect()

        asyncio.run(scenario())
    finally:
        for node in nodes:
            node.stop()
        redis.kill()
