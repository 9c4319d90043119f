//! Engine.IO v4 behaviour, checked over real HTTP and WebSocket connections against the echo
//! endpoint: the handshake, polling and WebSocket messages, heartbeats, closes, upgrades and
//! the limits (maxPayload on both transports).

mod common;

use std::time::Duration;

use common::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn polling_handshake_has_exactly_the_protocol_keys() {
    let server = start(fast_engine(), |_| {}).await;
    let (status, body) = get(&server.url("/engine.io/?EIO=4&transport=polling&t=abc")).await;
    assert_eq!(status, 200);
    assert!(body.starts_with('0'));
    let open: serde_json::Value = serde_json::from_str(&body[1..]).unwrap();
    let keys: Vec<&String> = open.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "sid",
            "upgrades",
            "pingInterval",
            "pingTimeout",
            "maxPayload"
        ]
    );
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 1_000_000);
}

#[tokio::test]
async fn bad_handshakes_get_400_with_a_json_error() {
    let server = start(fast_engine(), |_| {}).await;
    let cases = [
        ("GET", "/engine.io/?transport=polling", 5),
        ("GET", "/engine.io/?EIO=abc&transport=polling", 5),
        ("GET", "/engine.io/?EIO=4", 0),
        ("GET", "/engine.io/?EIO=4&transport=abc", 0),
        ("POST", "/engine.io/?EIO=4&transport=polling", 2),
        ("PUT", "/engine.io/?EIO=4&transport=polling", 2),
        ("GET", "/engine.io/?EIO=4&transport=polling&sid=nope", 1),
    ];
    for (method, path, code) in cases {
        let (status, body) = request(method, &server.url(path), b"").await;
        assert_eq!(status, 400, "{method} {path}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["code"], code, "{method} {path}");
        assert!(error["message"].is_string());
    }
}

#[tokio::test]
async fn websocket_handshake_lists_no_upgrades() {
    let server = start(fast_engine(), |_| {}).await;
    let mut ws = ws_connect(&server.ws_url("/engine.io/?EIO=4&transport=websocket")).await;
    let open = next_text(&mut ws).await;
    let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["upgrades"], serde_json::json!([]));
    assert!(
        tokio_tungstenite::connect_async(server.ws_url("/engine.io/?EIO=3&transport=websocket"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn polling_carries_text_and_binary_packets_both_ways() {
    let server = start(fast_engine(), |_| {}).await;
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(
        post(&url, "4hello\x1e4world\x1ebAQIDBA==").await,
        (200, "ok".into())
    );
    assert_eq!(
        get(&url).await,
        (200, "4hello\x1e4world\x1ebAQIDBA==".into())
    );
}

#[tokio::test]
async fn websocket_carries_text_and_binary_packets_both_ways() {
    let server = start(fast_engine(), |_| {}).await;
    let mut ws = ws_connect(&server.ws_url("/engine.io/?EIO=4&transport=websocket")).await;
    next_text(&mut ws).await;
    send(&mut ws, "4hello").await;
    assert_eq!(next_text(&mut ws).await, "4hello");
    send_binary(&mut ws, &[1, 2, 3, 4]).await;
    assert_eq!(
        next_data(&mut ws).await,
        Some(WsMessage::binary(vec![1, 2, 3, 4]))
    );
}

#[tokio::test]
async fn websocket_pings_are_answered_and_fragments_make_one_message() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let server = start(fast_engine(), |_| {}).await;
    let mut ws = ws_connect(&server.ws_url("/engine.io/?EIO=4&transport=websocket")).await;
    next_text(&mut ws).await;
    // A WebSocket-level ping gets a pong with the same bytes.
    ws.send(WsMessage::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(WsMessage::Pong(payload)))) => break payload,
            Ok(Some(Ok(_))) => continue,
            other => panic!("no pong: {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"are you there");
    // A message in three fragments, with a ping between them, is one Engine.IO packet.
    let fragments = [
        Frame::message(b"4hel".to_vec(), OpCode::Data(Data::Text), false),
        Frame::ping(b"mid".to_vec()),
        Frame::message(b"lo wo".to_vec(), OpCode::Data(Data::Continue), false),
        Frame::message(b"rld".to_vec(), OpCode::Data(Data::Continue), true),
    ];
    for frame in fragments {
        ws.send(WsMessage::Frame(frame)).await.unwrap();
    }
    assert_eq!(next_text(&mut ws).await, "4hello world");
    // A continuation with no message before it breaks the protocol: the session closes.
    ws.send(WsMessage::Frame(Frame::message(
        b"x".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert!(closed(&mut ws).await);
}

#[tokio::test]
async fn an_invalid_packet_closes_only_that_session() {
    let server = start(fast_engine(), |_| {}).await;
    let bystander = server.polling_session("/engine.io/").await;
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(post(&url, "abc").await.0, 400);
    assert_eq!(get(&url).await.0, 400);

    let mut ws = ws_connect(&server.ws_url("/engine.io/?EIO=4&transport=websocket")).await;
    next_text(&mut ws).await;
    send(&mut ws, "abc").await;
    assert!(closed(&mut ws).await);

    let other = server.url(&format!(
        "/engine.io/?EIO=4&transport=polling&sid={bystander}"
    ));
    assert_eq!(post(&other, "4still here").await.0, 200);
    assert_eq!(get(&other).await, (200, "4still here".into()));
}

#[tokio::test]
async fn a_second_concurrent_poll_ends_the_session() {
    let server = start(fast_engine(), |_| {}).await;
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    let first = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(get(&url).await.0, 400);
    assert_eq!(first.await.unwrap(), (200, "1".into()));
    assert_eq!(get(&url).await.0, 400);
}

#[tokio::test]
async fn an_aborted_poll_ends_the_session() {
    let server = start(fast_engine(), |_| {}).await;
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    let pending = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    pending.abort();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(get(&url).await.0, 400);
}

#[tokio::test]
async fn server_pings_and_a_missing_pong_closes_the_session() {
    let server = start(fast_engine(), |_| {}).await;
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    for _ in 0..3 {
        assert_eq!(get(&url).await, (200, "2".into()));
        assert_eq!(post(&url, "3").await.0, 200);
    }
    // No pong this time: the session ends after pingTimeout.
    assert_eq!(get(&url).await, (200, "2".into()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&url).await.0, 400);

    let mut ws = ws_connect(&server.ws_url("/engine.io/?EIO=4&transport=websocket")).await;
    next_text(&mut ws).await;
    assert_eq!(next(&mut ws).await, Some(WsMessage::text("2")));
    send(&mut ws, "3").await;
    assert_eq!(next(&mut ws).await, Some(WsMessage::text("2")));
    assert!(closed(&mut ws).await, "no pong: the server closes");
}

#[tokio::test]
async fn a_client_close_answers_the_pending_poll_with_noop() {
    let server = start(fast_engine(), |_| {}).await;
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    let pending = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(post(&url, "1").await.0, 200);
    assert_eq!(pending.await.unwrap(), (200, "6".into()));
    assert_eq!(get(&url).await.0, 400);

    // The GET may also arrive just after the close POST (two connections): same answers.
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(post(&url, "1").await.0, 200);
    assert_eq!(get(&url).await, (200, "6".into()));
    assert_eq!(get(&url).await.0, 400);

    let mut ws = ws_connect(&server.ws_url("/engine.io/?EIO=4&transport=websocket")).await;
    next_text(&mut ws).await;
    send(&mut ws, "1").await;
    assert!(closed(&mut ws).await);
}

#[tokio::test]
async fn upgrade_from_polling_to_websocket() {
    let server = start(fast_engine(), |_| {}).await;
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    // Something queued before the upgrade must arrive on one transport or the other, once.
    assert_eq!(post(&url, "4before").await.0, 200);
    let mut ws =
        ws_connect(&server.ws_url(&format!("/engine.io/?EIO=4&transport=websocket&sid={sid}")))
            .await;
    send(&mut ws, "2probe").await;
    assert_eq!(next_text(&mut ws).await, "3probe");
    let (status, body) = get(&url).await;
    assert_eq!(status, 200);
    assert!(body == "6" || body == "4before", "{body}");
    send(&mut ws, "5").await;
    send(&mut ws, "4after").await;
    if body == "6" {
        assert_eq!(next_text(&mut ws).await, "4before");
    }
    assert_eq!(next_text(&mut ws).await, "4after");

    // Polling and a second WebSocket with the same sid are refused; the session carries on.
    assert_eq!(get(&url).await.0, 400);
    let mut second =
        ws_connect(&server.ws_url(&format!("/engine.io/?EIO=4&transport=websocket&sid={sid}")))
            .await;
    assert!(closed(&mut second).await);
    send(&mut ws, "4still").await;
    assert_eq!(next_text(&mut ws).await, "4still");
}

#[tokio::test]
async fn oversized_payloads_are_refused() {
    let mut config = fast_engine();
    config.max_payload = 1000;
    let server = start(config, |_| {}).await;
    let sid = server.polling_session("/engine.io/").await;
    let url = server.url(&format!("/engine.io/?EIO=4&transport=polling&sid={sid}"));
    let big = format!("4{}", "x".repeat(2000));
    assert_eq!(post(&url, &big).await.0, 413);

    let mut ws = ws_connect(&server.ws_url("/engine.io/?EIO=4&transport=websocket")).await;
    next_text(&mut ws).await;
    send(&mut ws, &big).await;
    use futures_util::StreamExt;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1009));
}
