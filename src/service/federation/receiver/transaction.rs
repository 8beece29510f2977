//! Incoming transactions: the body of `PUT /send/{txnId}` and the answers already given.
//!
//! A sending server retries a transaction under the same ID until it gets an answer (after an
//! outage, a timeout), so each answer is kept per origin and transaction ID: a replay gets the
//! same answer and nothing is processed twice. An origin sends one transaction at a time and
//! never goes back to an older one once answered, so only its latest [`KEPT_PER_ORIGIN`]
//! answers are kept.

use ruma::{OwnedServerName, ServerName, UInt};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::storage::{Store, Tree, keys, trees};

/// The most PDUs a transaction may carry.
pub const MAX_PDUS: usize = 50;
/// The most EDUs a transaction may carry.
pub const MAX_EDUS: usize = 100;
/// The longest transaction ID accepted, in bytes.
pub const MAX_TXN_ID_BYTES: usize = 255;
/// Answers kept per origin.
pub const KEPT_PER_ORIGIN: usize = 64;

/// The body of `PUT /_matrix/federation/v1/send/{txnId}`. PDUs and EDUs stay raw: each is
/// checked on its own, so that one malformed unit never fails the others.
#[derive(Debug, Deserialize)]
pub struct Transaction {
    pub origin: OwnedServerName,
    pub origin_server_ts: UInt,
    pub pdus: Vec<Box<RawValue>>,
    #[serde(default)]
    pub edus: Vec<Box<RawValue>>,
}

impl Transaction {
    /// The checks of the whole transaction (400 `M_BAD_JSON`): it comes from the server that
    /// signed the request, and carries at most 50 PDUs and 100 EDUs.
    pub fn check(&self, signed_by: &ServerName) -> Result<()> {
        if self.origin != signed_by {
            return Err(Error::BadJson(format!(
                "the transaction's origin {} is not the server that signed the request",
                self.origin
            )));
        }
        if self.pdus.len() > MAX_PDUS {
            return Err(Error::BadJson(format!(
                "a transaction carries at most {MAX_PDUS} PDUs"
            )));
        }
        if self.edus.len() > MAX_EDUS {
            return Err(Error::BadJson(format!(
                "a transaction carries at most {MAX_EDUS} EDUs"
            )));
        }
        Ok(())
    }
}

/// The answers given to incoming transactions.
pub struct TransactionLog {
    store: Store,
    /// origin, transaction ID → the answer.
    answers: Tree,
    /// origin, sequence number → transaction ID: the order to forget answers in.
    order: Tree,
}

impl TransactionLog {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            answers: store.tree(trees::FED_TXN_ANSWER)?,
            order: store.tree(trees::FED_TXN_ORDER)?,
        })
    }

    /// The answer given to this transaction of `origin`, if it was processed.
    pub fn answer(&self, origin: &ServerName, txn_id: &str) -> Result<Option<Value>> {
        match self.answers.get(keys::pair(origin.as_str(), txn_id))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Keeps the answer to a transaction; the oldest answers of the origin beyond
    /// [`KEPT_PER_ORIGIN`] are forgotten.
    pub fn record(&self, origin: &ServerName, txn_id: &str, answer: &Value) -> Result<()> {
        let sequence = self.store.generate_id()?;
        let mut order_key = keys::prefix(origin.as_str());
        order_key.extend_from_slice(&keys::u64_be(sequence));
        let answer = serde_json::to_vec(answer)?;
        let answer_key = keys::pair(origin.as_str(), txn_id);
        let older: Vec<(crate::storage::Bytes, crate::storage::Bytes)> = self
            .order
            .scan_prefix(keys::prefix(origin.as_str()))
            .collect::<std::result::Result<_, _>>()?;
        let forget = older.len().saturating_sub(KEPT_PER_ORIGIN - 1);
        self.store.transact(&[&self.answers, &self.order], |t| {
            t[0].put(&answer_key, answer.clone())?;
            t[1].put(&order_key, txn_id.as_bytes().to_vec())?;
            for (key, old_txn) in older.iter().take(forget) {
                t[1].delete(key.as_ref())?;
                if old_txn.as_ref() != txn_id.as_bytes() {
                    let old = String::from_utf8_lossy(old_txn);
                    t[0].delete(keys::pair(origin.as_str(), &old))?;
                }
            }
            Ok::<(), crate::storage::TxError<Error>>(())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transaction(origin: &str, pdus: usize, edus: usize) -> Transaction {
        let raw = |v: Value| serde_json::value::to_raw_value(&v).unwrap();
        Transaction {
            origin: origin.try_into().unwrap(),
            origin_server_ts: UInt::from(1u32),
            pdus: (0..pdus).map(|_| raw(serde_json::json!({}))).collect(),
            edus: (0..edus).map(|_| raw(serde_json::json!({}))).collect(),
        }
    }

    #[test]
    fn limits_and_origin() {
        let signer: &ServerName = "b.example".try_into().unwrap();
        transaction("b.example", MAX_PDUS, MAX_EDUS)
            .check(signer)
            .unwrap();
        for bad in [
            transaction("c.example", 0, 0),
            transaction("b.example", MAX_PDUS + 1, 0),
            transaction("b.example", 0, MAX_EDUS + 1),
        ] {
            assert!(matches!(bad.check(signer), Err(Error::BadJson(_))));
        }
    }

    #[test]
    fn answers_are_kept_and_the_oldest_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let log = TransactionLog::new(&store).unwrap();
        let origin: &ServerName = "b.example".try_into().unwrap();
        let other: &ServerName = "c.example".try_into().unwrap();
        log.record(other, "t0", &serde_json::json!({ "pdus": {} }))
            .unwrap();
        for i in 0..KEPT_PER_ORIGIN + 3 {
            let answer = serde_json::json!({ "pdus": { format!("$e{i}"): {} } });
            log.record(origin, &format!("t{i}"), &answer).unwrap();
        }
        assert_eq!(log.answer(origin, "t0").unwrap(), None);
        assert_eq!(log.answer(origin, "t2").unwrap(), None);
        assert!(log.answer(origin, "t3").unwrap().is_some());
        let last = KEPT_PER_ORIGIN + 2;
        assert_eq!(
            log.answer(origin, &format!("t{last}")).unwrap(),
            Some(serde_json::json!({ "pdus": { format!("$e{last}"): {} } }))
        );
        // Another origin's answers are its own.
        assert!(log.answer(other, "t0").unwrap().is_some());
        assert_eq!(
            log.order.scan_prefix(keys::prefix("b.example")).count(),
            KEPT_PER_ORIGIN
        );
    }
}
