//! secretmode: a Kubernetes mutating admission webhook that lets each workload choose, with
//! one annotation, how its secrets reach its pods (`eso`, `csi`, `init`, `sidecar`) and so
//! which failure mode it lives with when the secret provider is down.
//!
//! Layout: [`annotations`] parses, [`policy`] judges, [`inject`] reads raw pod JSON and emits
//! add-only [`patch`] ops, [`admit`] is the one place that decides, [`admission`] speaks the wire
//! format, [`server`] serves it over HTTPS. The same binary is the injected [`agent`].

pub mod admission;
pub mod admit;
pub mod agent;
pub mod agent_spec;
pub mod annotations;
pub mod audit;
pub mod certs;
pub mod config;
pub mod duration;
pub mod inject;
pub mod json;
pub mod json_ref;
pub mod log_format;
pub mod log_writer;
pub mod modes;
pub mod mutate_cmd;
pub mod patch;
pub mod pod_view;
pub mod policy;
pub mod quantity;
pub mod server;
pub mod telemetry;
