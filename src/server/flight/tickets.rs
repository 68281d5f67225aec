//! Statement tickets: what a `GetFlightInfo` hands out and `DoGet`
//! redeems, sealed with an HMAC so a client cannot alter it.

use super::invalid;
use crate::db;
use arrow::array::RecordBatch;
use base64::Engine;
use bytes::Bytes;
use tonic::Status;

/// Seals tickets: an HMAC-SHA256 tag over the ticket's JSON, under a key
/// made when the server starts.
pub(super) struct TicketKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

const TAG_LEN: usize = 32;

/// What a statement ticket holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct TicketBody {
    /// The tenant it was issued to.
    pub(super) tenant: String,
    pub(super) sql: String,
    /// Bound parameters: one row, as an Arrow IPC stream in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) params: Option<String>,
    /// Read events as written, without schema migrations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) raw: bool,
}

impl TicketKey {
    pub(super) fn generate() -> Result<Self, String> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        aws_lc_rs::hmac::Key::generate(aws_lc_rs::hmac::HMAC_SHA256, &rng)
            .map(TicketKey)
            .map_err(|_| "cannot make the ticket key".to_string())
    }

    pub(super) fn seal(&self, body: &TicketBody) -> Result<Bytes, Status> {
        let json = serde_json::to_vec(body).map_err(|e| Status::internal(e.to_string()))?;
        let tag = aws_lc_rs::hmac::sign(&self.0, &json);
        let mut out = Vec::with_capacity(TAG_LEN + json.len());
        out.extend_from_slice(tag.as_ref());
        out.extend_from_slice(&json);
        Ok(out.into())
    }

    pub(super) fn open(&self, sealed: &[u8]) -> Result<TicketBody, Status> {
        let forged = || {
            invalid(
                "the ticket is not one this server issued (or the server has restarted since): get a new one with GetFlightInfo",
            )
        };
        if sealed.len() < TAG_LEN {
            return Err(forged());
        }
        let (tag, json) = sealed.split_at(TAG_LEN);
        aws_lc_rs::hmac::verify(&self.0, json, tag).map_err(|_| forged())?;
        serde_json::from_slice(json).map_err(|_| forged())
    }
}

pub(super) fn encode_params(batch: &RecordBatch) -> Result<String, Status> {
    let ipc = db::encode_ipc(batch).map_err(|e| invalid(format!("parameters: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(ipc))
}

pub(super) fn decode_params(text: &str) -> Result<RecordBatch, Status> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| invalid(format!("ticket parameters: {e}")))?;
    db::decode_ipc(&Bytes::from(bytes)).map_err(|e| invalid(format!("ticket parameters: {e}")))
}
