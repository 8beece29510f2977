//! Wake-ups for waiting requests: one watch channel per user that is waiting (a long-polling
//! `/sync`, later WebSocket streams). A change notifies exactly the users it concerns; nothing
//! ever polls the store on a timer.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

#[derive(Default)]
pub struct Notifier {
    waiters: Mutex<HashMap<OwnedUserId, watch::Sender<u64>>>,
    /// Set when the server stops: waiting ends at once and nobody waits any more.
    closed: AtomicBool,
}

impl Notifier {
    /// A receiver that sees the latest stream position notified to `user`.
    /// Once the notifier is closed, the receiver's sender is gone: waiting on it ends at once.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return watch::channel(0).1;
        }
        waiters
            .entry(user.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Tells the waiting ones among `users` that something at `position` concerns them.
    pub fn notify<'a>(&self, users: impl IntoIterator<Item = &'a UserId>, position: u64) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        for user in users {
            let gone = match waiters.get(user) {
                Some(sender) => {
                    sender.send_if_modified(|p| {
                        let newer = position > *p;
                        if newer {
                            *p = position;
                        }
                        newer
                    });
                    sender.receiver_count() == 0
                }
                None => false,
            };
            if gone {
                waiters.remove(user);
            }
        }
    }

    /// Notifies the waiting users among `members`, looking at whichever of the two sets is
    /// smaller: a message to a large room costs as much as the number of its waiting members.
    pub fn notify_members(&self, members: &HashSet<OwnedUserId>, position: u64) {
        let targets: Vec<OwnedUserId> = {
            let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if waiters.len() < members.len() {
                waiters
                    .keys()
                    .filter(|u| members.contains(*u))
                    .cloned()
                    .collect()
            } else {
                members
                    .iter()
                    .filter(|u| waiters.contains_key(*u))
                    .cloned()
                    .collect()
            }
        };
        self.notify(targets.iter().map(|u| u.as_ref()), position);
    }

    /// Ends every wait, now and later: long polls answer with what they have, so that the
    /// server can stop (or reopen its store) without waiting for their timeouts.
    pub fn close(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::SeqCst);
        // Dropping the senders wakes every receiver with an error.
        waiters.clear();
    }

    /// How many users have a waiter (for tests and metrics).
    pub fn waiting_users(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_the_users_concerned() {
        let notifier = Notifier::default();
        let alice = ruma::user_id!("@alice:x");
        let bob = ruma::user_id!("@bob:x");
        let mut a = notifier.subscribe(alice);
        let b = notifier.subscribe(bob);
        notifier.notify([alice], 5);
        assert_eq!(*a.wait_for(|p| *p > 0).await.unwrap(), 5);
        assert_eq!(*b.borrow(), 0);
        // Older positions never move a waiter back.
        notifier.notify([alice], 3);
        assert_eq!(*a.borrow(), 5);
        drop(b);
        notifier.notify([bob], 6);
        assert_eq!(notifier.waiting_users(), 1, "bob's unused entry is dropped");
    }

    #[tokio::test]
    async fn closing_ends_every_wait() {
        let notifier = Notifier::default();
        let alice = ruma::user_id!("@alice:x");
        let mut waiting = notifier.subscribe(alice);
        notifier.close();
        assert!(waiting.wait_for(|p| *p > 0).await.is_err());
        assert_eq!(notifier.waiting_users(), 0);
        // A wait that starts later ends at once too.
        assert!(
            notifier
                .subscribe(alice)
                .wait_for(|p| *p > 0)
                .await
                .is_err()
        );
        assert_eq!(notifier.waiting_users(), 0);
    }
}
