//! Pure protocol logic, no I/O.
//!
//! Everything here is a function of its arguments: no storage, no network, no clock, no async.
//! The room services feed it events and state they have loaded and persist what it returns.
//!
//! - [`pdu`]: the stored event type, building (hash, sign, event ID), parsing and redaction.
//! - [`auth`]: auth event selection and the authorisation rules, over `ruma-state-res`.
//! - [`state`]: auth chains and state resolution v2, over `ruma-state-res`.
//! - [`state_v1`]: state resolution v1 (room version 1), which ruma does not implement.
//! - [`room_version`]: which room versions we speak (1 to 12) and create (10 to 12).
//! - [`keys`]: checks on uploaded end-to-end encryption keys (owner, device, signatures).
//! - [`relation`]: event relationships (`m.relates_to`) and the rules for aggregating them.

pub mod auth;
pub mod error;
pub mod filter;
pub mod keys;
pub mod pdu;
pub mod relation;
pub mod room_version;
pub mod state;
pub mod state_v1;

#[cfg(test)]
pub(crate) mod test_support;

pub use error::Error;
pub use pdu::{EventTemplate, Pdu};

/// The longest user ID, room ID, event ID or room alias the specification allows, in bytes.
/// ruma checks it too, but not when its `compat-arbitrary-length-ids` feature is on (any crate in
/// the build can turn it on: matrix-sdk, a test dependency, does), so our parsers check it.
pub const MAX_ID_BYTES: usize = 255;

/// A room state: `(event type, state key)` to the ID of the event holding that entry.
pub type StateMap = ruma::state_res::StateMap<ruma::OwnedEventId>;
