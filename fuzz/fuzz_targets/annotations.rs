//! Pod annotations (one `key=value` per line): parsing, then the whole decision on a realistic
//! pod carrying them. Invariants in `checks::check_annotations`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    secretmode_fuzz::checks::check_annotations(data, secretmode_fuzz::config());
});
