//! Where each workload's values come from, beyond its own annotations: the ExternalSecret that
//! writes an `eso` pod's Secret (its refresh interval, store and remote keys), the
//! SecretProviderClass of a `csi` pod (its provider, objects and rotation), and which provider
//! of the config each of them reads from. One index, read from manifests or from the cluster,
//! shared by the checks, `--assume-down`, `--path` and the load report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
use crate::timing::{EsoRefresh, ESO_DEFAULT_REFRESH};
use crate::vocabulary::duration;

/// An ExternalSecret, as the audit needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct EsoSource {
    /// The ExternalSecret's name.
    pub name: String,
    /// `refreshInterval` as written (`1h` when unset).
    pub interval: String,
    pub refresh: EsoRefresh,
    /// `(kind, name)` of `spec.secretStoreRef` (kind defaults to `SecretStore`).
    pub store: (String, String),
    /// Remote keys it reads: `data[].remoteRef.key`, `dataFrom[].extract.key`, `dataFrom[].find.path`.
    pub remote_keys: Vec<String>,
    /// Provider reads per refresh: one per `data` entry and one per `dataFrom` entry (ESO's
    /// providers fetch each remote reference on its own).
    pub reads_per_refresh: usize,
    /// Not Ready, stale or behind its spec (`--cluster` only; manifests carry no status).
    pub unhealthy: bool,
}

/// A SecretProviderClass, as the audit needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct CsiSource {
    /// `spec.provider`: `vault`, `aws`, `azure`, `gcp`, ...
    pub provider: String,
    /// The provider-side names of its objects: Vault `secretPath`, AWS `objectName`, else `objectName`.
    pub objects: Vec<String>,
    /// Provider reads per mount (and per rotation poll): one per distinct object.
    pub reads_per_mount: usize,
    /// Its pods' rotation poll interval: the class's `<prefix>/rotation-poll-interval`
    /// annotation, else the config's `cluster.csiRotation`. `None`: no rotation.
    pub rotation: Option<Duration>,
}

/// Which provider of the config a workload depends on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attribution {
    /// A provider defined under `providers`.
    Provider(String),
    /// Not known; the reason says what would tell (e.g. list the store in `providerLoad`).
    Unknown(String),
}

impl Attribution {
    pub fn provider(&self) -> Option<&str> {
        match self {
            Attribution::Provider(p) => Some(p),
            Attribution::Unknown(_) => None,
        }
    }
}

/// ExternalSecrets by `(namespace, target Secret)`, SecretProviderClasses by `(namespace,
/// name)`, ESO stores by `(kind, namespace or "" for cluster stores, name)` → provider type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sources {
    pub external_secrets: BTreeMap<(String, String), EsoSource>,
    pub classes: BTreeMap<(String, String), CsiSource>,
    pub stores: BTreeMap<(String, String, String), String>,
    /// Vault stores' KV location (`spec.provider.vault.path` and `version`), same keys as
    /// `stores`: ESO reads remote keys relative to it (`--path` normalises them with it).
    pub vault_stores: BTreeMap<(String, String, String), VaultStore>,
}

/// Where a Vault SecretStore reads: its KV mount (`path`, optional) and KV version
/// (`v2` when unset, as ESO defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultStore {
    pub path: Option<String>,
    pub v2: bool,
}

impl Sources {
    /// Indexes the ExternalSecrets, SecretStores, ClusterSecretStores and SecretProviderClasses
    /// among `objects`; `namespace_of` gives each namespaced object's namespace.
    pub fn read<'a>(
        objects: impl IntoIterator<Item = &'a Value>,
        namespace_of: impl Fn(&Value) -> String,
        config: &Config,
    ) -> Sources {
        let mut s = Sources::default();
        for o in objects {
            let api = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = name_of(o);
            if api.starts_with("external-secrets.io/") {
                match kind {
                    "ExternalSecret" => {
                        let es = eso_source(o);
                        let target = eso_target_name(o);
                        s.external_secrets.insert((namespace_of(o), target), es);
                    }
                    "SecretStore" | "ClusterSecretStore" => {
                        let ns = if kind == "SecretStore" { namespace_of(o) } else { String::new() };
                        if let Some(vault) = o.pointer("/spec/provider/vault") {
                            let path = vault.get("path").and_then(Value::as_str).map(|p| p.trim_matches('/'));
                            let v2 = vault.get("version").and_then(Value::as_str) != Some("v1");
                            let store = VaultStore { path: path.filter(|p| !p.is_empty()).map(str::to_string), v2 };
                            s.vault_stores.insert((kind.to_string(), ns.clone(), name.clone()), store);
                        }
                        if let Some(provider) = store_provider(o) {
                            s.stores.insert((kind.to_string(), ns, name), provider);
                        }
                    }
                    _ => {}
                }
            } else if api.starts_with("secrets-store.csi.x-k8s.io/") && kind == "SecretProviderClass" {
                s.classes.insert((namespace_of(o), name), csi_source(o, config));
            }
        }
        s
    }

    /// The provider an `eso` pod reading Secret `secret` in `namespace` depends on.
    pub fn eso_provider(&self, namespace: &str, secret: &str, config: &Config) -> Attribution {
        let Some(es) = self.external_secrets.get(&(namespace.to_string(), secret.to_string())) else {
            return Attribution::Unknown(format!("no ExternalSecret writes Secret {secret}"));
        };
        let (kind, store) = &es.store;
        let listed = format!("{kind}/{store}");
        if let Some((name, _)) = config.provider_load.iter().find(|(_, l)| l.secret_stores.contains(&listed)) {
            return Attribution::Provider(name.clone());
        }
        let ns = if kind == "ClusterSecretStore" { "" } else { namespace };
        match self.stores.get(&(kind.clone(), ns.to_string(), store.clone())) {
            Some(provider_type) => by_type(provider_type, config).unwrap_or_else(|why| {
                Attribution::Unknown(format!(
                    "{listed} ({provider_type}): {why}; list it in providerLoad.<provider>.secretStores"
                ))
            }),
            None => Attribution::Unknown(format!(
                "{listed} is not in the input; list it in providerLoad.<provider>.secretStores"
            )),
        }
    }

    /// The Vault store (KV mount and version) of the ExternalSecret writing Secret `secret`, when
    /// that store is a Vault store in the input.
    pub fn eso_vault_store(&self, namespace: &str, secret: &str) -> Option<&VaultStore> {
        let es = self.external_secrets.get(&(namespace.to_string(), secret.to_string()))?;
        let (kind, store) = &es.store;
        let ns = if kind == "ClusterSecretStore" { "" } else { namespace };
        self.vault_stores.get(&(kind.clone(), ns.to_string(), store.clone()))
    }

    /// The provider a `csi` pod mounting class `class` in `namespace` depends on.
    pub fn csi_provider(&self, namespace: &str, class: &str, config: &Config) -> Attribution {
        let Some(spc) = self.classes.get(&(namespace.to_string(), class.to_string())) else {
            return Attribution::Unknown(format!("SecretProviderClass {class} is not in the input"));
        };
        if let Some((name, _)) = config.provider_load.iter().find(|(_, l)| l.csi_providers.contains(&spc.provider)) {
            return Attribution::Provider(name.clone());
        }
        by_type(&spc.provider, config).unwrap_or_else(|why| {
            Attribution::Unknown(format!(
                "SecretProviderClass {class} (provider {}): {why}; list it in providerLoad.<provider>.csiProviders",
                spc.provider
            ))
        })
    }
}

/// The one provider of the config of this type (`vault`, `aws`), if there is exactly one.
fn by_type(provider_type: &str, config: &Config) -> Result<Attribution, String> {
    let of_type: Vec<&String> =
        config.providers.iter().filter(|(_, p)| p.kind() == provider_type).map(|(n, _)| n).collect();
    match of_type.as_slice() {
        [one] => Ok(Attribution::Provider((*one).clone())),
        [] => Err("no provider of that type in the config".into()),
        _ => Err(format!(
            "several providers of that type ({})",
            of_type.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>").to_string()
}

/// The target Secret's name; defaults to the ExternalSecret's name.
pub fn eso_target_name(es: &Value) -> String {
    es.pointer("/spec/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| name_of(es))
}

/// `refreshInterval` as written, and as ESO reads it (Go's `time.ParseDuration`; zero or
/// negative: synced once). `None` when it is not a duration.
pub fn eso_refresh(es: &Value) -> (String, Option<EsoRefresh>) {
    let text = es.pointer("/spec/refreshInterval").and_then(Value::as_str);
    let Some(text) = text else {
        return (duration::format(ESO_DEFAULT_REFRESH), Some(EsoRefresh::Every(ESO_DEFAULT_REFRESH)));
    };
    let refresh = duration::parse_go(text).ok().map(|nanos| match u64::try_from(nanos) {
        Ok(n) if n > 0 => EsoRefresh::Every(Duration::from_nanos(n)),
        _ => EsoRefresh::Once,
    });
    (text.to_string(), refresh)
}

fn eso_source(es: &Value) -> EsoSource {
    let (interval, refresh) = eso_refresh(es);
    let store_kind = es.pointer("/spec/secretStoreRef/kind").and_then(Value::as_str).unwrap_or("SecretStore");
    let store_name = es.pointer("/spec/secretStoreRef/name").and_then(Value::as_str).unwrap_or("");
    let list = |p: &str| es.pointer(p).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut keys = BTreeSet::new();
    let data = list("/spec/data");
    keys.extend(data.iter().filter_map(|d| d.pointer("/remoteRef/key").and_then(Value::as_str)).map(str::to_string));
    let data_from = list("/spec/dataFrom");
    for d in data_from {
        let key = d.pointer("/extract/key").or_else(|| d.pointer("/find/path")).and_then(Value::as_str);
        keys.extend(key.map(str::to_string));
    }
    EsoSource {
        name: name_of(es),
        interval,
        refresh: refresh.unwrap_or(EsoRefresh::Unknown),
        store: (store_kind.to_string(), store_name.to_string()),
        remote_keys: keys.into_iter().collect(),
        reads_per_refresh: data.len() + data_from.len(),
        unhealthy: false,
    }
}

/// The provider type under a SecretStore's `spec.provider` (its one key: `vault`, `aws`, ...).
fn store_provider(store: &Value) -> Option<String> {
    store.pointer("/spec/provider").and_then(Value::as_object).and_then(|p| p.keys().next()).cloned()
}

/// A SecretProviderClass's provider, objects (from the `objects` parameter, a YAML list in a
/// string) and rotation.
fn csi_source(spc: &Value, config: &Config) -> CsiSource {
    let provider = spc.pointer("/spec/provider").and_then(Value::as_str).unwrap_or("").to_string();
    let objects_text = spc.pointer("/spec/parameters/objects").and_then(Value::as_str).unwrap_or("");
    let parsed: Vec<Value> = serde_yaml::from_str::<Value>(objects_text)
        .ok()
        .and_then(|v| match v {
            Value::Array(a) => Some(a),
            // AWS and GCP nest the list: `array: [ "- objectName: ..." ]`; read it best-effort.
            Value::Object(o) => o.get("array").and_then(Value::as_array).map(|a| {
                a.iter().filter_map(Value::as_str).filter_map(|s| serde_yaml::from_str::<Value>(s).ok()).collect()
            }),
            _ => None,
        })
        .unwrap_or_default();
    let mut objects = BTreeSet::new();
    for o in parsed.iter().flat_map(|o| match o {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }) {
        let path = o.get("secretPath").or_else(|| o.get("objectName")).and_then(Value::as_str);
        objects.extend(path.map(str::to_string));
    }
    let prefix = &config.annotation_prefix;
    let annotation = spc
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(format!("{prefix}/rotation-poll-interval")))
        .and_then(Value::as_str);
    let global = config.cluster.csi_rotation.enabled.then_some(config.cluster.csi_rotation.poll_interval.0);
    let rotation = match annotation {
        Some("off") => None,
        Some(text) => duration::parse(text).ok().filter(|d| !d.is_zero()).or(global),
        None => global,
    };
    CsiSource { provider, reads_per_mount: objects.len(), objects: objects.into_iter().collect(), rotation }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: &str) -> Config {
        let text = format!("{}\n{extra}", crate::config::DEFAULT_CONFIG_YAML);
        Config::from_yaml(&text, "test").unwrap()
    }

    fn index(objects: &[Value], config: &Config) -> Sources {
        Sources::read(
            objects,
            |o| o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("shop").into(),
            config,
        )
    }

    #[test]
    fn external_secrets_give_interval_keys_and_store() {
        let es = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {
                "refreshInterval": "15m",
                "secretStoreRef": {"name": "vault-backend", "kind": "ClusterSecretStore"},
                "target": {"name": "db-creds"},
                "data": [
                    {"secretKey": "user", "remoteRef": {"key": "shop/db", "property": "user"}},
                    {"secretKey": "pass", "remoteRef": {"key": "shop/db", "property": "pass"}}
                ],
                "dataFrom": [{"extract": {"key": "shop/common"}}]
            }
        });
        let store = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
            "metadata": {"name": "vault-backend"},
            "spec": {"provider": {"vault": {"server": "https://vault:8200"}}}
        });
        let c = config("");
        let s = index(&[es, store], &c);
        let e = &s.external_secrets[&("shop".into(), "db-creds".into())];
        assert_eq!(e.refresh, EsoRefresh::Every(Duration::from_secs(900)));
        assert_eq!(e.remote_keys, ["shop/common", "shop/db"]);
        assert_eq!(e.reads_per_refresh, 3, "one read per data entry, one per dataFrom");
        assert_eq!(s.eso_provider("shop", "db-creds", &c), Attribution::Provider("vault".into()));
        assert!(matches!(s.eso_provider("shop", "other", &c), Attribution::Unknown(_)));
    }

    #[test]
    fn stores_listed_in_config_win_over_inference() {
        let es = json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "db"},
            "spec": {"secretStoreRef": {"name": "aws-store"}, "data": []}
        });
        let c = config("providerLoad:\n  aws:\n    secretStores: [SecretStore/aws-store]\n");
        let s = index(&[es], &c);
        assert_eq!(s.eso_provider("shop", "db", &c), Attribution::Provider("aws".into()));
        let c = config("");
        let Attribution::Unknown(why) = s.eso_provider("shop", "db", &c) else { panic!() };
        assert!(why.contains("SecretStore/aws-store is not in the input"), "{why}");
    }

    #[test]
    fn vault_stores_give_their_mount_and_version() {
        let es = |store: &str| {
            json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": store, "namespace": "shop"},
                "spec": {"secretStoreRef": {"name": store}, "data": []}
            })
        };
        let store = |name: &str, vault: Value| {
            json!({
                "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"provider": {"vault": vault}}
            })
        };
        let c = config("");
        let objects = [
            es("kv1"),
            store("kv1", json!({"path": "/legacy/", "version": "v1"})),
            es("bare"),
            store("bare", json!({"server": "https://vault:8200"})),
            es("absent"),
        ];
        let s = index(&objects, &c);
        assert_eq!(s.eso_vault_store("shop", "kv1"), Some(&VaultStore { path: Some("legacy".into()), v2: false }));
        assert_eq!(s.eso_vault_store("shop", "bare"), Some(&VaultStore { path: None, v2: true }), "ESO's default: v2");
        assert_eq!(s.eso_vault_store("shop", "absent"), None);
    }

    #[test]
    fn classes_give_objects_provider_and_rotation() {
        let spc = |annotations: Value| {
            json!({
                "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                "metadata": {"name": "db", "namespace": "shop", "annotations": annotations},
                "spec": {"provider": "vault", "parameters": {
                    "objects": "- objectName: pass\n  secretPath: secret/data/db\n  secretKey: pass\n- objectName: user\n  secretPath: secret/data/db\n  secretKey: user\n"
                }}
            })
        };
        let off = config("");
        let s = index(&[spc(json!({}))], &off);
        let c = &s.classes[&("shop".into(), "db".into())];
        assert_eq!(
            (c.objects.as_slice(), c.reads_per_mount, c.rotation),
            (&["secret/data/db".to_string()][..], 1, None)
        );
        assert_eq!(s.csi_provider("shop", "db", &off), Attribution::Provider("vault".into()));
        let on = config("cluster:\n  csiRotation:\n    enabled: true\n");
        let s = index(&[spc(json!({}))], &on);
        assert_eq!(s.classes[&("shop".into(), "db".into())].rotation, Some(Duration::from_secs(120)));
        let s = index(&[spc(json!({"secrets/rotation-poll-interval": "off"}))], &on);
        assert_eq!(s.classes[&("shop".into(), "db".into())].rotation, None);
        let s = index(&[spc(json!({"secrets/rotation-poll-interval": "30s"}))], &off);
        assert_eq!(s.classes[&("shop".into(), "db".into())].rotation, Some(Duration::from_secs(30)));
    }

    #[test]
    fn aws_classes_name_their_secrets() {
        let spc = json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
            "metadata": {"name": "api"},
            "spec": {"provider": "aws", "parameters": {
                "objects": "- objectName: \"prod/api/key\"\n  objectType: \"secretsmanager\"\n"
            }}
        });
        let c = config("");
        let s = index(&[spc], &c);
        assert_eq!(s.classes[&("shop".into(), "api".into())].objects, ["prod/api/key"]);
        assert_eq!(s.csi_provider("shop", "api", &c), Attribution::Provider("aws".into()));
    }
}
