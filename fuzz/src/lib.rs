//! Shared by the fuzz targets; the invariants live in `checks.rs`, which the main test suite
//! (tests/properties.rs) also includes, so every fuzz finding replays as a normal test.

pub mod checks;

use std::sync::OnceLock;

use secretmode::config::Config;

/// The built-in config, loaded once per process.
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config::builtin().expect("built-in config"))
}
