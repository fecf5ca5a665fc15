//! Crash recovery: a child process (this same test binary, re-run) writes to a store while
//! a second thread flushes in a loop, and is killed with SIGKILL at a random moment; the
//! parent reopens the folder and checks what survived. Like sled's own
//! `tests/test_crash_recovery.rs`, one folder lives through every kill, so each run also
//! recovers from the state the previous recoveries left.
//!
//! The child logs each operation to a side file before it starts (`B`) and after it
//! returned (`A`), with the exact record it expects; the parent rebuilds from that log
//! what must be on disk. Iterations alternate `Durability::EveryWrite` (every returned
//! write must be there) and `Durability::Background` (a session may fall back to any state
//! since the last flushing operation, but a returned destroy or regenerate is final).
//!
//! Checked after every kill:
//! - the store opens, without error or panic;
//! - `verify(false)` is consistent: every record decodes and has its expiry and user
//!   index entries (I1, I2) without any repair;
//! - every known session loads exactly as an acceptable state says, and an expired one
//!   loads as `None`; a destroyed or rotated-away token is absent from the whole store;
//! - no unknown live record exists, except the one an interrupted `create` or
//!   `regenerate` may leave; an interrupted `regenerate` leaves either the old token with
//!   the old record, or only the new record;
//! - `sessions_of` lists every live session of each user.
//!
//! `CRASH_ITERATIONS` (default 20) sets the number of kills, `CRASH_SEED` the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sessile::{Config, Durability, Error, ManualClock, Session, SessionId, Store};

const CHILD_ENV: &str = "SESSILE_CRASH_CHILD";
const IDLE_MS: u64 = 60_000;
const ABSOLUTE_MS: u64 = 600_000;
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];

// ---------------------------------------------------------------------------------------
// Shared between parent and child
// ---------------------------------------------------------------------------------------

/// The record the model expects under a token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    created: u64,
    last_seen: u64,
    expires: u64,
    user: Option<String>,
    data: BTreeMap<String, Vec<u8>>,
}

/// A token's state: a record, or nothing (destroyed, rotated away, or never persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PState {
    Gone,
    Live(State),
}

impl State {
    fn of(s: &Session) -> State {
        State {
            created: ms(s.created_at()),
            last_seen: ms(s.last_seen()),
            expires: ms(s.expires_at()),
            user: s.user().map(str::to_owned),
            data: s
                .keys()
                .map(|k| (k.to_owned(), s.get_bytes(k).expect("listed").to_vec()))
                .collect(),
        }
    }

    fn encode(&self) -> String {
        let mut out = format!(
            "live,{},{},{},{},",
            self.created,
            self.last_seen,
            self.expires,
            self.user.as_deref().unwrap_or("-")
        );
        for (i, (k, v)) in self.data.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            let _ = write!(out, "{k}:");
            for b in v {
                let _ = write!(out, "{b:02x}");
            }
        }
        out
    }
}

impl PState {
    fn encode(&self) -> String {
        match self {
            PState::Gone => "gone".into(),
            PState::Live(s) => s.encode(),
        }
    }

    fn decode(s: &str) -> PState {
        if s == "gone" {
            return PState::Gone;
        }
        let f: Vec<&str> = s.splitn(6, ',').collect();
        assert!(f.len() == 6 && f[0] == "live", "bad state {s:?}");
        let num = |x: &str| x.parse::<u64>().expect("number");
        let data = f[5]
            .split(';')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, hex) = p.split_once(':').expect("k:v");
                let bytes = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect();
                (k.to_owned(), bytes)
            })
            .collect();
        PState::Live(State {
            created: num(f[1]),
            last_seen: num(f[2]),
            expires: num(f[3]),
            user: (f[4] != "-").then(|| f[4].to_owned()),
            data,
        })
    }
}

fn ms(t: SystemTime) -> u64 {
    u64::try_from(
        t.duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_millis(),
    )
    .expect("fits")
}

fn config(path: &Path, clock: &ManualClock, durability: Durability) -> Config {
    Config::new(path)
        .idle_timeout(Duration::from_millis(IDLE_MS))
        .absolute_timeout(Duration::from_millis(ABSOLUTE_MS))
        // Every save and touch writes, so the model needs no granularity rule.
        .touch_granularity(Duration::ZERO)
        .purge_thread(false)
        .durability(durability)
        .clock(clock.clock())
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

// ---------------------------------------------------------------------------------------
// The child: a workload that runs until it is killed
// ---------------------------------------------------------------------------------------

struct Child {
    store: Store,
    clock: ManualClock,
    now: u64,
    log: std::fs::File,
    rng: Rng,
    seq: u64,
    /// token -> (client copy, expected record)
    sessions: BTreeMap<String, (Session, State)>,
}

impl Child {
    fn line(&mut self, line: &str) {
        // One write(2) per line: a SIGKILL cannot lose a write that returned, and the
        // fsync makes the log as durable as the store's own flush.
        self.log
            .write_all(format!("{line}\n").as_bytes())
            .expect("log write");
        self.log.sync_data().expect("log sync");
    }

    fn fail(&mut self, msg: &str) -> ! {
        self.line(&format!("X {msg}"));
        std::process::exit(3);
    }

    fn expires_for(&self, created: u64) -> u64 {
        (self.now + IDLE_MS).min(created + ABSOLUTE_MS)
    }

    fn live(&self, st: &State) -> bool {
        st.expires > self.now
    }

    fn pick(&mut self) -> Option<String> {
        if self.sessions.is_empty() {
            return None;
        }
        let i = self.rng.below(self.sessions.len() as u64) as usize;
        self.sessions.keys().nth(i).cloned()
    }

    fn step(&mut self) {
        self.now += self.rng.below(1_500);
        self.clock.set(UNIX_EPOCH + Duration::from_millis(self.now));
        self.seq += 1;
        let (seq, now) = (self.seq, self.now);
        let roll = self.rng.below(100);
        let create_weight = if self.sessions.len() < 30 { 15 } else { 2 };
        if roll < create_weight || self.sessions.is_empty() {
            let st = State {
                created: now,
                last_seen: now,
                expires: self.expires_for(now),
                user: None,
                data: BTreeMap::new(),
            };
            self.line(&format!("B {seq} {now} create - {}", st.encode()));
            let s = match self.store.create() {
                Ok(s) => s,
                Err(e) => self.fail(&format!("create: {e}")),
            };
            if State::of(&s) != st {
                self.fail(&format!("create gave {:?}, expected {st:?}", State::of(&s)));
            }
            let token = s.id().to_string();
            self.line(&format!("A {seq} create {token} {}", st.encode()));
            self.sessions.insert(token, (s, st));
            return;
        }
        let Some(token) = self.pick() else { return };
        let (mut local, st) = self.sessions.get(&token).cloned().expect("picked");
        let live = self.live(&st);
        let op = match roll {
            r if r < 45 => "save",
            r if r < 60 => "touch",
            r if r < 78 => "update",
            r if r < 86 => "destroy",
            r if r < 96 => "regenerate",
            _ => "purge",
        };
        match op {
            "save" => {
                if !local.contains_key("uid") {
                    local
                        .insert_bytes("uid", seq.to_be_bytes().to_vec())
                        .expect("small");
                }
                let len = self.rng.below(48) as usize;
                let v: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
                local.insert_bytes("v", v).expect("small");
                // The copy's user is saved as it is (a save applies what the copy changed:
                // its keys, and its user once set).
                let keep = local.user().map(str::to_owned);
                local.set_user(keep.as_deref());
                if self.rng.below(3) == 0 {
                    let u = self.rng.below(5) as usize;
                    local.set_user(USERS.get(u).copied());
                }
                let post = if live {
                    let mut p = st.clone();
                    p.data = merged(&st.data, &local);
                    p.user = local.user().map(str::to_owned);
                    p.last_seen = now;
                    p.expires = self.expires_for(st.created);
                    p
                } else {
                    st.clone()
                };
                self.line(&format!("B {seq} {now} save {token} {}", post.encode()));
                match (self.store.save(&local), live) {
                    (Ok(()), true) | (Err(Error::NotFound), false) => {}
                    (got, _) => self.fail(&format!("save (live {live}) gave {got:?}")),
                }
                self.line(&format!("A {seq} save {token} {}", post.encode()));
                self.sessions.insert(token, (local, post));
            }
            "touch" => {
                let mut post = st.clone();
                if live {
                    post.last_seen = now;
                    post.expires = self.expires_for(st.created);
                }
                self.line(&format!("B {seq} {now} touch {token} {}", post.encode()));
                match self.store.touch(local.id()) {
                    Ok(t) if t == live => {}
                    got => self.fail(&format!("touch (live {live}) gave {got:?}")),
                }
                self.line(&format!("A {seq} touch {token} {}", post.encode()));
                self.sessions.insert(token, (local, post));
            }
            "update" => {
                let mut post = st.clone();
                let mut n = 0;
                if live {
                    n = post
                        .data
                        .get("n")
                        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                        .map_or(0, u64::from_le_bytes)
                        + 1;
                    post.data.insert("n".into(), n.to_le_bytes().to_vec());
                    post.last_seen = now;
                    post.expires = self.expires_for(st.created);
                }
                self.line(&format!("B {seq} {now} update {token} {}", post.encode()));
                let got = self.store.update(local.id(), |s| {
                    let n = s
                        .get_bytes("n")
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map_or(0, u64::from_le_bytes)
                        + 1;
                    s.insert_bytes("n", n.to_le_bytes().to_vec()).map(|()| n)
                });
                match got {
                    Ok(Some(Ok(m))) if live && m == n => {}
                    Ok(None) if !live => {}
                    got => self.fail(&format!("update (live {live}, n {n}) gave {got:?}")),
                }
                self.line(&format!("A {seq} update {token} {}", post.encode()));
                self.sessions.insert(token, (local, post));
            }
            "destroy" => {
                self.line(&format!("B {seq} {now} destroy {token} gone"));
                match self.store.destroy(local.id()) {
                    Ok(d) if d == live => {}
                    got => self.fail(&format!("destroy (live {live}) gave {got:?}")),
                }
                self.line(&format!("A {seq} destroy {token} gone"));
                self.sessions.remove(&token);
            }
            "regenerate" => {
                let keep = local.user().map(str::to_owned);
                local.set_user(keep.as_deref());
                if self.rng.below(2) == 0 {
                    local.set_user(USERS.get(self.rng.below(4) as usize).copied());
                }
                let mut post = st.clone();
                post.data = merged(&st.data, &local);
                post.user = local.user().map(str::to_owned);
                post.last_seen = now;
                post.expires = self.expires_for(st.created);
                self.line(&format!(
                    "B {seq} {now} regenerate {token} {}",
                    post.encode()
                ));
                let got = self.store.regenerate(&mut local);
                match (got, live) {
                    (Ok(()), true) => {
                        let new = local.id().to_string();
                        // The copy's own values are not refreshed (a stale one misses the
                        // count `update` stored): the rest must match.
                        let seen = State {
                            data: post.data.clone(),
                            ..State::of(&local)
                        };
                        if seen != post {
                            self.fail(&format!("regenerate left {:?}", State::of(&local)));
                        }
                        self.line(&format!(
                            "A {seq} regenerate {token} gone {new} {}",
                            post.encode()
                        ));
                        self.sessions.remove(&token);
                        self.sessions.insert(new, (local, post));
                    }
                    (Err(Error::NotFound), false) => {
                        self.line(&format!("A {seq} regenerate {token} {}", st.encode()));
                    }
                    (got, _) => self.fail(&format!("regenerate (live {live}) gave {got:?}")),
                }
            }
            _ => {
                self.line(&format!("B {seq} {now} purge - -"));
                let expired = self
                    .sessions
                    .values()
                    .filter(|(_, s)| !self.live(s))
                    .count();
                match self.store.purge_expired() {
                    // Records from earlier runs whose token the child never knew expire too.
                    Ok(n) if n >= expired => {}
                    got => self.fail(&format!("purge ({expired} expired) gave {got:?}")),
                }
                self.line(&format!("A {seq} purge - -"));
                let now = self.now;
                self.sessions.retain(|_, (_, s)| s.expires > now);
            }
        }
    }
}

/// The values after a save of `local` onto `stored`: the copy sets only `uid` and `v`;
/// `n` is `update`'s, and a stale copy leaves it as stored.
fn merged(
    stored: &BTreeMap<String, Vec<u8>>,
    local: &sessile::Session,
) -> BTreeMap<String, Vec<u8>> {
    let mut data = stored.clone();
    for key in ["uid", "v"] {
        if let Some(v) = local.get_bytes(key) {
            data.insert(key.to_owned(), v.to_vec());
        }
    }
    data
}

fn child_main(dir: &Path) -> ! {
    let state = std::fs::read_to_string(dir.join("state")).expect("state file");
    let mut lines = state.lines();
    let head: Vec<&str> = lines.next().expect("header").split(' ').collect();
    let now: u64 = head[0].parse().expect("now");
    let seed: u64 = head[1].parse().expect("seed");
    let durability = if head[2] == "every" {
        Durability::EveryWrite
    } else {
        Durability::Background
    };
    let log_name = head[3];
    let clock = ManualClock::starting_at(UNIX_EPOCH + Duration::from_millis(now));
    let store = config(&dir.join("store"), &clock, durability)
        .open()
        .expect("child open");
    let mut sessions = BTreeMap::new();
    for line in lines {
        let (token, st) = line.split_once(' ').expect("token state");
        let id: SessionId = token.parse().expect("token");
        let PState::Live(st) = PState::decode(st) else {
            continue;
        };
        let s = store
            .load(&id)
            .expect("load")
            .expect("the parent checked it is live");
        sessions.insert(token.to_owned(), (s, st));
    }
    let flusher = store.clone();
    std::thread::spawn(move || {
        loop {
            flusher.flush().expect("flush");
        }
    });
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log_name))
        .expect("log");
    let mut child = Child {
        store,
        clock,
        now,
        log,
        rng: Rng(seed | 1),
        seq: 0,
        sessions,
    };
    child.line("R");
    loop {
        child.step();
    }
}

// ---------------------------------------------------------------------------------------
// The parent: kill, reopen, check
// ---------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Counts {
    kills: u64,
    acked_ops: u64,
    in_flight: BTreeMap<String, u64>,
    sessions_checked: u64,
    live_checked: u64,
    absent_or_expired_checked: u64,
    consistent_without_repair: u64,
    regen_interrupted_old_kept: u64,
    regen_interrupted_moved: u64,
    create_interrupted_orphan: u64,
    background_rollbacks: u64,
}

struct Parent {
    dir: PathBuf,
    rng: Rng,
    /// token -> states acceptable after a crash (the last is the newest).
    tokens: BTreeMap<String, Vec<PState>>,
    /// Handles of records nobody has the token of (from interrupted creates/regenerates).
    orphans: BTreeSet<String>,
    /// Handles of destroyed or rotated-away sessions: never again in the store.
    gone: BTreeSet<String>,
    now: u64,
    counts: Counts,
}

fn handle_of(token: &str) -> String {
    let id: SessionId = token.parse().expect("token");
    id.handle().to_string()
}

impl Parent {
    fn write_state(&self, seed: u64, every: bool, log: &str) {
        let mut out = format!(
            "{} {seed} {} {log}\n",
            self.now,
            if every { "every" } else { "background" }
        );
        for (token, states) in &self.tokens {
            let last = states.last().expect("non-empty");
            let _ = writeln!(out, "{token} {}", last.encode());
        }
        std::fs::write(self.dir.join("state"), out).expect("state file");
    }

    fn iteration(&mut self, i: u64) {
        let every = (i & 1) == 0;
        let durability = if every {
            Durability::EveryWrite
        } else {
            Durability::Background
        };
        let seed = self.rng.next_u64();
        let log_name = format!("log-{i}");
        self.write_state(seed, every, &log_name);
        let log_path = self.dir.join(&log_name);

        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args([
                "crash_recovery",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.starts_with("R\n") {
                break;
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("iteration {i}: child exited before starting ({status}): {err}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "iteration {i}: child never started"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(self.rng.below(250)));
        let exited_early = child.try_wait().expect("try_wait");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        self.counts.kills += 1;

        let log = std::fs::read_to_string(&log_path).expect("log");
        if let Some(x) = log.lines().find(|l| l.starts_with("X ")) {
            panic!("iteration {i}: the child's model check failed: {x}");
        }
        assert!(
            exited_early.is_none(),
            "iteration {i}: child exited by itself: {exited_early:?}"
        );
        self.check(i, &log, durability);
    }

    fn check(&mut self, i: u64, log: &str, durability: Durability) {
        let every = durability == Durability::EveryWrite;
        // Replay the log.
        let mut pending: Option<(String, u64, String, String)> = None; // op, time, token, post
        let mut now = self.now;
        // A SIGKILL can cut a line that spans pages in the middle of its write(2); a last
        // line without its newline was never written, so its operation is still in flight.
        let complete = log.rfind('\n').map_or("", |end| &log[..end]);
        for line in complete.lines().skip(1) {
            let f: Vec<&str> = line.split(' ').collect();
            match f[0] {
                "B" => {
                    now = f[2].parse().expect("time");
                    pending = Some((f[3].into(), now, f[4].into(), f[5].into()));
                }
                "A" => {
                    let (op, _, _, _) = pending.take().expect("A after B");
                    self.counts.acked_ops += 1;
                    // destroy always flushes; regenerate only when it rotated (7 fields).
                    let barrier = op == "destroy" || (op == "regenerate" && f.len() == 7);
                    if barrier && !every {
                        // That operation flushed: everything before it is on disk.
                        for states in self.tokens.values_mut() {
                            let last = states.pop().expect("non-empty");
                            *states = vec![last];
                        }
                    }
                    for pair in f[3..].chunks(2) {
                        if pair[0] == "-" {
                            continue;
                        }
                        let st = PState::decode(pair[1]);
                        let states = self.tokens.entry(pair[0].to_owned()).or_insert_with(|| {
                            if every || barrier {
                                Vec::new()
                            } else {
                                vec![PState::Gone] // a create that may be lost
                            }
                        });
                        if every || barrier {
                            *states = vec![st];
                        } else {
                            states.push(st);
                        }
                    }
                }
                _ => panic!("iteration {i}: bad log line {line:?}"),
            }
        }
        self.now = now;
        let in_flight = pending;
        if let Some((op, _, token, post)) = &in_flight {
            *self.counts.in_flight.entry(op.clone()).or_default() += 1;
            if token != "-" {
                let post = if op == "regenerate" {
                    PState::Gone
                } else {
                    PState::decode(post)
                };
                self.tokens.get_mut(token).expect("known token").push(post);
            }
        }

        // Reopen at the time of the last operation.
        let clock = ManualClock::starting_at(UNIX_EPOCH + Duration::from_millis(self.now));
        let path = self.dir.join("store");
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            config(&path, &clock, durability).open()
        }));
        let store = match opened {
            Ok(Ok(store)) => store,
            Ok(Err(e)) => panic!("iteration {i}: reopen failed: {e}"),
            Err(_) => panic!("iteration {i}: reopen panicked"),
        };
        let report = store.verify(false).expect("verify");
        assert!(
            report.is_consistent() && report.quarantined == 0,
            "iteration {i}: invariants broken after a crash: {report:?}"
        );
        self.counts.consistent_without_repair += 1;

        // Every known token loads as one of its acceptable states.
        let mut resolved = BTreeMap::new();
        for (token, states) in &self.tokens {
            let id: SessionId = token.parse().expect("token");
            let got = store.load(&id).expect("load").map(|s| State::of(&s));
            self.counts.sessions_checked += 1;
            match &got {
                Some(s) => {
                    assert!(
                        s.expires > self.now,
                        "iteration {i}: expired session loaded"
                    );
                    assert!(
                        states.contains(&PState::Live(s.clone())),
                        "iteration {i}: {token} loaded as {s:?}, acceptable: {states:?}"
                    );
                    if states.last() != Some(&PState::Live(s.clone())) && !every {
                        self.counts.background_rollbacks += 1;
                    }
                    self.counts.live_checked += 1;
                    resolved.insert(token.clone(), vec![PState::Live(s.clone())]);
                }
                None => {
                    let may_be_absent = states.iter().any(|p| match p {
                        PState::Gone => true,
                        PState::Live(s) => s.expires <= self.now,
                    });
                    assert!(
                        may_be_absent,
                        "iteration {i}: {token} is missing, acceptable: {states:?}"
                    );
                    if states.iter().all(|p| *p == PState::Gone) {
                        self.gone.insert(handle_of(token));
                    } else {
                        self.counts.absent_or_expired_checked += 1;
                    }
                }
            }
        }

        // The whole store: no destroyed session anywhere, no unexplained live record.
        let known: BTreeSet<String> = self.tokens.keys().map(|t| handle_of(t)).collect();
        let mut new_orphans = Vec::new();
        for dump in store.dump() {
            let dump = dump.expect("dump");
            let handle = dump.handle().expect("handle").to_string();
            assert!(
                !self.gone.contains(&handle),
                "iteration {i}: destroyed session {handle} is back: {dump:?}"
            );
            if dump.is_live_at(self.now)
                && !known.contains(&handle)
                && !self.orphans.contains(&handle)
            {
                new_orphans.push(dump);
            }
        }
        match in_flight
            .as_ref()
            .map(|(op, t, tok, post)| (op.as_str(), *t, tok, post))
        {
            Some(("create", t, _, _)) => {
                assert!(new_orphans.len() <= 1, "iteration {i}: {new_orphans:?}");
                if let Some(o) = new_orphans.first() {
                    assert!(
                        o.created_at == t && o.user.is_none() && o.values.is_empty(),
                        "iteration {i}: odd record after an interrupted create: {o:?}"
                    );
                    self.counts.create_interrupted_orphan += 1;
                }
            }
            Some(("regenerate", _, token, post)) => {
                let PState::Live(post) = PState::decode(post) else {
                    unreachable!("regenerate logs a record")
                };
                let old_there = resolved.contains_key(token.as_str());
                if old_there {
                    assert!(
                        new_orphans.is_empty(),
                        "iteration {i}: old and new token both exist: {new_orphans:?}"
                    );
                    self.counts.regen_interrupted_old_kept += 1;
                } else {
                    assert!(new_orphans.len() <= 1, "iteration {i}: {new_orphans:?}");
                    let pre_live = every
                        && self.tokens[token.as_str()]
                            .iter()
                            .any(|p| matches!(p, PState::Live(s) if s.expires > self.now));
                    if pre_live {
                        assert_eq!(
                            new_orphans.len(),
                            1,
                            "iteration {i}: interrupted regenerate lost the session"
                        );
                    }
                    if let Some(o) = new_orphans.first() {
                        let got = State {
                            created: o.created_at,
                            last_seen: o.last_seen,
                            expires: o.expires_at,
                            user: o.user.clone(),
                            data: o.values.clone(),
                        };
                        assert_eq!(got, post, "iteration {i}: rotated record differs");
                        self.counts.regen_interrupted_moved += 1;
                    }
                }
            }
            _ => assert!(
                new_orphans.is_empty(),
                "iteration {i}: unexplained live records: {new_orphans:?}"
            ),
        }
        for o in new_orphans {
            self.orphans.insert(o.handle().expect("handle").to_string());
        }

        // I2 through the API: every live session is listed under its user.
        for user in USERS {
            let listed: BTreeSet<String> = store
                .sessions_of(user)
                .expect("sessions_of")
                .iter()
                .map(|s| s.handle.to_string())
                .collect();
            for (token, states) in &resolved {
                let Some(PState::Live(s)) = states.last() else {
                    continue;
                };
                assert!(
                    s.user.as_deref() != Some(user) || listed.contains(&handle_of(token)),
                    "iteration {i}: {token} missing from sessions_of({user})"
                );
            }
        }
        self.tokens = resolved;
        drop(store);
    }
}

#[test]
fn crash_recovery() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child_main(Path::new(&dir));
    }
    let iterations: u64 = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| ms(SystemTime::now()));
    eprintln!("crash test: {iterations} iterations, CRASH_SEED={seed}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut parent = Parent {
        dir: tmp.path().to_path_buf(),
        rng: Rng(seed | 1),
        tokens: BTreeMap::new(),
        orphans: BTreeSet::new(),
        gone: BTreeSet::new(),
        now: 1_700_000_000_000,
        counts: Counts::default(),
    };
    for i in 0..iterations {
        parent.iteration(i);
    }
    // A last open with repair must find nothing to repair.
    let clock = ManualClock::starting_at(UNIX_EPOCH + Duration::from_millis(parent.now));
    let store = config(&tmp.path().join("store"), &clock, Durability::EveryWrite)
        .open()
        .expect("final open");
    let report = store.verify(true).expect("verify");
    assert!(report.is_consistent(), "{report:?}");
    eprintln!("crash test counts: {:#?}", parent.counts);
    eprintln!("final store: {report:?}");
    assert_eq!(parent.counts.kills, iterations);
    assert!(parent.counts.acked_ops > 0, "the child never got to work");
}
