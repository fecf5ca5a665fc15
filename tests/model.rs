//! Model-based test: random sequences of store operations under a manual clock (advance
//! time, create, insert and save, load, touch, update, destroy, regenerate, purge, reopen,
//! user queries), each applied to a real store and to a plain in-memory model, with every
//! session compared after every step. The fuzz target `fuzz/fuzz_targets/ops.rs` runs
//! the same model (see `tests/support_reliability/model.rs`) on libFuzzer's inputs.

#[path = "backend/mod.rs"]
mod backend;
mod support_reliability;

use proptest::prelude::*;
use support_reliability::model::{self, Op};

fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Each case opens a sled store; shrinking a failure is still worth it.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_the_model(
        bytes in proptest::collection::vec(any::<u8>(), 0..360),
        cache in any::<bool>(),
    ) {
        let ops = Op::decode(&bytes);
        let dir = tempfile::tempdir().expect("tempdir");
        model::run_on(&ops, cache, dir.path(), &|p| backend::config_at(p));
    }
}

/// A fixed scenario that walks the boundaries the random cases may miss: expiry exactly
/// at the idle timeout, the absolute cap, touches inside and outside the granularity,
/// saves of destroyed sessions, rotation, purge and reopen.
#[test]
fn boundary_walk_matches_the_model() {
    use Op::*;
    let ops = [
        Create,
        Insert {
            slot: 0,
            key: 0,
            value: 1,
        },
        SetUser {
            slot: 0,
            user: Some(0),
        },
        Save { slot: 0 },
        Create,
        Advance(499),
        Touch { slot: 0 },
        Advance(1),
        Touch { slot: 1 },
        Save { slot: 0 },
        Update {
            slot: 0,
            change: true,
        },
        Update {
            slot: 0,
            change: false,
        },
        SessionsOf { user: 0 },
        Regenerate { slot: 0 },
        Reopen,
        Advance(9_999),
        Len,
        Touch { slot: 0 },
        Advance(10_000),
        Save { slot: 1 },
        Touch { slot: 1 },
        Regenerate { slot: 1 },
        Len,
        Purge,
        Create,
        Destroy { slot: 2 },
        Save { slot: 2 },
        Create,
        SetUser {
            slot: 3,
            user: Some(1),
        },
        Save { slot: 3 },
        Create,
        SetUser {
            slot: 4,
            user: Some(1),
        },
        Save { slot: 4 },
        DestroyUser {
            user: 1,
            except: Some(3),
        },
        SessionsOf { user: 1 },
        Advance(9_000),
        Touch { slot: 3 },
        Advance(9_000),
        Touch { slot: 3 },
        Advance(9_000),
        Touch { slot: 3 },
        Advance(9_000),
        Touch { slot: 3 },
        Advance(9_000),
        Touch { slot: 3 },
        Advance(9_000),
        Touch { slot: 3 },
        Advance(9_000),
        Touch { slot: 3 },
        Reopen,
        Purge,
        Len,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    model::run_on(&ops, true, dir.path(), &|p| backend::config_at(p));
    let dir = tempfile::tempdir().expect("tempdir");
    model::run_on(&ops, false, dir.path(), &|p| backend::config_at(p));
}

/// The committed `ops` fuzz seeds, including inputs that once found bugs, replay through
/// the same model on every `cargo test`.
#[test]
fn ops_fuzz_corpus_replays_through_the_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ops");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        // The same framing as fuzz/fuzz_targets/ops.rs.
        let Some((&first, rest)) = data.split_first() else {
            continue;
        };
        let ops = Op::decode(&rest[..rest.len().min(600)]);
        let tmp = tempfile::tempdir().expect("tempdir");
        model::run_on(&ops, first & 1 == 1, tmp.path(), &|p| backend::config_at(p));
        n += 1;
    }
    assert!(n >= 5, "the ops seed corpus is missing");
}

/// Changed saves and touches close to the absolute end, where the touch step shrinks to
/// 1/20 of the lifetime left (and to nothing in the last 20 ms): the store keeps or moves
/// the expiry exactly as the model does.
#[test]
fn saves_near_the_absolute_end_match_the_model() {
    use Op::*;
    let mut ops = vec![Create];
    for (i, wait) in [
        0, 9_000, 9_000, 9_000, 9_000, 9_000, 4_600, 5_400, 4_980, 15,
    ]
    .into_iter()
    .enumerate()
    {
        ops.push(Advance(wait));
        ops.push(Insert {
            slot: 0,
            key: 0,
            value: i as u8,
        });
        ops.push(Save { slot: 0 });
        ops.push(Touch { slot: 0 });
    }
    for cache in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        model::run_on(&ops, cache, dir.path(), &|p| backend::config_at(p));
    }
}

/// Lifetimes through the model: a remembered session outlives the store's timeouts, a
/// short one dies early, and one switched to the store's lifetime after its absolute
/// timeout has passed ends at its next save (and a rotation to it ends it too).
#[test]
fn lifetimes_match_the_model() {
    use Op::*;
    let ops = [
        Create,
        SetLifetime {
            slot: 0,
            lifetime: 2,
        },
        Save { slot: 0 },
        Create,
        SetLifetime {
            slot: 1,
            lifetime: 1,
        },
        Save { slot: 1 },
        Advance(2_000),
        Touch { slot: 1 },
        Advance(9_000),
        Touch { slot: 0 },
        Advance(9_000),
        Touch { slot: 0 },
        Advance(9_000),
        Touch { slot: 0 },
        Advance(9_000),
        Touch { slot: 0 },
        Advance(9_000),
        Touch { slot: 0 },
        Advance(9_000),
        Touch { slot: 0 },
        Advance(9_000),
        Load { slot: 0 },
        Regenerate { slot: 0 },
        SetLifetime {
            slot: 0,
            lifetime: 0,
        },
        Save { slot: 0 },
        Create,
        Advance(70_000),
        SetLifetime {
            slot: 2,
            lifetime: 0,
        },
        Regenerate { slot: 2 },
        Purge,
        Len,
    ];
    for cache in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        model::run_on(&ops, cache, dir.path(), &|p| backend::config_at(p));
    }
    // A remembered session, kept alive past the store's absolute timeout, rotated after
    // going back to the store's lifetime: the rotation ends it.
    let mut ended = vec![
        Create,
        SetLifetime {
            slot: 0,
            lifetime: 2,
        },
        Save { slot: 0 },
    ];
    for _ in 0..7 {
        ended.extend([Advance(9_000), Touch { slot: 0 }]);
    }
    ended.extend([
        SetLifetime {
            slot: 0,
            lifetime: 0,
        },
        Regenerate { slot: 0 },
        Load { slot: 0 },
        Purge,
        Len,
    ]);
    for cache in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        model::run_on(&ended, cache, dir.path(), &|p| backend::config_at(p));
    }
}
