//! The injected agent container, written from typed structs.
//!
//! This object is entirely ours (nothing of the pod is round-tripped through it), so a typed
//! struct is safe here, and it serialises straight into the patch without building a JSON
//! tree of ~60 nodes per admission. [`AgentContainer::to_value`] gives the tree only when an
//! existing `secretmode-` container must be compared with it.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use crate::agent_spec;
use crate::config::{AgentConfig, Resources};

/// `readOnly` is left out when false, as the API server would.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount<'a> {
    pub name: &'a str,
    pub mount_path: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar<'a> {
    pub name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvSource<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvSource<'a> {
    pub secret_key_ref: KeyRef<'a>,
}

#[derive(Serialize)]
pub struct KeyRef<'a> {
    pub name: &'a str,
    pub key: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentContainer<'a> {
    pub name: &'static str,
    image: &'a str,
    image_pull_policy: &'a str,
    command: [&'a str; 1],
    args: &'static [&'static str],
    env: Vec<EnvVar<'a>>,
    volume_mounts: Vec<Mount<'a>>,
    security_context: SecurityContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a Resources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ports: Option<[Port; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    startup_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    liveness_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lifecycle: Option<Lifecycle<'a>>,
}

/// Pod Security Standards *restricted*, always.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecurityContext {
    run_as_non_root: bool,
    run_as_user: i64,
    run_as_group: i64,
    allow_privilege_escalation: bool,
    privileged: bool,
    read_only_root_filesystem: bool,
    capabilities: Capabilities,
    seccomp_profile: SeccompProfile,
}

#[derive(Serialize)]
struct Capabilities {
    drop: [&'static str; 1],
}

#[derive(Serialize)]
struct SeccompProfile {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Port {
    name: &'static str,
    container_port: u16,
    protocol: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    http_get: HttpGet,
    period_seconds: u64,
    timeout_seconds: u64,
    failure_threshold: u64,
}

#[derive(Serialize)]
struct HttpGet {
    path: &'static str,
    port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Lifecycle<'a> {
    post_start: PostStart<'a>,
}

#[derive(Serialize)]
struct PostStart<'a> {
    exec: Exec<'a>,
}

#[derive(Serialize)]
struct Exec<'a> {
    command: [Cow<'a, str>; 6],
}

/// What differs between the one-shot init fetcher and the refresh sidecar.
pub enum Role {
    Init,
    /// `native`: an init container with `restartPolicy: Always`; else a plain container
    /// placed first.
    Sidecar {
        native: bool,
    },
}

impl<'a> AgentContainer<'a> {
    pub fn new(
        role: Role,
        a: &'a AgentConfig,
        env: Vec<EnvVar<'a>>,
        volume_mounts: Vec<Mount<'a>>,
        run_as_group: i64,
    ) -> Self {
        let mut c = AgentContainer {
            name: match role {
                Role::Init => super::INIT_CONTAINER,
                Role::Sidecar { .. } => super::SIDECAR_CONTAINER,
            },
            image: &a.image,
            image_pull_policy: &a.image_pull_policy,
            command: [&a.binary],
            args: match role {
                Role::Init => &["agent", "--once"],
                Role::Sidecar { .. } => &["agent"],
            },
            env,
            volume_mounts,
            security_context: SecurityContext {
                run_as_non_root: true,
                run_as_user: a.run_as_user,
                run_as_group,
                allow_privilege_escalation: false,
                privileged: false,
                read_only_root_filesystem: true,
                capabilities: Capabilities { drop: ["ALL"] },
                seccomp_profile: SeccompProfile { kind: "RuntimeDefault" },
            },
            resources: (a.resources != Resources::default()).then_some(&a.resources),
            ports: None,
            startup_probe: None,
            liveness_probe: None,
            restart_policy: None,
            lifecycle: None,
        };
        let Role::Sidecar { native } = role else { return c };
        let port = a.health_port;
        c.ports = Some([Port { name: super::PORT_NAME, container_port: port, protocol: "TCP" }]);
        // Passes after the first sync or fallback seed; generous enough to cover the start
        // deadline, after which the kubelet restarts the sidecar with back-off.
        let startup_budget = a.start_deadline.0.as_secs().saturating_add(30).min(3600);
        c.startup_probe = Some(Probe {
            http_get: HttpGet { path: agent_spec::STARTUP_PATH, port },
            period_seconds: 1,
            timeout_seconds: 1,
            failure_threshold: startup_budget,
        });
        // Liveness says "the process works", never "the provider answers": restarting a
        // sidecar into an outage only loses its last good values.
        c.liveness_probe = Some(Probe {
            http_get: HttpGet { path: agent_spec::HEALTH_PATH, port },
            period_seconds: 10,
            timeout_seconds: 2,
            failure_threshold: 3,
        });
        if native {
            c.restart_policy = Some("Always");
        } else {
            // Plain container placed first: the kubelet starts containers in order and waits
            // for a postStart hook, so the app starts only after the first sync.
            c.lifecycle = Some(Lifecycle {
                post_start: PostStart {
                    exec: Exec {
                        command: [
                            a.binary.as_str().into(),
                            "agent-wait".into(),
                            "--port".into(),
                            port.to_string().into(),
                            "--timeout-seconds".into(),
                            startup_budget.to_string().into(),
                        ],
                    },
                },
            });
        }
        c
    }

    /// As a JSON tree, to compare with a container the pod already has.
    pub fn to_value(&self) -> Value {
        // Serialising strings, numbers and lists into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
