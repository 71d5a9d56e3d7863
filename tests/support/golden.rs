//! The one golden-file helper: compares output with a checked-in file, and rewrites the file
//! when `UPDATE_GOLDEN` is set, except on CI (`CI=true`), where a regenerated golden file
//! would make the comparison pass by construction.

use std::path::Path;

/// Whether `UPDATE_GOLDEN` asks for the golden files to be rewritten; refused on CI.
pub fn updating() -> bool {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty());
    assert!(
        !(update && std::env::var("CI").is_ok_and(|v| v == "true")),
        "UPDATE_GOLDEN is refused on CI (CI=true): regenerate golden files locally and commit them"
    );
    update
}

/// Asserts `actual` equals the file at `path`; with `UPDATE_GOLDEN=1` (not on CI) writes it.
pub fn check(path: &Path, actual: &str) {
    if updating() {
        std::fs::write(path, actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1 to create it", path.display()));
    assert!(want == actual, "{} differs (UPDATE_GOLDEN=1 regenerates):\n{actual}", path.display());
}
