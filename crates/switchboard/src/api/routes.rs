//! The configured HTTP routes (`[[routes]]`, compiled by `crate::rules`): `POST
//! /broadcast/order-created` (say) emits one event into rooms, with the request body (or a
//! template over it) as the payload. Answers `{"success": true, "event",
//! "reached": N}`; a bad body answers 400 with `{"success": false, "error": {code, message,
//! field}}`. Routes follow the API's key policy unless marked `public`.

use crate::error_code::ErrorCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use crate::rules::CompiledRoute;
use crate::rules::template::Context;

fn refuse(status: StatusCode, code: &str, message: String, field: Option<String>) -> Response {
    (
        status,
        axum::Json(json!({
            "success": false,
            "error": { "code": code, "message": message, "field": field },
        })),
    )
        .into_response()
}

async fn handle(state: Arc<AppState>, route: Arc<CompiledRoute>, request: Request) -> Response {
    let query: Vec<(String, String)> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let limit = super::BodyLimit {
        max: state.config.limits.api_max_body.0,
        read_timeout: state.config.server.body_read_timeout.0,
    };
    let bytes = match limit.read(request).await {
        Ok(bytes) => bytes,
        Err(error) => return refuse(error.status, error.code, error.message, None),
    };
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(body) => body,
            Err(error) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidJson.as_str(),
                    format!("the body is not valid JSON: {error}"),
                    None,
                );
            }
        }
    };
    for field in &route.require {
        if body.get(field).is_none_or(Value::is_null) {
            return refuse(
                StatusCode::BAD_REQUEST,
                ErrorCode::MissingField.as_str(),
                format!("body field `{field}` is required"),
                Some(field.clone()),
            );
        }
    }
    let Some(namespace) = state.hub.of(&route.namespace) else {
        return refuse(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownNamespace.as_str(),
            format!("no namespace {:?}", route.namespace),
            Some("namespace".into()),
        );
    };
    // The context (its template helpers) is not held across the wait below.
    let (broadcast, payload) = {
        let online = |key: &str| namespace.online_values(key, None);
        let context = Context {
            body: Some(&body),
            query: &query,
            online: Some(&online),
            ..Context::default()
        };
        let mut broadcast = namespace.everyone().volatile(route.volatile);
        for room in &route.rooms {
            match room.render(&context) {
                Ok(room) if !room.is_empty() && room.len() <= state.config.limits.room_name_max => {
                    broadcast = broadcast.to(room);
                }
                Ok(_) => {
                    return refuse(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidRoom.as_str(),
                        format!(
                            "a room name is 1 to {} bytes",
                            state.config.limits.room_name_max
                        ),
                        None,
                    );
                }
                Err(error) => {
                    return refuse(StatusCode::BAD_REQUEST, error.code, error.message, None);
                }
            }
        }
        let payload = match route.payload.render(&context) {
            Ok(payload) => payload,
            Err(error) => return refuse(StatusCode::BAD_REQUEST, error.code, error.message, None),
        };
        (broadcast, payload)
    };
    let reached = match broadcast.publish_taken(&route.event, &[payload], &[]).await {
        Ok(published) => published.reached,
        Err(_) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                super::error::CLUSTER_UNAVAILABLE,
                super::error::NOT_TAKEN_MESSAGE.to_owned(),
                None,
            );
        }
    };
    state.metrics.count_emit("route");
    axum::Json(json!({ "success": true, "event": route.event, "reached": reached })).into_response()
}

/// The configured routes as an axum router for the server's HTTP side.
pub fn router(routes: &[CompiledRoute], state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let mut router = Router::new();
    for route in routes {
        let route = Arc::new(route.clone());
        let handler = {
            let route = route.clone();
            move |State(state): State<Arc<AppState>>, request: Request| {
                let route = route.clone();
                async move { handle(state, route, request).await }
            }
        };
        let method_router = if route.method == http::Method::GET {
            get(handler)
        } else {
            post(handler)
        };
        let method_router = if route.public {
            method_router
        } else {
            method_router.route_layer(middleware::from_fn_with_state(
                state.clone(),
                super::authorize,
            ))
        };
        router = router.route(&route.path, method_router);
    }
    router
}
