//! `GET /ws` (JSON frames, every conversation of the user) and
//! `GET /ws/rooms/{id}/text` (the plain-text room protocol). Both authenticate by the
//! session cookie or a bearer token, and refuse browser upgrades from foreign origins
//! (cross-site WebSocket hijacking).

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiPath, AuthUser, check_origin},
    live::{
        hub::Protocol,
        socket::{self, SocketSpec},
    },
    routes::chat::{caller, from_chat},
};
use axum::{
    extract::{State, WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection},
    http::HeaderMap,
    response::Response,
};
use proto::chat::v1 as pb;
use uuid::Uuid;

fn upgrade(state: AppState, upgrade: WebSocketUpgrade, spec: SocketSpec) -> Response {
    let limit = state.config.ws_max_message_bytes;
    let upgrade = upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        // Small buffers: an idle socket should cost little memory. tungstenite zero-fills
        // its whole read buffer before each read, so all of it is resident; chat frames are
        // small and the buffer grows on demand for larger ones. Writes gather up to 8 KiB
        // before a system call (the socket loop flushes after each burst).
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(256 * 1024);
    upgrade.on_upgrade(move |ws| socket::serve(ws, state, spec))
}

/// The JSON WebSocket: live messages, presence, typing and receipts of every
/// conversation of the user; `send`, `typing`, `read` and `ping` frames in.
pub async fn json_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    Ok(upgrade(
        state,
        ws?,
        SocketSpec {
            claims: user.claims,
            protocol: Protocol::Json,
            room: None,
        },
    ))
}

/// The plain-text socket of one room: `SEND <message>` in, `FROM <user_id> <message>`
/// out. Connecting joins the room — only a real upgrade does: a plain GET changes nothing.
pub async fn text_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    user: AuthUser,
    ApiPath(room): ApiPath<Uuid>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let ws = ws?;
    let request = pb::RoomRequest {
        caller: Some(caller(&user)),
        conversation_id: room.to_string(),
    };
    state
        .chat
        .clone()
        .join_room(request)
        .await
        .map_err(from_chat)?;
    Ok(upgrade(
        state,
        ws,
        SocketSpec {
            claims: user.claims,
            protocol: Protocol::Text,
            room: Some(room),
        },
    ))
}
