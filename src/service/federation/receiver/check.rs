//! The checks every event from another server goes through, whether it came in a transaction,
//! in a `/get_missing_events` answer or alone from `/event/{eventId}`.

use ruma::signatures::Verified;

use super::Peer;
use crate::core::Pdu;
use crate::error::Result;
use crate::service::rooms::ingest::Received;

impl Peer<'_> {
    /// Takes a received event through the checks on receipt of a PDU: signatures and content
    /// hash, the auth events (fetched when unknown) and check 4, the prev events (missing ones
    /// pulled with `/get_missing_events` when `pull`, and the state at what stays missing
    /// fetched), then checks 5 and 6 and the write, by the room service.
    ///
    /// `Err` means the event was dropped (bad signature) or could not be processed (a fetch
    /// failed): nothing of it is stored, and a later reference may bring it again.
    pub async fn handle(&self, pdu: Pdu, pull: bool) -> Result<Received> {
        let rooms = &self.services.rooms;
        if let Some(known) = rooms.received(pdu.event_id())? {
            return Ok(known);
        }
        let pdu = self.verify(pdu).await?;
        self.fetch_auth_events(&pdu).await?;
        if let Err(reason) = rooms.check_against_auth_events(&pdu)? {
            rooms.store_outlier(&pdu.with_rejected(true)).await?;
            return Ok(Received::Rejected(reason));
        }
        self.fill_prev_events(&pdu, pull).await?;
        rooms.ingest_remote(pdu).await
    }

    /// Checks 2 and 3: the signatures the room version requires (a bad one drops the event) and
    /// the content hash (a mismatch means we only get to keep the redacted event).
    pub async fn verify(&self, pdu: Pdu) -> Result<Pdu> {
        let federation = &self.services.federation;
        match federation
            .verify_event(pdu.room_version(), pdu.json())
            .await?
        {
            Verified::All => Ok(pdu),
            Verified::Signatures => {
                tracing::info!(
                    origin = %self.origin,
                    event_id = %pdu.event_id(),
                    "the content hash does not match: keeping the redacted event"
                );
                Ok(pdu.redacted()?)
            }
        }
    }
}
