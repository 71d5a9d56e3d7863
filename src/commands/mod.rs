//! The offline subcommands, each owning its clap arguments and its `run`: [`mutate`] (the
//! webhook's decision on files), [`audit`] (which failure mode every workload chose, against
//! policy), [`certs`] (the webhook's serving certificates). `serve` is the [`crate::webhook`]
//! and `agent` the [`crate::agent`]; `main.rs` only wires them.

pub mod audit;
pub mod certs;
pub mod mutate;
