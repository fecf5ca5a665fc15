//! Lifecycle events for audit logs, sent to subscribers without ever blocking the store.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::id::SessionHandle;
use crate::stats::Counters;

/// Something that happened to a session. Events name sessions by handle, never by token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A session was created.
    Created {
        /// The new session.
        handle: SessionHandle,
    },
    /// A session got a new token; the old one stopped working.
    Regenerated {
        /// The handle under the old token.
        old: SessionHandle,
        /// The handle under the new token.
        new: SessionHandle,
        /// The session's user.
        user: Option<String>,
    },
    /// A session was destroyed by a call to the store.
    Destroyed {
        /// The destroyed session.
        handle: SessionHandle,
        /// Its user.
        user: Option<String>,
        /// Which call destroyed it.
        reason: DestroyReason,
    },
    /// The cleanup deleted an expired session.
    Expired {
        /// The expired session.
        handle: SessionHandle,
        /// Its user.
        user: Option<String>,
    },
}

/// Why a session was destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestroyReason {
    /// [`Store::destroy`](crate::Store::destroy).
    Destroy,
    /// [`Store::destroy_by_handle`](crate::Store::destroy_by_handle).
    Handle,
    /// [`Store::destroy_user`](crate::Store::destroy_user).
    UserRevoked,
    /// The user went over [`Config::max_sessions_per_user`](crate::Config::max_sessions_per_user).
    Evicted,
}

#[derive(Debug)]
pub(crate) struct Events {
    capacity: usize,
    any: AtomicBool,
    subscribers: Mutex<Vec<Sender<Event>>>,
}

impl Events {
    pub(crate) fn new(capacity: usize) -> Events {
        Events {
            capacity,
            any: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        let mut subs = self.subscribers.lock();
        subs.push(tx);
        self.any.store(true, Ordering::Release);
        rx
    }

    /// Sends the event made by `make` to every subscriber. `make` runs only if there is one.
    pub(crate) fn emit(&self, counters: &Counters, make: impl FnOnce() -> Event) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let event = make();
        let mut subs = self.subscribers.lock();
        subs.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                Counters::add(&counters.events_dropped, 1);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        self.any.store(!subs.is_empty(), Ordering::Release);
    }
}
