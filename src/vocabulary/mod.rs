//! The words every part of secretmode shares: the names it reserves in a pod, the paths and
//! environment the webhook and the agent agree on, the four modes, and the validators and
//! value syntaxes (Kubernetes names, mount paths, Go durations, quantities, times).
//!
//! It imports nothing else of the crate (`tests/layout.rs` checks), so any module may use it
//! without creating a cycle; a constant two modules must agree on belongs here.

pub mod duration;
pub mod exposition;
pub mod mode;
pub mod names;
pub mod on_change;
pub mod paths;
pub mod quantity;
pub mod time;
