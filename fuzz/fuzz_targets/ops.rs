//! Arbitrary sequences of store operations under a manual clock, applied to a real store
//! and to an in-memory model and compared after every step. The model and the decoding of
//! bytes into operations are shared with `tests/model.rs` (the proptest version).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support_reliability/model.rs"]
mod model;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // Long inputs only slow the fuzzer down; the interesting bugs need a few dozen steps.
    let ops = model::Op::decode(&rest[..rest.len().min(600)]);
    let dir = tempfile::tempdir().expect("tempdir");
    model::run(&ops, first & 1 == 1, dir.path());
});
