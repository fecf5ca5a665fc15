//! Lifecycle events for audit logs, sent to subscribers without ever blocking the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::id::SessionHandle;
use crate::stats::{Counter, Counters};

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
    /// An expired session was deleted: by the purge, or by a write that gave it a
    /// lifetime that had already ended.
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

/// A subscriber's bounded queue of [`Event`]s, from
/// [`Store::subscribe`](crate::Store::subscribe). Dropping it unsubscribes.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), sessile::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = sessile::Store::open(dir.path().join("sessions"))?;
/// let events = store.subscribe();
/// let session = store.create()?;
/// assert!(matches!(
///     events.try_recv(),
///     Ok(sessile::Event::Created { handle }) if handle == session.handle()
/// ));
/// assert_eq!(events.try_recv(), Err(sessile::RecvError::Empty));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription(Receiver<Event>);

/// Why [`Subscription`] gave no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No event is waiting (or none arrived in the time given).
    #[error("no event is waiting")]
    Empty,
    /// Every handle of the store was dropped: no event will come.
    #[error("the store was closed; no event will come")]
    Closed,
}

impl Subscription {
    /// Waits for the next event.
    ///
    /// # Errors
    ///
    /// [`RecvError::Closed`] once the store is dropped and every event was received.
    pub fn recv(&self) -> Result<Event, RecvError> {
        self.0.recv().map_err(|_| RecvError::Closed)
    }

    /// The next event if one is waiting.
    ///
    /// # Errors
    ///
    /// [`RecvError::Empty`] if none is waiting, [`RecvError::Closed`] once the store is
    /// dropped and every event was received.
    pub fn try_recv(&self) -> Result<Event, RecvError> {
        self.0.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => RecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => RecvError::Closed,
        })
    }

    /// Waits up to `timeout` for the next event.
    ///
    /// # Errors
    ///
    /// [`RecvError::Empty`] if none came in time, [`RecvError::Closed`] once the store is
    /// dropped and every event was received.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvError> {
        self.0.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => RecvError::Empty,
            crossbeam_channel::RecvTimeoutError::Disconnected => RecvError::Closed,
        })
    }

    /// The events waiting now, without waiting for more.
    pub fn try_iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.0.try_iter()
    }

    /// Every event as it comes, until the store is dropped.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.0.iter()
    }

    /// How many events are waiting.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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

    pub(crate) fn subscribe(&self) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        let mut subs = self.subscribers.lock();
        subs.push(tx);
        self.any.store(true, Ordering::Release);
        Subscription(rx)
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
                counters.add(Counter::EventsDropped, 1);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        self.any.store(!subs.is_empty(), Ordering::Release);
    }
}
