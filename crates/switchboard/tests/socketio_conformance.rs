//! Socket.IO v5 behaviour over real WebSocket and polling connections: namespaces and their
//! handshake, events, binary attachments, acks both ways, rooms and broadcast, server-side
//! disconnect, refusal by middleware and the protocol errors that end a session.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard::engine::EngineConfig;
use switchboard::hub::{ConnectError, Hub};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The behaviour the official suite expects, plus a few commands to drive rooms from a client.
fn suite_handlers(hub: &Arc<Hub>) {
    for name in ["/", "/custom"] {
        let namespace = hub.namespace(name);
        namespace.on_connect(|socket| {
            let _ = socket.emit("auth", &[Value::Object((*socket.handshake().auth).clone())]);
        });
        namespace.on("message", |socket, event| {
            let _ = socket.emit_binary("message-back", &event.args, &event.attachments);
        });
        namespace.on("message-with-ack", |_, mut event| {
            if let Some(ack) = event.take_ack() {
                ack.send_binary(&event.args, &event.attachments);
            }
        });
        namespace.on("join", |socket, event| {
            if let Some(room) = event.args.first().and_then(Value::as_str) {
                socket.join(room);
            }
        });
        namespace.on("leave", |socket, event| {
            if let Some(room) = event.args.first().and_then(Value::as_str) {
                socket.leave(room);
            }
        });
        namespace.on("shout", |socket, event| {
            let _ = socket.broadcast().emit("shouted", &event.args);
        });
        namespace.on("bye", |socket, _| socket.disconnect());
    }
}

async fn connected(server: &TestServer, connect: &str) -> (Ws, String) {
    let (mut ws, reply) = socketio_ws(server, connect).await;
    let _auth = next_text(&mut ws).await;
    (ws, reply)
}

fn sid_of(reply: &str, prefix: &str) -> String {
    let handshake: Value = serde_json::from_str(reply.strip_prefix(prefix).unwrap()).unwrap();
    assert_eq!(handshake.as_object().unwrap().len(), 1, "only sid: {reply}");
    handshake["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn connects_to_main_and_custom_namespaces_with_auth() {
    let server = start(fast_engine(), suite_handlers).await;
    let (mut ws, reply) = socketio_ws(&server, "40").await;
    let sid = sid_of(&reply, "40");
    assert_eq!(next_text(&mut ws).await, r#"42["auth",{}]"#);

    let (mut ws, _) = socketio_ws(&server, r#"40{"token":"123","b":1}"#).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"42["auth",{"token":"123","b":1}]"#
    );

    let (mut ws, reply) = socketio_ws(&server, r#"40/custom,{"token":"abc"}"#).await;
    let custom_sid = sid_of(&reply, "40/custom,");
    assert_eq!(
        next_text(&mut ws).await,
        r#"42/custom,["auth",{"token":"abc"}]"#
    );
    assert_ne!(sid, custom_sid);
}

#[tokio::test]
async fn the_socket_id_is_not_the_engine_id() {
    let server = start(fast_engine(), suite_handlers).await;
    let mut ws = ws_connect(&server.ws_url("/socket.io/?EIO=4&transport=websocket")).await;
    let open = next_text(&mut ws).await;
    let engine_sid: Value = serde_json::from_str(&open[1..]).unwrap();
    send(&mut ws, "40").await;
    let socket_sid = sid_of(&next_text(&mut ws).await, "40");
    assert_ne!(engine_sid["sid"].as_str().unwrap(), socket_sid);
}

#[tokio::test]
async fn unknown_namespace_and_middleware_refusals_are_connect_errors() {
    let server = start(fast_engine(), |hub| {
        suite_handlers(hub);
        hub.namespace("/private").use_middleware(|_, handshake, _| {
            if handshake.auth.get("token") == Some(&json!("letmein")) {
                Ok(())
            } else {
                Err(ConnectError::new("Authentication required")
                    .with_data(json!({"code": "auth_required"})))
            }
        });
    })
    .await;
    let (_, reply) = socketio_ws(&server, "40/random").await;
    assert_eq!(reply, r#"44/random,{"message":"Invalid namespace"}"#);
    let (_, reply) = socketio_ws(&server, "40/private,").await;
    assert_eq!(
        reply,
        r#"44/private,{"message":"Authentication required","data":{"code":"auth_required"}}"#
    );
    let (_, reply) = socketio_ws(&server, r#"40/private,{"token":"letmein"}"#).await;
    assert!(reply.starts_with("40/private,{\"sid\""), "{reply}");
}

#[tokio::test]
async fn a_session_that_joins_no_namespace_is_closed() {
    let config = EngineConfig {
        ping_timeout: Duration::from_secs(5),
        ..fast_engine()
    };
    let server = start(config, suite_handlers).await;
    let mut ws = ws_connect(&server.ws_url("/socket.io/?EIO=4&transport=websocket")).await;
    next_text(&mut ws).await;
    let started = std::time::Instant::now();
    assert!(closed(&mut ws).await);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn namespaces_are_multiplexed_and_left_independently() {
    let server = start(fast_engine(), suite_handlers).await;
    let (mut ws, _) = connected(&server, "40").await;
    send(&mut ws, "40/custom").await;
    assert!(next_text(&mut ws).await.starts_with("40/custom,"));
    assert_eq!(next_text(&mut ws).await, r#"42/custom,["auth",{}]"#);
    send(&mut ws, "41/custom").await;
    send(&mut ws, r#"42/custom,["message","ignored"]"#).await;
    send(&mut ws, r#"42["message","to main"]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"42["message-back","to main"]"#);
    send(&mut ws, "41").await;
    // The session lives on with no namespace: the next thing is a ping.
    assert_eq!(next(&mut ws).await, Some(WsMessage::text("2")));
}

#[tokio::test]
async fn events_keep_their_order_and_payload_exactly() {
    let server = start(fast_engine(), suite_handlers).await;
    let (mut ws, _) = connected(&server, "40").await;
    for i in 0..50 {
        send(
            &mut ws,
            &format!(r#"42["message",{i},"2",{{"3":[true],"z":null,"a":1.5}}]"#),
        )
        .await;
    }
    for i in 0..50 {
        assert_eq!(
            next_text(&mut ws).await,
            format!(r#"42["message-back",{i},"2",{{"3":[true],"z":null,"a":1.5}}]"#)
        );
    }
}

#[tokio::test]
async fn binary_attachments_travel_both_ways() {
    let server = start(fast_engine(), suite_handlers).await;
    let (mut ws, _) = connected(&server, "40").await;
    send(
        &mut ws,
        r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    )
    .await;
    send_binary(&mut ws, &[1, 2, 3]).await;
    send_binary(&mut ws, &[4, 5, 6]).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(
        next_data(&mut ws).await,
        Some(WsMessage::binary(vec![1, 2, 3]))
    );
    assert_eq!(
        next_data(&mut ws).await,
        Some(WsMessage::binary(vec![4, 5, 6]))
    );

    send(
        &mut ws,
        r#"451-789["message-with-ack",{"_placeholder":true,"num":0}]"#,
    )
    .await;
    send_binary(&mut ws, &[9]).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"461-789[{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(next_data(&mut ws).await, Some(WsMessage::binary(vec![9])));
}

#[tokio::test]
async fn server_acks_client_events_and_waits_for_client_acks() {
    let server = start(fast_engine(), suite_handlers).await;
    let (mut ws, reply) = connected(&server, "40").await;
    send(&mut ws, r#"42456["message-with-ack",1,"2",{"3":[false]}]"#).await;
    assert_eq!(next_text(&mut ws).await, r#"43456[1,"2",{"3":[false]}]"#);

    let socket = server
        .hub
        .namespace("/")
        .socket(&sid_of(&reply, "40"))
        .unwrap();
    let waiting = tokio::spawn({
        let socket = socket.clone();
        async move {
            socket
                .emit_with_ack("question", &[json!("why?")], Duration::from_secs(2))
                .await
        }
    });
    let asked = next_text(&mut ws).await;
    let id: String = asked[2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(&asked[2 + id.len()..], r#"["question","why?"]"#);
    send(&mut ws, &format!(r#"43{id}["because",42]"#)).await;
    let reply = waiting.await.unwrap().unwrap();
    assert_eq!(reply.args, vec![json!("because"), json!(42)]);

    let unanswered = socket
        .emit_with_ack("question", &[], Duration::from_millis(100))
        .await;
    assert_eq!(unanswered, Err(switchboard::hub::AckError::Timeout));
}

#[tokio::test]
async fn malformed_packets_close_the_session() {
    let server = start(fast_engine(), suite_handlers).await;
    for bad in [
        "4abc",
        "42{}",
        r#"42abc["message-with-ack",1]"#,
        r#"42["disconnect"]"#,
        "2",
        "40[1]",
    ] {
        let (mut ws, _) = connected(&server, "40").await;
        send(&mut ws, bad).await;
        assert!(closed(&mut ws).await, "{bad} should close the session");
    }
    let mut ws = ws_connect(&server.ws_url("/socket.io/?EIO=4&transport=websocket")).await;
    next_text(&mut ws).await;
    send(&mut ws, "4abc").await;
    assert!(closed(&mut ws).await);
}

#[tokio::test]
async fn broadcasts_reach_each_member_once_and_respect_exclusions() {
    let server = start(fast_engine(), suite_handlers).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (mut ws, reply) = connected(&server, "40").await;
        let sid = sid_of(&reply, "40");
        send(&mut ws, r#"42["join","a"]"#).await;
        clients.push((ws, sid));
    }
    send(&mut clients[0].0, r#"42["join","b"]"#).await;
    send(&mut clients[1].0, r#"42["join","quiet"]"#).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let namespace = server.hub.namespace("/");
    assert_eq!(namespace.to("a").to("b").emit("news", &[json!(1)]), 3);
    for (ws, _) in clients.iter_mut() {
        assert_eq!(next_text(ws).await, r#"42["news",1]"#);
    }
    assert_eq!(
        namespace.to("a").except("quiet").emit("news", &[json!(2)]),
        2
    );
    // Each socket is also in the room named by its own id.
    assert_eq!(namespace.to(clients[2].1.as_str()).emit("direct", &[]), 1);
    send(&mut clients[0].0, r#"42["shout","hi"]"#).await;
    assert_eq!(next_text(&mut clients[0].0).await, r#"42["news",2]"#);
    assert_eq!(next_text(&mut clients[1].0).await, r#"42["shouted","hi"]"#);
    assert_eq!(next_text(&mut clients[2].0).await, r#"42["news",2]"#);
    assert_eq!(next_text(&mut clients[2].0).await, r#"42["direct"]"#);
    assert_eq!(next_text(&mut clients[2].0).await, r#"42["shouted","hi"]"#);

    send(&mut clients[2].0, r#"42["leave","a"]"#).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(namespace.to("a").emit("news", &[json!(3)]), 2);
    assert_eq!(namespace.room_members("a").len(), 2);
}

#[tokio::test]
async fn a_sockets_own_room_can_be_joined_excluded_and_left() {
    let server = start(fast_engine(), suite_handlers).await;
    let (mut owner, reply) = connected(&server, "40").await;
    let owner_id = sid_of(&reply, "40");
    let (mut listener, _) = connected(&server, "40").await;
    let (mut outsider, _) = connected(&server, "40").await;
    // Another socket may join the room named by the owner's id, as with any room.
    send(&mut listener, &format!(r#"42["join","{owner_id}"]"#)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let namespace = server.hub.namespace("/");
    assert_eq!(namespace.room_members(&owner_id).len(), 2);
    assert_eq!(namespace.to(owner_id.as_str()).emit("to-owner", &[]), 2);
    assert_eq!(next_text(&mut owner).await, r#"42["to-owner"]"#);
    assert_eq!(next_text(&mut listener).await, r#"42["to-owner"]"#);
    // Everyone except the owner's room: only the outsider.
    assert_eq!(
        namespace
            .everyone()
            .except(owner_id.as_str())
            .emit("rest", &[]),
        1
    );
    assert_eq!(next_text(&mut outsider).await, r#"42["rest"]"#);

    // The owner leaves its own room: it no longer gets what is sent there.
    send(&mut owner, &format!(r#"42["leave","{owner_id}"]"#)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(namespace.to(owner_id.as_str()).emit("after", &[]), 1);
    assert_eq!(next_text(&mut listener).await, r#"42["after"]"#);
    assert_eq!(namespace.everyone().emit("all", &[]), 3);
    assert_eq!(next_text(&mut owner).await, r#"42["all"]"#);
}

#[tokio::test]
async fn server_side_disconnect_sends_disconnect_and_keeps_other_namespaces() {
    let server = start(fast_engine(), suite_handlers).await;
    let (mut ws, _) = connected(&server, "40").await;
    send(&mut ws, "40/custom,").await;
    next_text(&mut ws).await;
    next_text(&mut ws).await;
    send(&mut ws, r#"42/custom,["bye"]"#).await;
    assert_eq!(next_text(&mut ws).await, "41/custom,");
    send(&mut ws, r#"42["message","main still works"]"#).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"42["message-back","main still works"]"#
    );
    assert_eq!(server.hub.namespace("/custom").socket_count(), 0);
}

#[tokio::test]
async fn polling_clients_get_server_disconnect_before_the_close() {
    let server = start(fast_engine(), suite_handlers).await;
    let sid = server.polling_session("/socket.io/").await;
    let url = server.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(post(&url, "40").await.0, 200);
    let (_, body) = get(&url).await;
    assert!(body.starts_with("40{\"sid\""), "{body}");
    assert_eq!(post(&url, r#"42["bye"]"#).await.0, 200);
    let (_, body) = get(&url).await;
    assert_eq!(body, "41");
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_without_hurting_others() {
    let config = EngineConfig {
        max_queued_frames: 16,
        ping_interval: Duration::from_secs(10),
        ..fast_engine()
    };
    let server = start(config, suite_handlers).await;
    // A polling client that never polls: everything sent to it stays queued.
    let sid = server.polling_session("/socket.io/").await;
    let url = server.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(post(&url, "40").await.0, 200);
    let (mut healthy, _) = connected(&server, "40").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let namespace = server.hub.namespace("/");
    // Bursts of 8 fit the healthy client's queue, which its writer drains between bursts.
    for burst in 0..5 {
        for i in burst * 8..(burst + 1) * 8 {
            namespace.everyone().emit("tick", &[json!(i)]);
        }
        for i in burst * 8..(burst + 1) * 8 {
            assert_eq!(next_text(&mut healthy).await, format!(r#"42["tick",{i}]"#));
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        namespace.socket_count(),
        1,
        "the slow client was disconnected"
    );
    assert_eq!(get(&url).await.0, 400);
}

#[tokio::test]
async fn a_websocket_client_closed_for_not_reading_gets_the_close_frame_once_it_reads() {
    let config = EngineConfig {
        max_queued_frames: 16,
        ping_interval: Duration::from_secs(30),
        ..fast_engine()
    };
    let server = start(config, suite_handlers).await;
    let (mut ws, _) = connected(&server, "40").await;
    let namespace = server.hub.namespace("/");
    // The client reads nothing while the server fills its socket and then its queue.
    let blob = "x".repeat(64 * 1024);
    for _ in 0..2000 {
        namespace.everyone().emit("news", &[json!(blob)]);
        if namespace.socket_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(namespace.socket_count(), 0, "the client was closed");
    // Now it reads: the events written before the close, then the close frame saying why.
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };
    let code = close.map(|frame| u16::from(frame.code));
    assert_eq!(
        code,
        Some(1008),
        "policy violation: the client did not keep up"
    );
}

#[tokio::test]
async fn an_emit_from_a_thread_outside_the_runtime_reaches_the_client() {
    let server = start(fast_engine(), suite_handlers).await;
    let (mut ws, reply) = connected(&server, "40").await;
    let sid = sid_of(&reply, "40");
    let namespace = server.hub.namespace("/");
    // Small sends are queued and the connection woken: from a plain thread, which has no
    // runtime of its own.
    let reached = std::thread::spawn(move || namespace.to(sid.as_str()).emit("from-thread", &[]))
        .join()
        .unwrap();
    assert_eq!(reached, 1);
    assert_eq!(next_text(&mut ws).await, r#"42["from-thread"]"#);
}

/// `{online.<key>}` lists, as a program embedding the library reads them: a key counted from
/// the start and one asked for only once sockets were connected (so read from every socket's
/// data) list the same values, through connects, changes and disconnects.
#[tokio::test]
async fn online_lists_are_the_same_counted_or_read_from_every_socket() {
    let server = start(fast_engine(), |hub| {
        let namespace = hub.namespace("/");
        assert!(namespace.track_online("name"), "no socket yet: counted");
        namespace.on("name", |socket, mut event| {
            let name = event.args.first().cloned().unwrap_or(Value::Null);
            socket.set_data("name", name.clone());
            socket.set_data("nick", name);
            if let Some(ack) = event.take_ack() {
                ack.send(&[]);
            }
        });
        namespace.on("who", |socket, mut event| {
            let namespace = socket.namespace();
            let lists = json!([
                namespace.online_values("name", None),
                namespace.online_values("nick", None)
            ]);
            if let Some(ack) = event.take_ack() {
                ack.send(&[lists]);
            }
        });
    })
    .await;
    let (mut ann, _) = socketio_ws(&server, "40").await;
    let (mut bob, _) = socketio_ws(&server, "40").await;
    assert!(
        !server.hub.namespace("/").track_online("nick"),
        "sockets are connected: not counted"
    );
    send(&mut ann, r#"421["name","ann"]"#).await;
    assert_eq!(next_text(&mut ann).await, "431[]");
    send(&mut bob, r#"421["name",{"id":7,"team":"b"}]"#).await;
    assert_eq!(next_text(&mut bob).await, "431[]");
    send(&mut ann, r#"422["who"]"#).await;
    assert_eq!(
        next_text(&mut ann).await,
        r#"432[[["ann",{"id":7,"team":"b"}],["ann",{"id":7,"team":"b"}]]]"#
    );
    send(&mut bob, r#"423["name","ann"]"#).await;
    assert_eq!(next_text(&mut bob).await, "433[]");
    send(&mut ann, r#"424["who"]"#).await;
    assert_eq!(next_text(&mut ann).await, r#"434[[["ann"],["ann"]]]"#);
    send(&mut ann, "41").await;
    send(&mut bob, r#"425["name",null]"#).await;
    assert_eq!(next_text(&mut bob).await, "435[]");
    // Ann's leaving is handled on her own connection: ask until it shows.
    let mut answer = String::new();
    for id in 6..56 {
        send(&mut bob, &format!(r#"42{id}["who"]"#)).await;
        answer = next_text(&mut bob).await;
        if answer == format!("43{id}[[[],[]]]") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the lists still hold a value after everyone left: {answer}");
}
