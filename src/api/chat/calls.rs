//! Chat API: calls. Each action sends the Matrix VoIP event into the chat (so Matrix clients
//! ring and answer too); `GET /calls` reads the call log those events made; `GET /call/turn`
//! hands out TURN credentials. Media flows between the clients (WebRTC); the server signals
//! and logs. See `service::chat::call_signalling` and `docs/calls.md`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson, ChatQuery};
use super::paging::PageQuery;
use super::users::{existing_user, parse_user as parse_user_ref};
use crate::api::Routes;
use crate::api::extract::{AppState, parse_room_id};
use crate::service::chat::call_signalling::{CallFailure, CallRefused, CallTarget};
use crate::service::chat::calls::CallKind;
use crate::service::chat::observer::MAX_CALL_ID_BYTES;
use crate::service::chat::turn;

/// The largest SDP offer or answer accepted (the whole event must stay under 64 KiB).
const MAX_SDP_BYTES: usize = 32 * 1024;
/// The most ICE candidates one request sends.
const MAX_CANDIDATES: usize = 100;
/// The longest ICE candidate line and media ID accepted.
const MAX_CANDIDATE_BYTES: usize = 1024;
const MAX_SDP_MID_BYTES: usize = 64;
/// The hangup reasons of the Matrix specification.
const HANGUP_REASONS: [&str; 7] = [
    "user_hangup",
    "ice_failed",
    "invite_timeout",
    "ice_timeout",
    "user_media_failed",
    "user_busy",
    "unknown_error",
];

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/call/start", post(start))
        .route("/call/answer", post(answer))
        .route("/call/candidates", post(candidates))
        .route("/call/end", post(end))
        .route("/call/turn", get(turn_credentials))
        .route("/calls", get(list))
}

/// The Chat API error of a refused call action.
fn refused(reason: CallRefused) -> ChatError {
    match reason {
        CallRefused::NotFriends => ChatError::new(
            StatusCode::FORBIDDEN,
            "not_friends",
            "only friends can be called",
        ),
        CallRefused::NotFound => ChatError::not_found("no such call"),
        CallRefused::OwnCall => ChatError::forbidden("the caller cannot answer their own call"),
        CallRefused::AlreadyAnswered => ChatError::new(
            StatusCode::CONFLICT,
            "already_answered",
            "the call has already been answered",
        ),
        CallRefused::Ended => {
            ChatError::new(StatusCode::CONFLICT, "call_ended", "the call is over")
        }
    }
}

impl From<CallFailure> for ChatError {
    fn from(failure: CallFailure) -> Self {
        match failure {
            CallFailure::Refused(r) => refused(r),
            CallFailure::Failed(e) => e.into(),
        }
    }
}

/// 400 unless `sdp` looks like a session description of `kind` (an SDP starting `v=0`, with
/// a video section for video, an audio one and no video one for voice).
fn check_sdp(field: &str, sdp: &str, kind: Option<CallKind>) -> ChatResult<()> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(ChatError::invalid(format!(
            "{field}: at most {MAX_SDP_BYTES} bytes"
        )));
    }
    let has = |media: &str| {
        sdp.lines()
            .any(|line| line.trim_start().starts_with(&format!("m={media}")))
    };
    if !sdp.starts_with("v=0") || !(has("audio") || has("video")) {
        return Err(ChatError::invalid(format!(
            "{field}: not an SDP session description (v=0, with m= lines)"
        )));
    }
    match kind {
        Some(CallKind::Video) if !has("video") => Err(ChatError::invalid(format!(
            "{field}: a video call's offer has a video section (m=video)"
        ))),
        Some(CallKind::Voice) if has("video") || !has("audio") => Err(ChatError::invalid(format!(
            "{field}: a voice call's offer has an audio section and no video one"
        ))),
        _ => Ok(()),
    }
}

/// 400 unless `call_id` can name a call.
fn check_call_id(call_id: &str) -> ChatResult<()> {
    if call_id.is_empty()
        || call_id.len() > MAX_CALL_ID_BYTES
        || call_id.chars().any(char::is_control)
    {
        return Err(ChatError::invalid(format!(
            "call_id: 1 to {MAX_CALL_ID_BYTES} bytes, no control characters"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct StartBody {
    to: String,
    kind: CallKind,
    sdp_offer: String,
}

/// `POST /call/start` `{to, kind, sdp_offer}` → 201 Call. `to` is a friend (user ID or
/// username; their direct chat rings) or a group the caller has joined (every member rings).
async fn start(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<StartBody>,
) -> ChatResult<(StatusCode, Json<Value>)> {
    check_sdp("sdp_offer", &body.sdp_offer, Some(body.kind))?;
    let to = body.to.trim();
    let target = if to.starts_with('!') {
        let room_id = parse_room_id(to)?;
        // A direct chat's ID calls the friend in it.
        match state.dm_peer(&auth.user_id, &room_id)? {
            Some(peer) => CallTarget::Friend(peer),
            None => CallTarget::Group(room_id),
        }
    } else {
        let peer = parse_user_ref(&state, to)?;
        if peer == auth.user_id {
            return Err(ChatError::new(
                StatusCode::BAD_REQUEST,
                "self",
                "to: you cannot call yourself",
            ));
        }
        existing_user(&state, &peer)?;
        CallTarget::Friend(peer)
    };
    let call = state
        .start_call(&auth.user_id, &auth.device_id, target, &body.sdp_offer)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(call))))
}

#[derive(Deserialize)]
struct AnswerBody {
    call_id: String,
    sdp_answer: String,
}

/// `POST /call/answer` `{call_id, sdp_answer}` → 200 Call.
async fn answer(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<AnswerBody>,
) -> ChatResult<Json<Value>> {
    check_call_id(&body.call_id)?;
    check_sdp("sdp_answer", &body.sdp_answer, None)?;
    let call = state
        .answer_call(
            &auth.user_id,
            &auth.device_id,
            &body.call_id,
            &body.sdp_answer,
        )
        .await?;
    Ok(Json(json!(call)))
}

/// One ICE candidate, as WebRTC's `RTCIceCandidate.toJSON()` and Matrix name its fields.
#[derive(Deserialize)]
struct Candidate {
    candidate: String,
    #[serde(rename = "sdpMid")]
    sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex")]
    sdp_m_line_index: Option<u32>,
}

#[derive(Deserialize)]
struct CandidatesBody {
    call_id: String,
    candidates: Vec<Candidate>,
}

/// `POST /call/candidates` `{call_id, candidates: [{candidate, sdpMid?, sdpMLineIndex?}]}` →
/// 204.
async fn candidates(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<CandidatesBody>,
) -> ChatResult<StatusCode> {
    check_call_id(&body.call_id)?;
    if body.candidates.is_empty() || body.candidates.len() > MAX_CANDIDATES {
        return Err(ChatError::invalid(format!(
            "candidates: 1 to {MAX_CANDIDATES} candidates"
        )));
    }
    let mut candidates = Vec::with_capacity(body.candidates.len());
    for c in body.candidates {
        if c.candidate.len() > MAX_CANDIDATE_BYTES
            || c.candidate.chars().any(char::is_control)
            || c.sdp_mid
                .as_ref()
                .is_some_and(|m| m.len() > MAX_SDP_MID_BYTES || m.chars().any(char::is_control))
            || c.sdp_m_line_index.is_some_and(|i| i > u32::from(u16::MAX))
        {
            return Err(ChatError::invalid(format!(
                "candidates: a candidate line has at most {MAX_CANDIDATE_BYTES} bytes, sdpMid \
                 at most {MAX_SDP_MID_BYTES}, sdpMLineIndex at most 65535"
            )));
        }
        // An empty candidate (end of candidates) needs no media line.
        if !c.candidate.is_empty() && c.sdp_mid.is_none() && c.sdp_m_line_index.is_none() {
            return Err(ChatError::invalid(
                "candidates: each candidate needs sdpMid or sdpMLineIndex",
            ));
        }
        let mut candidate = json!({ "candidate": c.candidate });
        if let Some(mid) = c.sdp_mid {
            candidate["sdpMid"] = json!(mid);
        }
        if let Some(index) = c.sdp_m_line_index {
            candidate["sdpMLineIndex"] = json!(index);
        }
        candidates.push(candidate);
    }
    state
        .send_call_candidates(&auth.user_id, &auth.device_id, &body.call_id, candidates)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct EndBody {
    call_id: String,
    reason: Option<String>,
}

/// `POST /call/end` `{call_id, reason?}` → 200 Call. The caller (or the callee who answered)
/// hangs up; a callee who has not answered declines.
async fn end(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<EndBody>,
) -> ChatResult<Json<Value>> {
    check_call_id(&body.call_id)?;
    if let Some(reason) = &body.reason
        && !HANGUP_REASONS.contains(&reason.as_str())
    {
        return Err(ChatError::invalid(format!(
            "reason: one of {}",
            HANGUP_REASONS.join(", ")
        )));
    }
    let call = state
        .end_call(
            &auth.user_id,
            &auth.device_id,
            &body.call_id,
            body.reason.as_deref(),
        )
        .await?;
    Ok(Json(json!(call)))
}

/// `GET /calls?cursor&limit` → `{calls: [Call], next_cursor}`: the calls the user placed or
/// was rung by, newest first.
async fn list(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatQuery(query): ChatQuery<PageQuery>,
) -> ChatResult<Json<Value>> {
    let limit = query.limit()?;
    let before = query.cursor()?;
    let (calls, next) = state.call_log(&auth.user_id, before, limit).await?;
    Ok(Json(json!({
        "calls": calls,
        "next_cursor": next.map(|n| n.to_string()),
    })))
}

/// `GET /call/turn` → `{uris, username, password, ttl_secs}`, or 404 `not_configured`.
async fn turn_credentials(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
) -> ChatResult<Json<Value>> {
    match turn::credentials(&state.config.turn, &auth.user_id, turn::now_secs()) {
        Some(credentials) => Ok(Json(json!(credentials))),
        None => Err(ChatError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "no TURN server is configured",
        )),
    }
}
