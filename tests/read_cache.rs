//! The read path's caches never serve a session older than the last write that returned:
//! not the shared cache, not a thread's own copies of hot records, not the token memo.
//! A writer thread changes or ends sessions that reader threads keep loading (so they hold
//! copies of them); after each write returns, every reader must see it on its next load.
//! `SESSILE_RACE_ROUNDS` overrides the round count.

use std::sync::Barrier;
use std::sync::mpsc;
use std::time::Duration;

use sessile::{Config, ManualClock, SessionId, Store};

const READERS: usize = 2;
const TIMEOUT: Duration = Duration::from_secs(10);

fn rounds(default: usize) -> usize {
    std::env::var("SESSILE_RACE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

fn open(dir: &std::path::Path) -> Store {
    Config::new(dir.join("store"))
        .purge_thread(false)
        .clock(ManualClock::new().clock())
        .open()
        .expect("open")
}

/// What the writer did in one round, for the readers to check.
#[derive(Clone, Debug)]
enum Done {
    Saved(SessionId, u64),
    Destroyed(SessionId),
    Regenerated {
        old: SessionId,
        new: SessionId,
        n: u64,
    },
}

/// What the writer asks of the readers.
#[derive(Clone)]
enum Ask {
    /// Load these sessions (so each reader holds copies of them), then answer.
    Warm(Vec<SessionId>),
    /// Check that this write shows, then answer.
    Check(Done),
}

fn check(store: &Store, done: &Done) -> Result<(), String> {
    let n_of = |id: &SessionId| {
        store
            .load(id)
            .expect("load")
            .map(|s| s.get::<u64>("n").expect("n"))
    };
    match done {
        Done::Saved(id, n) => match n_of(id) {
            Some(Some(v)) if v == *n => Ok(()),
            other => Err(format!("after saving {n}: {other:?}")),
        },
        Done::Destroyed(id) => match n_of(id) {
            None => Ok(()),
            Some(_) => Err("a destroyed session still loads".to_owned()),
        },
        Done::Regenerated { old, new, n } => match (n_of(old), n_of(new)) {
            (None, Some(Some(v))) if v == *n => Ok(()),
            other => Err(format!("after regenerate (old, new): {other:?}")),
        },
    }
}

#[test]
fn every_reader_sees_each_write_once_it_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let n = rounds(2000);
    let fresh = |i: u64| {
        let mut s = store.create().expect("create");
        s.insert("n", &i).expect("insert");
        store.save(&s).expect("save");
        s.id().clone()
    };
    // Hot sessions the readers load before every write.
    let mut hot: Vec<SessionId> = (0..8u64).map(fresh).collect();
    let start = Barrier::new(READERS + 1);
    let (ask_txs, ask_rxs): (Vec<_>, Vec<_>) = (0..READERS).map(|_| mpsc::channel::<Ask>()).unzip();
    let (ack_tx, ack_rx) = mpsc::channel::<Result<(), String>>();
    std::thread::scope(|s| {
        for rx in ask_rxs {
            let (store, start, ack) = (&store, &start, ack_tx.clone());
            s.spawn(move || {
                start.wait();
                while let Ok(ask) = rx.recv_timeout(TIMEOUT) {
                    let answer = match ask {
                        Ask::Warm(ids) => {
                            for id in &ids {
                                let _ = store.load(id).expect("load");
                            }
                            Ok(())
                        }
                        Ask::Check(done) => check(store, &done),
                    };
                    if ack.send(answer).is_err() {
                        return;
                    }
                }
            });
        }
        start.wait();
        let ask_all = |ask: Ask| {
            for tx in &ask_txs {
                tx.send(ask.clone()).expect("reader alive");
            }
            (0..READERS)
                .map(|_| {
                    ack_rx
                        .recv_timeout(TIMEOUT)
                        .expect("reader answered in time")
                })
                .collect::<Result<Vec<()>, String>>()
        };
        for round in 0..n as u64 {
            ask_all(Ask::Warm(hot.clone())).expect("warm");
            let slot = (round % 8) as usize;
            let id = hot[slot].clone();
            let done = match round % 10 {
                // Now and then end a hot session, or move it to a new token.
                9 => {
                    assert!(store.destroy(&id).expect("destroy"));
                    hot[slot] = fresh(round);
                    Done::Destroyed(id)
                }
                7 => {
                    let mut s = store.load(&id).expect("load").expect("live");
                    s.insert("n", &round).expect("insert");
                    store.regenerate(&mut s).expect("regenerate");
                    hot[slot] = s.id().clone();
                    Done::Regenerated {
                        old: id,
                        new: s.id().clone(),
                        n: round,
                    }
                }
                _ => {
                    let mut s = store.load(&id).expect("load").expect("live");
                    s.insert("n", &round).expect("insert");
                    store.save(&s).expect("save");
                    Done::Saved(id, round)
                }
            };
            if let Err(e) = ask_all(Ask::Check(done)) {
                panic!("round {round}: a reader saw an older session: {e}");
            }
        }
        drop(ask_txs);
    });
}
