//! `PUT /_matrix/federation/v1/send/{txnId}`: another server pushes PDUs and EDUs to us.
//!
//! The whole transaction is refused only when it is malformed (400 `M_BAD_JSON`: not from the
//! server that signed it, more than 50 PDUs or 100 EDUs); otherwise the answer is 200 with the
//! result of each PDU, even when some were dropped or rejected.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

use super::auth::Signed;
use crate::api::extract::AppState;
use crate::error::Result;
use crate::service::federation::receiver::transaction::Transaction;

pub async fn send_transaction(
    State(services): State<AppState>,
    Path(txn_id): Path<String>,
    signed: Signed,
) -> Result<Json<Value>> {
    let transaction: Transaction = signed.json()?;
    let answer = services
        .receive_transaction(&signed.origin, &txn_id, transaction)
        .await?;
    Ok(Json(answer))
}
