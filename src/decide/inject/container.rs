//! The injected agent container, written from typed structs.
//!
//! This object is entirely ours (nothing of the pod is round-tripped through it), so a typed
//! struct is safe here. Most of it depends on the agent configuration and the role alone
//! (image, command, security settings, resources, ports, probes, lifecycle); only the env (the
//! agent spec), the mounts and the group are the pod's. [`AgentContainer::to_json`] writes the
//! configuration's part once per configuration and role on each thread ([`Template`]) and
//! serialises only the pod's part on each admission; its tests check that the result is what
//! serialising the whole struct writes, byte for byte. [`AgentContainer::to_value`] gives the
//! JSON tree, when an existing `secretmode-` container must be compared with it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use serde::ser::Error as _;
use serde::Serialize;
use serde_json::Value;

use crate::agent::spec::AgentSpec;
use crate::config::{AgentConfig, Resources};
use crate::decide::patch::JsonText;
use crate::json;
use crate::vocabulary::names::{INIT_CONTAINER, PORT_NAME, SIDECAR_CONTAINER};
use crate::vocabulary::paths::{HEALTH_PATH, STARTUP_PATH};

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
    pub value: Option<EnvValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvSource<'a>>,
}

/// An env var's value: text, or the agent spec. The spec is kept as the spec rather than as
/// its JSON text, so that [`AgentContainer::to_json`] can write that JSON straight into the
/// env string, escaped as it goes, instead of writing it and then escaping it all over again
/// (the second pass was the largest single cost of an init or sidecar review).
pub enum EnvValue {
    Text(String),
    Spec(Box<AgentSpec>),
}

/// Either way a JSON string, as the Kubernetes `EnvVar.value` is.
impl Serialize for EnvValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            EnvValue::Text(text) => serializer.serialize_str(text),
            EnvValue::Spec(spec) => serializer.serialize_str(&serde_json::to_string(spec).map_err(S::Error::custom)?),
        }
    }
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

/// Serialised in field order; the flattened parts are what [`Template`] writes once.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentContainer<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    env: Vec<EnvVar<'a>>,
    volume_mounts: Vec<Mount<'a>>,
    security_context: SecurityContext,
    #[serde(flatten)]
    tail: Tail<'a>,
    /// What the template is rendered from, and so what it is cached by.
    #[serde(skip)]
    config: &'a AgentConfig,
    #[serde(skip)]
    role: Role,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Head<'a> {
    name: &'static str,
    image: &'a str,
    image_pull_policy: &'a str,
    command: [&'a str; 1],
    args: &'static [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tail<'a> {
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

/// Pod Security Standards *restricted*, always. The group is the app's (per pod); the user is
/// the config's, or the app's own with a `signal:` on-change (only the same user can signal).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SecurityContext {
    #[serde(flatten)]
    user: User,
    run_as_group: i64,
    #[serde(flatten)]
    rest: Restricted,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct User {
    run_as_non_root: bool,
    run_as_user: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Restricted {
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

impl SecurityContext {
    pub(super) fn restricted(run_as_user: i64, run_as_group: i64) -> SecurityContext {
        SecurityContext {
            user: User { run_as_non_root: true, run_as_user },
            run_as_group,
            rest: Restricted {
                allow_privilege_escalation: false,
                privileged: false,
                read_only_root_filesystem: true,
                capabilities: Capabilities { drop: ["ALL"] },
                seccomp_profile: SeccompProfile { kind: "RuntimeDefault" },
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Port {
    pub name: &'static str,
    pub container_port: u16,
    pub protocol: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Probe {
    pub http_get: HttpGet,
    pub period_seconds: u64,
    pub timeout_seconds: u64,
    pub failure_threshold: u64,
}

#[derive(Serialize)]
pub(super) struct HttpGet {
    pub path: &'static str,
    pub port: u16,
}

/// Liveness says "the process works", never "the provider answers": restarting a sidecar
/// into an outage only loses its last good values. The agent and the watcher share it.
pub(super) fn liveness_probe(port: u16) -> Probe {
    Probe {
        http_get: HttpGet { path: HEALTH_PATH, port },
        period_seconds: 10,
        timeout_seconds: 2,
        failure_threshold: 3,
    }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
            head: Head {
                name: match role {
                    Role::Init => INIT_CONTAINER,
                    Role::Sidecar { .. } => SIDECAR_CONTAINER,
                },
                image: &a.image,
                image_pull_policy: &a.image_pull_policy,
                command: [&a.binary],
                args: match role {
                    Role::Init => &["agent", "--once"],
                    Role::Sidecar { .. } => &["agent"],
                },
            },
            env,
            volume_mounts,
            security_context: SecurityContext::restricted(a.run_as_user, run_as_group),
            tail: Tail {
                resources: (a.resources != Resources::default()).then_some(&a.resources),
                ports: None,
                startup_probe: None,
                liveness_probe: None,
                restart_policy: None,
                lifecycle: None,
            },
            config: a,
            role,
        };
        let Role::Sidecar { native } = role else { return c };
        let t = &mut c.tail;
        let port = a.health_port;
        t.ports = Some([Port { name: PORT_NAME, container_port: port, protocol: "TCP" }]);
        // Passes after the first sync or fallback seed; generous enough to cover the start
        // deadline, after which the kubelet restarts the sidecar with back-off.
        let startup_budget = a.start_deadline.0.as_secs().saturating_add(30).min(3600);
        t.startup_probe = Some(Probe {
            http_get: HttpGet { path: STARTUP_PATH, port },
            period_seconds: 1,
            timeout_seconds: 1,
            failure_threshold: startup_budget,
        });
        t.liveness_probe = Some(liveness_probe(port));
        if native {
            t.restart_policy = Some("Always");
        } else {
            // Plain container placed first: the kubelet starts containers in order and waits
            // for a postStart hook, so the app starts only after the first sync.
            t.lifecycle = Some(Lifecycle {
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

    pub fn name(&self) -> &'static str {
        self.head.name
    }

    /// Runs the agent as `user` rather than the config's `runAsUser` (a `signal:` on-change:
    /// only a process of the app's own user can find and signal it).
    pub fn with_user(mut self, user: i64) -> Self {
        self.security_context.user.run_as_user = user;
        self
    }

    /// As a JSON tree, to compare with a container the pod already has.
    pub fn to_value(&self) -> Value {
        // Serialising strings, numbers and lists into a Value cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// As JSON text for the patch: what `serde_json::to_string(self)` writes, with the
    /// configuration's part taken from the [`Template`].
    pub fn to_json(&self) -> Result<JsonText, serde_json::Error> {
        if self.security_context.user.run_as_user != self.config.run_as_user {
            // The template holds the config's user; a pod-chosen one (signal pods only) is
            // written whole.
            return JsonText::of(self);
        }
        let template = Template::for_container(self)?;
        let mut out = Vec::with_capacity(template.len() + 2048);
        out.extend_from_slice(template.before_env.as_bytes());
        self.write_env(&mut out)?;
        out.extend_from_slice(br#","volumeMounts":"#);
        serde_json::to_writer(&mut out, &self.volume_mounts)?;
        out.extend_from_slice(template.before_group.as_bytes());
        out.extend_from_slice(itoa::Buffer::new().format(self.security_context.run_as_group).as_bytes());
        out.extend_from_slice(template.after_group.as_bytes());
        // serde_json writes UTF-8 and the joins are ASCII: this cannot fail.
        String::from_utf8(out).map(JsonText::trusted).map_err(serde_json::Error::custom)
    }

    /// The env list as serialising it writes it, with the agent spec's JSON escaped into its
    /// string as it is written ([`EnvValue`], [`json::InString`]).
    fn write_env(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.push(b'[');
        for (i, var) in self.env.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match var {
                EnvVar { name, value: Some(EnvValue::Spec(spec)), value_from: None } => {
                    out.extend_from_slice(br#"{"name":"#);
                    serde_json::to_writer(&mut *out, name)?;
                    out.extend_from_slice(br#","value":""#);
                    json::push_in_string(out, spec)?;
                    out.extend_from_slice(br#""}"#);
                }
                _ => serde_json::to_writer(&mut *out, var)?,
            }
        }
        out.push(b']');
        Ok(())
    }
}

/// The agent container's JSON around the pod's parts: `before_env` env `,"volumeMounts":`
/// mounts `before_group` group `after_group`.
#[derive(Debug)]
struct Template {
    before_env: String,
    before_group: String,
    after_group: String,
}

thread_local! {
    /// Templates rendered on this thread, with the configuration and role each was rendered
    /// for: every input of the configuration's part, so a configuration changed in place (as
    /// tests do) can never be answered with a stale container.
    static TEMPLATES: RefCell<Vec<(AgentConfig, Role, Rc<Template>)>> = const { RefCell::new(Vec::new()) };
}

/// Init, native sidecar and plain sidecar for one configuration, and a spare.
const CACHED_TEMPLATES: usize = 4;

impl Template {
    fn for_container(c: &AgentContainer<'_>) -> Result<Rc<Template>, serde_json::Error> {
        TEMPLATES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some((_, _, t)) = cache.iter().find(|(config, role, _)| *role == c.role && config == c.config) {
                return Ok(t.clone());
            }
            let t = Rc::new(Template::render(c)?);
            if cache.len() == CACHED_TEMPLATES {
                cache.remove(0);
            }
            cache.push((c.config.clone(), c.role, t.clone()));
            Ok(t)
        })
    }

    fn render(c: &AgentContainer<'_>) -> Result<Template, serde_json::Error> {
        let mut before_env = open_object(&c.head)?;
        before_env.push_str(r#","env":"#);
        let mut before_group = String::from(r#","securityContext":"#);
        before_group.push_str(&open_object(&c.security_context.user)?);
        before_group.push_str(r#","runAsGroup":"#);
        let mut after_group = more_fields(&c.security_context.rest)?;
        after_group.push('}');
        after_group.push_str(&more_fields(&c.tail)?);
        after_group.push('}');
        Ok(Template { before_env, before_group, after_group })
    }

    fn len(&self) -> usize {
        self.before_env.len() + self.before_group.len() + self.after_group.len()
    }
}

/// `{"a":1,"b":2` of an object with at least one field.
fn open_object<T: Serialize>(part: &T) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string(part)?;
    match text.pop() {
        Some('}') if text.len() > 1 => Ok(text),
        _ => Err(serde_json::Error::custom("a template part is not an object with fields")),
    }
}

/// `,"a":1,"b":2` of an object, to follow other fields (empty for `{}`).
fn more_fields<T: Serialize>(part: &T) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string(part)?;
    match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        Some("") => Ok(String::new()),
        Some(fields) => Ok([",", fields].concat()),
        None => Err(serde_json::Error::custom("a template part is not an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::spec::SPEC_VERSION;
    use crate::config::Config;
    use crate::providers::vault::VaultAuth;
    use crate::providers::{AgentItem, ProviderConfig};
    use crate::vocabulary::duration::HumanDuration;
    use std::time::Duration;

    /// A spec with every kind of character its strings can hold.
    fn spec() -> AgentSpec {
        let mut config = Config::builtin().unwrap();
        let Some(ProviderConfig::Vault(mut vault)) = config.providers.remove("vault") else {
            panic!("the built-in config has a vault provider");
        };
        vault.auth = VaultAuth::Jwt { mount: "j\\w\"t".into(), role: "ünï\n\u{1}".into(), audience: "v".into() };
        AgentSpec {
            version: SPEC_VERSION,
            provider_name: "vault \"main\"".into(),
            provider: ProviderConfig::Vault(vault),
            items: vec![AgentItem { name: "a\"b".into(), path: "x/y\\z".into(), key: Some("k\t".into()) }],
            mount_path: "/var/run/secrets/app".into(),
            token_file: Some("/t".into()),
            fallback_dir: None,
            refresh_interval_seconds: 60,
            max_staleness_seconds: 300,
            start_deadline_seconds: 5,
            health_port: 8099,
            on_change: None,
            render: Vec::new(),
        }
    }

    fn env() -> Vec<EnvVar<'static>> {
        vec![
            EnvVar {
                name: "SECRETMODE_AGENT_SPEC".into(),
                value: Some(EnvValue::Spec(Box::new(spec()))),
                value_from: None,
            },
            EnvVar { name: "PLAIN\"".into(), value: Some(EnvValue::Text("a\"b\n".into())), value_from: None },
            EnvVar {
                name: "VAULT_TOKEN".into(),
                value: None,
                value_from: Some(EnvSource { secret_key_ref: KeyRef { name: "vault", key: "token" } }),
            },
        ]
    }

    fn mounts() -> Vec<Mount<'static>> {
        vec![
            Mount { name: "secretmode-secrets", mount_path: "/var/run/secrets/app", read_only: false },
            Mount { name: "secretmode-token", mount_path: "/var/run/secretmode/token", read_only: true },
        ]
    }

    fn assert_same(config: &AgentConfig, role: Role, group: i64) {
        let c = AgentContainer::new(role, config, env(), mounts(), group);
        let text = c.to_json().unwrap();
        assert_eq!(text.get(), serde_json::to_string(&c).unwrap(), "{role:?}");
        assert_eq!(serde_json::from_str::<Value>(text.get()).unwrap(), c.to_value());
    }

    #[test]
    fn the_prepared_json_is_what_serde_writes_for_every_role_and_setting() {
        let mut config = Config::builtin().unwrap().agent;
        for role in [Role::Init, Role::Sidecar { native: true }, Role::Sidecar { native: false }] {
            assert_same(&config, role, 10001);
        }
        // Every setting the configuration's part is made of, changed in place on the same
        // thread: a template cached for the old value must not be used.
        let changes: [fn(&mut AgentConfig); 8] = [
            |a| a.image = "registry.example/secretmode@sha256:0123".into(),
            |a| a.image_pull_policy = "Always".into(),
            |a| a.binary = "/bin/\"odd\" path".into(),
            |a| a.run_as_user = 65532,
            |a| {
                a.resources.requests.insert("cpu".into(), "10m".into());
                a.resources.limits.insert("memory".into(), "32Mi".into());
            },
            |a| a.health_port = 9999,
            |a| a.start_deadline = HumanDuration(Duration::from_secs(5000)),
            |a| a.native_sidecar = false,
        ];
        for change in changes {
            change(&mut config);
            for role in [Role::Init, Role::Sidecar { native: true }, Role::Sidecar { native: false }] {
                for group in [0, 1, -1, i64::MAX] {
                    assert_same(&config, role, group);
                }
            }
        }
        assert!(TEMPLATES.with(|t| t.borrow().len()) <= CACHED_TEMPLATES);
    }

    #[test]
    fn an_agent_run_as_the_apps_user_is_written_whole_with_that_user() {
        let config = Config::builtin().unwrap().agent;
        for role in [Role::Init, Role::Sidecar { native: true }, Role::Sidecar { native: false }] {
            let c = AgentContainer::new(role, &config, env(), mounts(), 3000).with_user(1000);
            let text = c.to_json().unwrap();
            assert_eq!(text.get(), serde_json::to_string(&c).unwrap());
            let v: Value = serde_json::from_str(text.get()).unwrap();
            assert_eq!(v["securityContext"]["runAsUser"], 1000);
            assert_eq!(v["securityContext"]["runAsNonRoot"], true);
        }
    }

    #[test]
    fn an_empty_env_and_no_mounts_still_join() {
        let config = Config::builtin().unwrap().agent;
        let c = AgentContainer::new(Role::Init, &config, Vec::new(), Vec::new(), 7);
        assert_eq!(c.to_json().unwrap().get(), serde_json::to_string(&c).unwrap());
    }

    #[test]
    fn template_parts_must_be_objects() {
        assert_eq!(open_object(&serde_json::json!({"a": 1})).unwrap(), r#"{"a":1"#);
        assert!(open_object(&serde_json::json!({})).is_err());
        assert!(open_object(&"x").is_err());
        assert_eq!(more_fields(&serde_json::json!({})).unwrap(), "");
        assert_eq!(more_fields(&serde_json::json!({"a": 1, "b": [2]})).unwrap(), r#","a":1,"b":[2]"#);
        assert!(more_fields(&[1]).is_err());
    }
}
