"""The orders system driven from Python: `requests` plays the Django backend, a python-socketio
AsyncClient plays the back-office screen."""
import asyncio

import requests
import socketio

from conftest import ROOT, RunningServer


def test_django_backend_pushes_orders_to_a_python_client():
    server = RunningServer("switchboard", args=["--config", str(ROOT / "examples" / "orders.toml")])
    try:
        async def scenario():
            screen = socketio.AsyncClient()
            loop = asyncio.get_running_loop()
            greeted, created, status = loop.create_future(), loop.create_future(), loop.create_future()
            # Recovery is on in the example: python-socketio, which does not know it, sees each
            # event's offset as an extra last argument (as with the reference server).
            def keep(future):
                return lambda data, *offset: future.set_result((data, offset))

            screen.on("connection_established", keep(greeted))
            screen.on("order_created", keep(created))
            screen.on("order_status_changed", keep(status))
            await screen.connect(server.url, transports=["websocket"])
            greeting, offset = await asyncio.wait_for(greeted, 5)
            assert greeting["sid"] == screen.get_sid("/")
            assert len(offset) == 1 and offset[0].isdigit()

            order = {"id": 99, "table": 3, "items": [{"name": "pasta", "qty": 1}]}
            # What the Django view does after saving: a plain HTTP POST (run off the event loop).
            response = await asyncio.to_thread(
                requests.post, f"{server.url}/broadcast/order-created", json={"order": order}, timeout=5
            )
            assert response.status_code == 200
            assert response.json()["success"] is True and response.json()["reached"] == 1
            assert (await asyncio.wait_for(created, 5))[0] == {"order": order}

            change = {"order_id": 99, "old_status": "new", "new_status": "ready", "order": order}
            response = await asyncio.to_thread(
                requests.post, f"{server.url}/broadcast/order-status-changed", json=change, timeout=5
            )
            assert response.status_code == 200
            assert (await asyncio.wait_for(status, 5))[0] == change

            bad = await asyncio.to_thread(
                requests.post, f"{server.url}/broadcast/order-deleted", json={"wrong": 1}, timeout=5
            )
            assert bad.status_code == 400
            assert bad.json()["error"]["field"] == "order_id"
            await screen.disconnect()

        asyncio.run(scenario())
    finally:
        server.stop()
