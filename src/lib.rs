//! secretmode: a Kubernetes mutating admission webhook that lets each workload choose, with
//! one annotation, how its secrets reach its pods (`eso`, `csi`, `init`, `sidecar`) and so
//! which failure mode it lives with when the secret provider is down.
//!
//! Code map (the README's "Code map" says the same; `tests/layout.rs` keeps the arrows
//! pointing one way, with no cycle):
//!
//! - [`vocabulary`]: reserved names, well-known paths, the modes, validators, durations,
//!   quantities, times. Imports nothing else of the crate.
//! - [`json`]: the borrowed JSON tree the decision reads a pod as, and JSON writing helpers.
//!   Imports nothing else of the crate.
//! - [`render`]: rendered files: the template language and the bundle formats (dotenv, JSON,
//!   YAML, properties). Pure; imports nothing else of the crate.
//! - [`timing`]: one timing model per mode (outage, staleness, rotation latency), shared by
//!   `audit` and the README failure table. Imports only the vocabulary.
//! - [`providers`]: one file per provider (its config section, what the webhook derives from
//!   it, the agent's client) and their registration.
//! - [`config`]: the webhook's configuration file and its default.
//! - [`logging`]: log set-up, the background log writer, safe log fields.
//! - [`agent`]: the injected agent, and [`agent::spec`], its contract with the webhook.
//! - [`decide`]: the pure decision: annotations → plan → policy → injection (one file per
//!   mode in [`decide::inject`]) → add-only patch ops.
//! - [`webhook`]: the HTTP layer: the AdmissionReview wire format, the pod view, routes,
//!   listener, TLS, metrics, `serve`.
//! - [`commands`]: `mutate`, `audit`, `certs`.

pub mod agent;
pub mod commands;
pub mod config;
pub mod decide;
pub mod json;
pub mod logging;
pub mod providers;
pub mod render;
pub mod timing;
pub mod vocabulary;
pub mod webhook;
