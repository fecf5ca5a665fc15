//! The one error type of the crate.

use std::path::PathBuf;

/// A specialized `Result` for sessile operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sessile.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a
/// catch-all arm for the rest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The folder is already open, by this process or another one. sled keeps an
    /// exclusive lock on it while a [`Store`](crate::Store) is open.
    #[error(
        "the session store at {path:?} is already open (in this or another process); \
         stop the other user of the folder or drop the other Store first"
    )]
    Locked {
        /// The folder that is locked.
        path: PathBuf,
    },

    /// The folder cannot be used: it is a file, cannot be created, or cannot be written.
    #[error("cannot use {path:?} as a session store folder: {source}")]
    Folder {
        /// The folder that was given to [`Config::new`](crate::Config::new).
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The store was written by a newer version of sessile, whose format this version does
    /// not understand. Nothing was changed on disk.
    #[error(
        "the session store at {path:?} has format version {found}; this version of sessile \
         reads format {supported} and older: upgrade sessile or export the sessions"
    )]
    UnsupportedFormat {
        /// The folder.
        path: PathBuf,
        /// The format version found on disk.
        found: u32,
        /// The newest format version this build reads.
        supported: u32,
    },

    /// The store's metadata is damaged (for example a format marker of the wrong size).
    /// Nothing was changed.
    #[error("the session store at {path:?} is damaged: {detail}")]
    Corrupt {
        /// The folder (or, on Redis, the URL without its password).
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// A dump is not one: a [`SessionDump`](crate::SessionDump) whose key is not one
    /// sessile makes ([`SessionDump::new`](crate::SessionDump::new),
    /// [`SessionDump::handle`](crate::SessionDump::handle),
    /// [`Store::restore`](crate::Store::restore), which then writes nothing), or a dump
    /// file that is damaged, truncated or of an unknown version
    /// ([`check_dump`](crate::check_dump), [`Store::import`](crate::Store::import), which
    /// has restored the sessions before the line named).
    #[error("not a session dump: {detail}")]
    InvalidDump {
        /// What is wrong.
        detail: String,
    },

    /// An error from the storage engine: sled (an I/O error, a damaged file) or, on the
    /// Redis backend, the server or the connection to it (it went away, timed out, or
    /// refused a command). The store keeps working once the cause is gone.
    #[error("storage engine error: {0}")]
    Storage(#[source] StorageError),

    /// A value, key, user name or whole record is bigger than its limit. Nothing was
    /// stored and the session was left unchanged.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: Oversized,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// The session no longer exists: it was destroyed, or it expired. `save` returns this
    /// instead of bringing the session back.
    #[error("session not found: it was destroyed or has expired")]
    NotFound,

    /// A session token did not have the expected shape.
    #[error(transparent)]
    InvalidToken(#[from] ParseIdError),

    /// A [`Config`](crate::Config) value is out of range (or, on Redis, the URL is not
    /// one the client accepts).
    #[error("invalid configuration: {setting}: {reason}")]
    InvalidConfig {
        /// The setting, named as its [`Config`](crate::Config) method.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A value could not be serialized.
    #[error("could not encode the value of {key:?}: {source}")]
    Encode {
        /// The session key whose value failed.
        key: String,
        /// The serializer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A whole session record (user and values) could not be serialized. Nothing was
    /// written.
    #[error("could not encode the session record: {0}")]
    EncodeRecord(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// A stored value could not be deserialized into the requested type.
    #[error("could not decode the value of {key:?} into the requested type: {source}")]
    Decode {
        /// The session key whose value failed.
        key: String,
        /// The deserializer's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The operating system's random number generator failed, so no token could be made.
    #[error("the operating system's random number generator failed: {0}")]
    Entropy(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// Every freshly generated token was already in use. With 256 random bits this does
    /// not happen unless the random number generator is broken. Nothing was written.
    #[error(
        "every freshly generated session token was already in use; \
         is the random number generator broken?"
    )]
    TokenCollision,

    /// A write kept finding a different record than the one it read under its lock, and
    /// gave up after a few attempts (8). Nothing was written. Each attempt that must first
    /// take the lock of the session's user (the write takes the session from that user)
    /// counts, and so does a record changed by a writer outside this process's locks: on
    /// a folder, something else writing the store's files; on Redis, other stores
    /// changing the session or its user throughout.
    #[error("the session record kept changing under a locked write; nothing was written")]
    Contended,

    /// On Redis: another store kept the session leased for an
    /// [`update`](crate::Store::update) for the lease's whole length (5 s), so this write
    /// gave up. Nothing was written. A store that dies holding a lease blocks the session
    /// this long at most.
    #[error("another store held the session for an update throughout the 5 s lease")]
    SessionBusy,

    /// On Redis with [`Config::redis_min_replicas`](crate::Config::redis_min_replicas): a
    /// change that must be durable (a logout, a revocation, a rotation, a flush) is on the
    /// primary, but fewer replicas than asked confirmed it within 2 s. A failover now could
    /// lose it: treat a logout as not yet safe, and retry.
    #[error("only {acknowledged} of {wanted} Redis replicas confirmed the change in time")]
    NotReplicated {
        /// Replicas that confirmed it.
        acknowledged: usize,
        /// Replicas waited for: the setting, or every connected replica if fewer are.
        wanted: usize,
    },

    /// The session was written while an [`update`](crate::Store::update) closure ran, by
    /// a write the update could not hold off: the closure gave the session to another
    /// user while a revoke-all or cap of its previous user was running, or (on Redis)
    /// another store's revoke-all or cap changed it. The closure is not run twice;
    /// nothing was written.
    #[error("the session was changed by another write while the update waited for a revoke")]
    UpdateConflict,

    /// Writing a dump ([`Store::export`](crate::Store::export)) or reading one
    /// ([`Store::import`](crate::Store::import)) failed: the file, pipe or folder.
    #[error("cannot write or read the dump: {0}")]
    DumpIo(#[source] std::io::Error),

    /// The store's purge thread could not be started, so the store was not opened (its
    /// folder exists, and a new store has its format marker).
    #[error("cannot start the purge thread: {0}")]
    PurgeThread(#[source] std::io::Error),

    /// A method that writes was called from inside an [`update`](crate::Store::update)
    /// closure (of this store or another sessile store). It was refused instead of waiting
    /// for a lock that the closure's caller, or an update on another thread, holds; make
    /// the write after `update` returns.
    #[error(
        "a write to a session store was made inside an `update` closure; \
         make it after `update` returns"
    )]
    WriteInsideUpdate,

    /// Not an error a caller sees: an adapter ran a write where it must not wait, and a
    /// lock was busy (the engine's `without_waiting` drops the result and runs the
    /// write again where it may wait).
    #[doc(hidden)]
    #[error("internal: a lock was busy where the caller must not wait")]
    WouldWait,
}

/// The error returned when a string is not a well-formed session token.
///
/// It says nothing about the input, so that a token never ends up in a log through it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed session token: expected 43 URL-safe base64 characters")]
pub struct ParseIdError(pub(crate) ());

/// The error returned when a string is not a well-formed [`SessionHandle`](crate::SessionHandle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed session handle: expected 32 hex characters")]
pub struct ParseHandleError(pub(crate) ());

/// What an [`Error::TooLarge`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Oversized {
    /// One value inside a session.
    Value,
    /// A key inside a session.
    Key,
    /// A user name.
    User,
    /// The whole encoded session record.
    Record,
}

impl std::fmt::Display for Oversized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Oversized::Value => "the value",
            Oversized::Key => "the key",
            Oversized::User => "the user name",
            Oversized::Record => "the session record",
        })
    }
}

/// An error reported by the storage engine (sled, or the Redis server and the connection
/// to it). Its `Display` and `source()` carry the details; the engines' own types are not
/// part of sessile's API.
#[derive(Debug)]
pub struct StorageError(Engine);

#[derive(Debug)]
enum Engine {
    Sled(sled::Error),
    #[cfg(feature = "redis")]
    Redis(redis::RedisError),
    /// No connection to the Redis server could be had in time.
    #[cfg(feature = "redis")]
    Pool(r2d2::Error),
    /// Opening the store: no connection to the server (its URL, password hidden).
    #[cfg(feature = "redis")]
    Connect(String, r2d2::Error),
    /// The Redis server answered something sessile never writes.
    #[cfg(feature = "redis")]
    Protocol(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Engine::Sled(e) => e.fmt(f),
            #[cfg(feature = "redis")]
            Engine::Redis(e) => write!(f, "redis: {e}"),
            #[cfg(feature = "redis")]
            Engine::Pool(e) => write!(f, "redis: no connection to the server: {e}"),
            #[cfg(feature = "redis")]
            Engine::Connect(server, e) => write!(f, "redis: no connection to {server}: {e}"),
            #[cfg(feature = "redis")]
            Engine::Protocol(what) => write!(f, "redis: unexpected reply: {what}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Engine::Sled(sled::Error::Io(e)) => Some(e),
            Engine::Sled(_) => None,
            #[cfg(feature = "redis")]
            Engine::Redis(e) => Some(e),
            #[cfg(feature = "redis")]
            Engine::Pool(e) | Engine::Connect(_, e) => Some(e),
            #[cfg(feature = "redis")]
            Engine::Protocol(_) => None,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(StorageError(Engine::Sled(e)))
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Storage(StorageError(Engine::Redis(e)))
    }
}

#[cfg(feature = "redis")]
impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        Error::Storage(StorageError(Engine::Pool(e)))
    }
}

#[cfg(feature = "redis")]
impl Error {
    /// A reply from the Redis server that sessile's scripts never give.
    pub(crate) fn protocol(what: impl Into<String>) -> Error {
        Error::Storage(StorageError(Engine::Protocol(what.into())))
    }

    /// No connection to the server `server` (its URL with the password hidden) when the
    /// store opened.
    pub(crate) fn no_connection(server: String, e: r2d2::Error) -> Error {
        Error::Storage(StorageError(Engine::Connect(server, e)))
    }
}

impl<E: Into<Error>> From<sled::transaction::TransactionError<E>> for Error {
    fn from(e: sled::transaction::TransactionError<E>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e.into(),
            sled::transaction::TransactionError::Storage(e) => e.into(),
        }
    }
}
