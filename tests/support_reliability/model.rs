//! A plain in-memory model of what a sessile store should hold, and a runner that applies
//! one sequence of operations to a real [`Store`] (with a [`ManualClock`]) and to the
//! model, comparing every session after every step.
//!
//! Shared by `tests/model.rs` (proptest, runs in `cargo test`) and
//! `fuzz/fuzz_targets/ops.rs` (libFuzzer). Both turn raw bytes into operations with
//! [`Op::decode`], so a fuzzer finding can be replayed as a proptest case and back.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sessile::{Config, Error, Lifetime, ManualClock, Session, SessionId, Store};

const IDLE_MS: u64 = 10_000;
const ABSOLUTE_MS: u64 = 60_000;
const GRANULARITY_MS: u64 = 500;
/// `Config::max_sessions_per_user` of the store under test.
const MAX_PER_USER: usize = 2;
const START_MS: u64 = 1_700_000_000_000;
const MAX_SLOTS: usize = 6;
const USERS: [&str; 3] = ["alice", "bob", "carol"];
const KEYS: [&str; 3] = ["a", "b", "c"];
/// The key `update` increments (8 bytes, little-endian).
const COUNTER: &str = "n";

/// One step. `slot` picks one of the sessions the "client" holds (modulo how many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Advance(u32),
    Create,
    Insert {
        slot: u8,
        key: u8,
        value: u8,
    },
    Remove {
        slot: u8,
        key: u8,
    },
    SetUser {
        slot: u8,
        user: Option<u8>,
    },
    Save {
        slot: u8,
    },
    Load {
        slot: u8,
    },
    Touch {
        slot: u8,
    },
    Update {
        slot: u8,
        change: bool,
    },
    Destroy {
        slot: u8,
    },
    Regenerate {
        slot: u8,
    },
    Purge,
    Reopen,
    SessionsOf {
        user: u8,
    },
    Len,
    DestroyUser {
        user: u8,
        except: Option<u8>,
    },
    /// The client gives its copy of a session one of [`LIFETIMES`] (saved by its next
    /// save or regenerate).
    SetLifetime {
        slot: u8,
        lifetime: u8,
    },
}

impl Op {
    /// Three bytes per operation; a trailing partial chunk is ignored.
    pub fn decode(bytes: &[u8]) -> Vec<Op> {
        bytes
            .chunks_exact(3)
            .map(|c| {
                let (a, b) = (c[1], c[2]);
                // SetLifetime came later: it takes the top 16 byte values, so the other
                // operations decode as they did when the committed corpus was found.
                if c[0] >= 240 {
                    return Op::SetLifetime {
                        slot: a,
                        lifetime: b,
                    };
                }
                match c[0] % 17 {
                    0 => Op::Advance(match a % 5 {
                        0 => u32::from(b),
                        1 => u32::from(b) * 100,
                        2 => u32::from(b) * 1_000,
                        3 => [1, 499, 500, 9_999, 10_000, 60_000][usize::from(b) % 6],
                        _ => 5_000,
                    }),
                    1 | 2 => Op::Create,
                    3 => Op::Insert {
                        slot: a,
                        key: b % 3,
                        value: b / 3,
                    },
                    4 => Op::Remove { slot: a, key: b },
                    5 => Op::SetUser {
                        slot: a,
                        user: (b % 4 != 3).then_some(b % 4),
                    },
                    6 => Op::Save { slot: a },
                    7 => Op::Load { slot: a },
                    8 => Op::Touch { slot: a },
                    9 => Op::Update {
                        slot: a,
                        change: b % 4 != 0,
                    },
                    10 => Op::Destroy { slot: a },
                    11 => Op::Regenerate { slot: a },
                    12 => Op::Purge,
                    13 => Op::Reopen,
                    14 => Op::SessionsOf { user: a },
                    15 => Op::Len,
                    _ => Op::DestroyUser {
                        user: a,
                        except: (b % 2 == 0).then_some(b / 2),
                    },
                }
            })
            .collect()
    }
}

/// A session's own timeouts in ms; `None`: the store's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Own {
    idle: Option<u64>,
    absolute: Option<u64>,
}

/// The lifetimes `SetLifetime` picks from: the store's, a short one, a remembered one.
const LIFETIMES: [Own; 3] = [
    Own {
        idle: None,
        absolute: None,
    },
    Own {
        idle: Some(3_000),
        absolute: None,
    },
    Own {
        idle: Some(30_000),
        absolute: Some(120_000),
    },
];

impl Own {
    fn idle(self) -> u64 {
        self.idle.unwrap_or(IDLE_MS)
    }

    fn absolute(self) -> u64 {
        self.absolute.unwrap_or(ABSOLUTE_MS)
    }

    fn of(lifetime: Lifetime) -> Own {
        let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).expect("ms"));
        Own {
            idle: ms(lifetime.idle()),
            absolute: ms(lifetime.absolute()),
        }
    }

    fn lifetime(self) -> Lifetime {
        let mut l = Lifetime::default();
        if let Some(idle) = self.idle {
            l = l.with_idle(Duration::from_millis(idle));
        }
        if let Some(absolute) = self.absolute {
            l = l.with_absolute(Duration::from_millis(absolute));
        }
        l
    }
}

/// What the model expects stored under one token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    created: u64,
    last_seen: u64,
    expires: u64,
    user: Option<String>,
    data: BTreeMap<String, Vec<u8>>,
    own: Own,
}

/// What a commit did, as far as the caller can tell.
#[derive(Debug, PartialEq, Eq)]
enum Committed {
    /// Written, or skipped as unchanged: the session is live.
    Live,
    /// The new lifetime had already ended: the session is gone.
    Ended,
}

/// What a client's copy changed since it was read: what its save applies onto the
/// stored version (the keys it set or removed, its user and lifetime if it set them).
#[derive(Debug, Default, Clone)]
struct Pending {
    keys: BTreeSet<&'static str>,
    user: bool,
    lifetime: bool,
}

impl Pending {
    /// The user, values and lifetime after `copy`'s changes are applied onto `stored`.
    fn merge(
        &self,
        copy: &Session,
        stored: &Stored,
    ) -> (Option<String>, BTreeMap<String, Vec<u8>>, Own) {
        let mut data = stored.data.clone();
        for key in &self.keys {
            match copy.get_bytes(key) {
                Some(v) => data.insert((*key).to_owned(), v.to_vec()),
                None => data.remove(*key),
            };
        }
        let user = if self.user {
            copy.user().map(str::to_owned)
        } else {
            stored.user.clone()
        };
        let own = if self.lifetime {
            Own::of(copy.lifetime())
        } else {
            stored.own
        };
        (user, data, own)
    }
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    /// token -> record, live or expired-but-not-purged.
    records: BTreeMap<String, Stored>,
    /// Tokens destroyed or rotated away: must never load again.
    dead: BTreeSet<String>,
}

impl Model {
    fn live(&self, token: &str) -> Option<&Stored> {
        self.records.get(token).filter(|r| r.expires > self.now)
    }

    fn expires_for(&self, created: u64, own: Own) -> u64 {
        (self.now + own.idle()).min(created + own.absolute())
    }

    /// The write `save` or `update` makes, skipped if nothing changed and the expiry
    /// would move by less than the granularity; a lifetime that has already ended ends
    /// the session; then the per-user cap if the write gave the session to a new user.
    fn commit(
        &mut self,
        token: &str,
        user: Option<String>,
        data: BTreeMap<String, Vec<u8>>,
        own: Own,
    ) -> Committed {
        let now = self.now;
        let Some(r) = self.records.get(token) else {
            return Committed::Ended;
        };
        let expires = self.expires_for(r.created, own);
        if expires <= now {
            self.records.remove(token);
            self.dead.insert(token.to_owned());
            return Committed::Ended;
        }
        let r = self.records.get_mut(token).expect("checked above");
        let barely =
            own.absolute == r.own.absolute && within_granularity(now, r.expires, expires, own);
        if r.user == user && r.data == data && barely {
            return Committed::Live;
        }
        let assigned = user.clone().filter(|u| r.user.as_ref() != Some(u));
        // A changed record whose expiry would barely move keeps the stored expiry.
        if !barely {
            r.expires = expires;
        }
        r.user = user;
        r.data = data;
        r.own = own;
        r.last_seen = now;
        if let Some(user) = assigned {
            self.cap(&user, token);
        }
        Committed::Live
    }

    /// `max_sessions_per_user`: the oldest live sessions of `user` (by creation, then
    /// handle) go until `MAX_PER_USER` are left, never `keep`.
    fn cap(&mut self, user: &str, keep: &str) {
        let now = self.now;
        let mut others: Vec<(u64, String, String)> = self
            .records
            .iter()
            .filter(|(t, r)| {
                r.expires > now && r.user.as_deref() == Some(user) && t.as_str() != keep
            })
            .map(|(t, r)| {
                let id: SessionId = t.parse().expect("token");
                (r.created, id.handle().to_string(), t.clone())
            })
            .collect();
        if others.len() < MAX_PER_USER {
            return;
        }
        others.sort();
        let excess = others.len() + 1 - MAX_PER_USER;
        for (_, _, token) in others.into_iter().take(excess) {
            self.records.remove(&token);
            self.dead.insert(token);
        }
    }
}

/// The store's rule: the step is the granularity scaled by the session's idle timeout
/// against the store's, but never more than 1/20 of the lifetime left at `now`.
fn within_granularity(now: u64, old: u64, new: u64, own: Own) -> bool {
    let scaled = GRANULARITY_MS * own.idle() / IDLE_MS;
    let step = scaled.min(new.saturating_sub(now) / 20);
    new >= old && new - old < step
}

fn ms(t: SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_millis(),
    )
    .expect("fits u64")
}

fn data_of(s: &Session) -> BTreeMap<String, Vec<u8>> {
    s.keys()
        .map(|k| (k.to_owned(), s.get_bytes(k).expect("listed key").to_vec()))
        .collect()
}

fn counter(s: &Session) -> u64 {
    s.get_bytes(COUNTER)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

fn config(path: &Path, clock: &ManualClock, cache: bool, base: &dyn Fn(&Path) -> Config) -> Config {
    base(path)
        .idle_timeout(Duration::from_millis(IDLE_MS))
        .absolute_timeout(Duration::from_millis(ABSOLUTE_MS))
        .touch_granularity(Duration::from_millis(GRANULARITY_MS))
        .purge_thread(false)
        .cache_entries(if cache { 4 } else { 0 })
        .max_sessions_per_user(MAX_PER_USER)
        .clock(clock.clock())
}

/// Runs `ops` against a fresh store in `dir` and against the model; panics (with the step
/// and operation) at the first difference. `cache` picks a tiny read cache (so entries
/// are evicted and re-read from disk) or none.
pub fn run(ops: &[Op], cache: bool, dir: &Path) {
    run_on(ops, cache, dir, &|path| Config::new(path));
}

/// [`run`] with the store's settings starting from `base(path)` (a folder, or Redis).
pub fn run_on(ops: &[Op], cache: bool, dir: &Path, base: &dyn Fn(&Path) -> Config) {
    let clock = ManualClock::starting_at(UNIX_EPOCH + Duration::from_millis(START_MS));
    let path = dir.join("store");
    let mut store = config(&path, &clock, cache, base).open().expect("open");
    let mut model = Model {
        now: START_MS,
        ..Model::default()
    };
    let mut slots: Vec<Session> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut created = 0usize;
    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("step {step}: {op:?}");
        if *op == Op::Reopen {
            // Dropping the last handle stops the purge thread and flushes.
            drop(store);
            store = config(&path, &clock, cache, base).open().expect(&ctx);
        } else {
            apply(
                *op,
                &ctx,
                &clock,
                &store,
                &mut model,
                &mut slots,
                &mut pending,
                &mut created,
            );
        }
        check_all(&store, &model, &ctx);
    }
    let report = store.verify(false).expect("verify");
    assert!(report.is_consistent(), "after all steps: {report:?}");
    assert_eq!(report.quarantined, 0, "nothing should be quarantined");
}

#[allow(
    clippy::too_many_arguments,
    reason = "the step, the store, the model and the clients' copies with their changes"
)]
fn apply(
    op: Op,
    ctx: &str,
    clock: &ManualClock,
    store: &Store,
    model: &mut Model,
    slots: &mut Vec<Session>,
    pending: &mut Vec<Pending>,
    created: &mut usize,
) {
    let pick = |slot: u8, slots: &[Session]| -> Option<usize> {
        (!slots.is_empty()).then(|| usize::from(slot) % slots.len())
    };
    match op {
        Op::Advance(by) => {
            clock.advance(Duration::from_millis(u64::from(by)));
            model.now += u64::from(by);
        }
        Op::Create => {
            let s = store.create().expect(ctx);
            let token = s.id().to_string();
            assert!(
                !model.records.contains_key(&token) && !model.dead.contains(&token),
                "{ctx}: token reused"
            );
            model.records.insert(
                token,
                Stored {
                    created: model.now,
                    last_seen: model.now,
                    expires: model.expires_for(model.now, Own::default()),
                    user: None,
                    data: BTreeMap::new(),
                    own: Own::default(),
                },
            );
            if slots.len() < MAX_SLOTS {
                slots.push(s);
                pending.push(Pending::default());
            } else {
                slots[*created % MAX_SLOTS] = s;
                pending[*created % MAX_SLOTS] = Pending::default();
            }
            *created += 1;
        }
        Op::Insert { slot, key, value } => {
            if let Some(i) = pick(slot, slots) {
                let key = KEYS[usize::from(key) % 3];
                slots[i].insert_bytes(key, vec![value]).expect(ctx);
                pending[i].keys.insert(key);
            }
        }
        Op::Remove { slot, key } => {
            if let Some(i) = pick(slot, slots) {
                let key = KEYS[usize::from(key) % 3];
                if slots[i].remove(key) {
                    pending[i].keys.insert(key);
                }
            }
        }
        Op::SetUser { slot, user } => {
            if let Some(i) = pick(slot, slots) {
                slots[i].set_user(user.map(|u| USERS[usize::from(u) % 3]));
                pending[i].user = true;
            }
        }
        Op::Save { slot } => {
            let Some(i) = pick(slot, slots) else { return };
            let token = slots[i].id().to_string();
            let got = store.save(&slots[i]);
            if let Some(stored) = model.live(&token) {
                let (user, data, own) = pending[i].merge(&slots[i], stored);
                match model.commit(&token, user, data, own) {
                    Committed::Live => got.expect(ctx),
                    Committed::Ended => assert!(
                        matches!(got, Err(Error::NotFound)),
                        "{ctx}: save with an ended lifetime gave {got:?}"
                    ),
                }
            } else {
                assert!(
                    matches!(got, Err(Error::NotFound)),
                    "{ctx}: save of a dead session gave {got:?}"
                );
            }
        }
        Op::Load { slot } => {
            let Some(i) = pick(slot, slots) else { return };
            // The comparison itself happens in check_all; here the client refreshes its
            // copy, as a request handler would.
            if let Some(s) = store.load(slots[i].id()).expect(ctx) {
                slots[i] = s;
                pending[i] = Pending::default();
            }
        }
        Op::Touch { slot } => {
            let Some(i) = pick(slot, slots) else { return };
            let token = slots[i].id().to_string();
            let got = store.touch(slots[i].id()).expect(ctx);
            let now = model.now;
            let expected = match model.live(&token).map(|r| (r.created, r.own)) {
                Some((created, own)) => {
                    let target = model.expires_for(created, own);
                    let r = model.records.get_mut(&token).expect("live");
                    if !within_granularity(now, r.expires, target, own) {
                        r.last_seen = now;
                        r.expires = target;
                    }
                    true
                }
                None => false,
            };
            assert_eq!(got, expected, "{ctx}: touch");
        }
        Op::Update { slot, change } => {
            let Some(i) = pick(slot, slots) else { return };
            let token = slots[i].id().to_string();
            let got = store
                .update(slots[i].id(), |s| {
                    if change {
                        let n = counter(s) + 1;
                        s.insert_bytes(COUNTER, n.to_le_bytes().to_vec())
                            .expect("small value");
                    }
                    counter(s)
                })
                .expect(ctx);
            let expected = model.live(&token).cloned().map(|r| {
                let mut data = r.data.clone();
                let n = data
                    .get(COUNTER)
                    .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                    .map_or(0, u64::from_le_bytes)
                    + u64::from(change);
                if change {
                    data.insert(COUNTER.to_owned(), n.to_le_bytes().to_vec());
                }
                assert_eq!(model.commit(&token, r.user, data, r.own), Committed::Live);
                n
            });
            assert_eq!(got, expected, "{ctx}: update");
        }
        Op::Destroy { slot } => {
            let Some(i) = pick(slot, slots) else { return };
            let token = slots[i].id().to_string();
            let got = store.destroy(slots[i].id()).expect(ctx);
            let expected = model.live(&token).is_some();
            model.records.remove(&token);
            model.dead.insert(token);
            assert_eq!(got, expected, "{ctx}: destroy");
        }
        Op::Regenerate { slot } => {
            let Some(i) = pick(slot, slots) else { return };
            let old = slots[i].id().to_string();
            let live = model.live(&old).cloned();
            let merged = live.as_ref().map(|r| pending[i].merge(&slots[i], r));
            let got = store.regenerate(&mut slots[i]);
            let own = merged.as_ref().map_or(Own::default(), |m| m.2);
            match live {
                Some(r) if model.expires_for(r.created, own) <= model.now => {
                    // The lifetime the client set has already ended: the session ends.
                    assert!(
                        matches!(got, Err(Error::NotFound)),
                        "{ctx}: regenerate with an ended lifetime gave {got:?}"
                    );
                    assert_eq!(slots[i].id().to_string(), old, "{ctx}: token changed");
                    model.records.remove(&old);
                    model.dead.insert(old);
                }
                Some(r) => {
                    got.expect(ctx);
                    let new = slots[i].id().to_string();
                    assert_ne!(new, old, "{ctx}: token did not change");
                    model.records.remove(&old);
                    model.dead.insert(old);
                    let (user, data, _) = merged.expect("live");
                    let assigned = user.clone().filter(|u| r.user.as_ref() != Some(u));
                    let record = Stored {
                        created: r.created,
                        last_seen: model.now,
                        expires: model.expires_for(r.created, own),
                        user,
                        data,
                        own,
                    };
                    model.records.insert(new.clone(), record);
                    if let Some(user) = assigned {
                        model.cap(&user, &new);
                    }
                }
                None => {
                    assert!(
                        matches!(got, Err(Error::NotFound)),
                        "{ctx}: regenerate of a dead session gave {got:?}"
                    );
                    assert_eq!(slots[i].id().to_string(), old, "{ctx}: token changed");
                }
            }
        }
        Op::Purge => {
            let got = store.purge_expired().expect(ctx);
            let now = model.now;
            let before = model.records.len();
            model.records.retain(|_, r| r.expires > now);
            assert_eq!(got, before - model.records.len(), "{ctx}: purged");
        }
        Op::SetLifetime { slot, lifetime } => {
            if let Some(i) = pick(slot, slots) {
                let own = LIFETIMES[usize::from(lifetime) % LIFETIMES.len()];
                slots[i].set_lifetime(own.lifetime());
                pending[i].lifetime = true;
            }
        }
        // Handled by `run`, which owns the store.
        Op::Reopen => {}
        Op::SessionsOf { user } => {
            let user = USERS[usize::from(user) % 3];
            let got = store.sessions_of(user).expect(ctx);
            let mut expected: Vec<(String, u64, u64, u64)> = model
                .records
                .iter()
                .filter(|(_, r)| r.expires > model.now && r.user.as_deref() == Some(user))
                .map(|(t, r)| {
                    let id: SessionId = t.parse().expect("token");
                    (id.handle().to_string(), r.created, r.last_seen, r.expires)
                })
                .collect();
            expected.sort();
            let mut got: Vec<(String, u64, u64, u64)> = got
                .iter()
                .map(|i| {
                    (
                        i.handle.to_string(),
                        ms(i.created_at),
                        ms(i.last_seen),
                        ms(i.expires_at),
                    )
                })
                .collect();
            assert!(
                got.windows(2).all(|w| w[0].1 <= w[1].1),
                "{ctx}: sessions_of not oldest first: {got:?}"
            );
            got.sort();
            assert_eq!(got, expected, "{ctx}: sessions_of({user})");
        }
        Op::Len => {
            let live = model.records.values().filter(|r| r.expires > model.now);
            assert_eq!(store.len().expect(ctx), live.count(), "{ctx}: len");
        }
        Op::DestroyUser { user, except } => {
            let user = USERS[usize::from(user) % 3];
            let except = except.and_then(|e| pick(e, slots)).map(|i| slots[i].id());
            let got = store.destroy_user(user, except).expect(ctx);
            let keep = except.map(ToString::to_string);
            let now = model.now;
            let doomed: Vec<String> = model
                .records
                .iter()
                .filter(|(t, r)| {
                    r.expires > now
                        && r.user.as_deref() == Some(user)
                        && Some(t.as_str()) != keep.as_deref()
                })
                .map(|(t, _)| t.clone())
                .collect();
            for t in &doomed {
                model.records.remove(t);
                model.dead.insert(t.clone());
            }
            assert_eq!(got, doomed.len(), "{ctx}: destroy_user({user})");
        }
    }
}

/// Every session the model knows loads exactly as the model says; dead tokens stay dead.
fn check_all(store: &Store, model: &Model, ctx: &str) {
    for (token, r) in &model.records {
        let id: SessionId = token.parse().expect("token");
        let got = store.load(&id).expect(ctx);
        if r.expires <= model.now {
            assert!(got.is_none(), "{ctx}: expired session {token} loaded");
            continue;
        }
        let s = got.unwrap_or_else(|| panic!("{ctx}: live session {token} missing: {r:?}"));
        let seen = Stored {
            created: ms(s.created_at()),
            last_seen: ms(s.last_seen()),
            expires: ms(s.expires_at()),
            user: s.user().map(str::to_owned),
            data: data_of(&s),
            own: Own::of(s.lifetime()),
        };
        assert_eq!(&seen, r, "{ctx}: session {token}");
    }
    for token in &model.dead {
        let id: SessionId = token.parse().expect("token");
        assert!(
            store.load(&id).expect(ctx).is_none(),
            "{ctx}: dead session {token} is back"
        );
    }
}
