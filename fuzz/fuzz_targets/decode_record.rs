//! Arbitrary bytes into the record decoder, as if read from a damaged disk: it must return
//! an error or a record, never panic, abort or allocate past its limit (libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` catch the last two). A record that decodes must
//! re-encode to bytes that decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(encoded) = sessile::__fuzz::decode_record(data) {
        let again = sessile::__fuzz::decode_record(&encoded);
        assert_eq!(
            again.as_deref(),
            Some(encoded.as_slice()),
            "re-encoding does not round-trip"
        );
    }
});
