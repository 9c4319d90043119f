"""python-socketio's AsyncClient against examples/embedded.rs: connect, emit, acks, rooms."""
import asyncio

import socketio


def test_async_client_connects_emits_and_receives(embedded_server):
    async def scenario():
        receiver = socketio.AsyncClient()
        sender = socketio.AsyncClient()
        got = asyncio.get_running_loop().create_future()

        @receiver.on("news")
        async def on_news(*args):
            if not got.done():
                got.set_result(list(args))

        await receiver.connect(embedded_server.url, transports=["websocket"])
        await sender.connect(embedded_server.url)  # polling, then upgrade
        assert receiver.sid and sender.sid and receiver.sid != sender.sid

        # An ack carries the same arguments back.
        reply = await sender.call("echo", {"order": 7, "items": ["a", "b"]}, timeout=5)
        assert reply == {"order": 7, "items": ["a", "b"]}

        rooms = await receiver.call("join", "kitchen", timeout=5)
        assert "kitchen" in rooms
        await sender.emit("to-room", ("kitchen", "news", {"ready": True}))
        assert await asyncio.wait_for(got, 5) == [{"ready": True}]

        await sender.disconnect()
        await receiver.disconnect()

    asyncio.run(scenario())


def test_async_client_answers_server_acks_and_sees_namespaces(embedded_server):
    async def scenario():
        client = socketio.AsyncClient()
        answer = asyncio.get_running_loop().create_future()

        @client.on("question", namespace="/chat")
        async def on_question(question):
            return f"python says: {question}"

        @client.on("answer", namespace="/chat")
        async def on_answer(data):
            answer.set_result(data)

        await client.connect(embedded_server.url, namespaces=["/", "/chat"])
        await client.emit("ask", "ready?", namespace="/chat")
        assert await asyncio.wait_for(answer, 5) == {"ok": True, "args": ["python says: ready?"]}
        await client.disconnect()

    asyncio.run(scenario())
