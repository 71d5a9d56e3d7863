//! The volumes an injection adds, written from typed structs like the agent container: they
//! are entirely ours, so they serialise straight into the patch. `serde_json::to_value` gives
//! the tree only when a volume already in the pod must be compared with one of them.

use serde::Serialize;

#[derive(Serialize)]
pub struct Volume<'a> {
    pub name: &'static str,
    #[serde(flatten)]
    pub source: Source<'a>,
}

/// One key of the volume source, as Kubernetes spells it (`secret`, `csi`, ...).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source<'a> {
    Secret(SecretSource<'a>),
    Csi(CsiSource<'a>),
    EmptyDir(EmptyDirSource<'a>),
    Projected(ProjectedSource<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource<'a> {
    pub secret_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<KeyToPath<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    pub default_mode: u32,
}

#[derive(Serialize)]
pub struct KeyToPath<'a> {
    pub key: &'a str,
    pub path: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CsiSource<'a> {
    pub driver: &'static str,
    pub read_only: bool,
    pub volume_attributes: CsiAttributes<'a>,
}

/// Only `secretProviderClass`: any other attribute silently overrides the class's
/// parameters, which would let a pod re-point the driver.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CsiAttributes<'a> {
    pub secret_provider_class: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirSource<'a> {
    /// `Memory` (tmpfs), or `None`: the node's disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medium: Option<&'static str>,
    pub size_limit: &'a str,
}

#[derive(Serialize)]
pub struct ProjectedSource<'a> {
    pub sources: [Projection<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Projection<'a> {
    pub service_account_token: TokenProjection<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenProjection<'a> {
    pub audience: &'a str,
    pub expiration_seconds: i64,
    pub path: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volumes_serialise_as_kubernetes_spells_them() {
        let eso = Volume {
            name: "v",
            source: Source::Secret(SecretSource {
                secret_name: "s",
                items: Some(vec![KeyToPath { key: "k", path: "p" }]),
                optional: None,
                default_mode: 0o440,
            }),
        };
        assert_eq!(
            serde_json::to_value(&eso).unwrap(),
            json!({"name": "v", "secret": {"secretName": "s", "items": [{"key": "k", "path": "p"}], "defaultMode": 288}})
        );
        let token = Volume {
            name: "t",
            source: Source::Projected(ProjectedSource {
                sources: [Projection {
                    service_account_token: TokenProjection {
                        audience: "vault",
                        expiration_seconds: 600,
                        path: "token",
                    },
                }],
            }),
        };
        assert_eq!(
            serde_json::to_value(&token).unwrap(),
            json!({"name": "t", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "token"}}]}})
        );
        let dir = Volume {
            name: "d",
            source: Source::EmptyDir(EmptyDirSource { medium: Some("Memory"), size_limit: "1Mi" }),
        };
        assert_eq!(
            serde_json::to_value(&dir).unwrap(),
            json!({"name": "d", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
        );
        let disk = Volume { name: "b", source: Source::EmptyDir(EmptyDirSource { medium: None, size_limit: "8Mi" }) };
        assert_eq!(serde_json::to_value(&disk).unwrap(), json!({"name": "b", "emptyDir": {"sizeLimit": "8Mi"}}));
    }
}
