//! AdmissionReview bytes as the API server would send them: parsing, decision, mutation,
//! patch, answer. Invariants in `checks::check_review`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    secretmode_fuzz::checks::check_review(data, secretmode_fuzz::config());
});
