//! `secretmode audit --cluster`: reads pods, ExternalSecrets and SecretProviderClasses through
//! the Kubernetes API (list and get only) and hands them to the same analysis as manifests.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use serde_json::Value;
use thiserror::Error;

use super::analyze::ClusterState;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot connect to the cluster: {0}")]
    Connect(String),
    #[error("listing {what}: forbidden ({message}); grant the read-only rules in docs/AUDIT.md")]
    Forbidden { what: String, message: String },
    #[error("listing {what}: {source}")]
    List { what: String, source: kube::Error },
}

/// Page size for list calls: large clusters are read in pages, never in one response.
const PAGE: u32 = 500;

/// Reads what the audit needs. `namespace` restricts every list to one namespace.
pub async fn fetch(client: Client, namespace: Option<&str>) -> Result<ClusterState, ClusterError> {
    let pods = list(&client, namespace, &gvk("", "v1", "Pod"), "pods")
        .await?
        .ok_or_else(|| ClusterError::Connect("the API server does not serve v1 pods".into()))?;
    let external_secrets =
        list(&client, namespace, &gvk("external-secrets.io", "v1", "ExternalSecret"), "externalsecrets").await?;
    let secret_provider_classes = list(
        &client,
        namespace,
        &gvk("secrets-store.csi.x-k8s.io", "v1", "SecretProviderClass"),
        "secretproviderclasses",
    )
    .await?;
    // Stores only tell which provider an ExternalSecret reads from: a reader allowed to list
    // ExternalSecrets but not stores still gets its audit (attribution then needs the config's
    // providerLoad.<name>.secretStores). ClusterSecretStores are cluster-scoped.
    let eso = |kind| gvk("external-secrets.io", "v1", kind);
    let stores = list(&client, namespace, &eso("SecretStore"), "secretstores").await.unwrap_or(None);
    let cluster_stores = list(&client, None, &eso("ClusterSecretStore"), "clustersecretstores").await.unwrap_or(None);
    let secret_stores = match (stores, cluster_stores) {
        (None, None) => None,
        (a, b) => Some(a.into_iter().chain(b).flatten().collect()),
    };
    Ok(ClusterState { pods, external_secrets, secret_provider_classes, secret_stores })
}

fn gvk(group: &str, version: &str, kind: &str) -> GroupVersionKind {
    GroupVersionKind::gvk(group, version, kind)
}

/// All objects of one resource as raw JSON (dynamic objects keep fields this crate's
/// k8s-openapi does not know). `None` when the API is not served (404: CRD not installed).
async fn list(
    client: &Client,
    namespace: Option<&str>,
    gvk: &GroupVersionKind,
    plural: &str,
) -> Result<Option<Vec<Value>>, ClusterError> {
    let resource = ApiResource::from_gvk_with_plural(gvk, plural);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let what = if gvk.group.is_empty() { plural.to_string() } else { format!("{plural}.{}", gvk.group) };
    let mut params = ListParams::default().limit(PAGE);
    let mut out = Vec::new();
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Err(ClusterError::Forbidden { what, message: e.message });
            }
            Err(source) => return Err(ClusterError::List { what, source }),
        };
        for item in page.items {
            let mut value = serde_json::to_value(item).unwrap_or(Value::Null);
            // List items carry no apiVersion/kind; put them back for readers of the JSON.
            if let Some(obj) = value.as_object_mut() {
                obj.insert("apiVersion".into(), Value::String(resource.api_version.clone()));
                obj.insert("kind".into(), Value::String(resource.kind.clone()));
            }
            out.push(value);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    Ok(Some(out))
}
