//! The one AdmissionReview builder of the tests, shaped as the API server sends a Pod CREATE
//! (fact 4; `apiserver/pkg/admission/plugin/webhook/request/admissionreview.go`,
//! `CreateV1AdmissionReview`): a fresh uid per call, `kind`/`resource` and
//! `requestKind`/`requestResource`, no `subResource`, `name` only when the object has one
//! (omitted for `generateName` pods, named after admission), the namespace, the creator's
//! `userInfo`, `oldObject: null`, `dryRun` always a bool, `options` a CreateOptions. The
//! emulated API server (support::apiserver) sends exactly these.

use serde_json::{json, Value};

/// Who creates the pod; decides `userInfo` and `options`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requester {
    /// The ReplicaSet controller creating a Deployment's pod.
    ReplicaSet,
    /// The Job controller.
    Job,
    /// A person with kubectl (`kubectl create -f pod.yaml`).
    Kubectl,
    /// Anyone else, by user name (groups: `system:authenticated`).
    User(String),
}

impl Requester {
    pub fn user_info(&self) -> Value {
        let controller = |name: &str| {
            json!({
                "username": format!("system:serviceaccount:kube-system:{name}"),
                "uid": uuid(),
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            })
        };
        match self {
            Requester::ReplicaSet => controller("replicaset-controller"),
            Requester::Job => controller("job-controller"),
            Requester::Kubectl => {
                json!({"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]})
            }
            Requester::User(name) => json!({"username": name, "groups": ["system:authenticated"]}),
        }
    }

    /// The CreateOptions the client sent (controllers set no field manager of their own in
    /// the options; kubectl does).
    pub fn options(&self, dry_run: bool) -> Value {
        let mut options = json!({"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"});
        if dry_run {
            options["dryRun"] = json!(["All"]);
        }
        if *self == Requester::Kubectl {
            options["fieldManager"] = json!("kubectl-create");
        }
        options
    }
}

/// A random version-4 UUID, as `uuid.NewUUID()` gives every request.
pub fn uuid() -> String {
    let hex: String = (0..32).map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0')).collect();
    let variant = char::from_digit(8 + fastrand::u32(0..4), 16).unwrap_or('8');
    format!("{}-{}-4{}-{}{}-{}", &hex[..8], &hex[8..12], &hex[13..16], variant, &hex[17..20], &hex[20..32])
}

/// A Pod CREATE review of `object` in `namespace` by `requester`, with a fresh uid.
pub fn create(object: &Value, namespace: &str, requester: &Requester, dry_run: bool) -> Value {
    review_of(uuid(), "CREATE", object, namespace, requester, dry_run)
}

/// A review with a given operation (UPDATE and DELETE reviews carry an `oldObject` the API
/// server fills in; this builder leaves it null, which is all the webhook reads of it).
pub fn review_of(
    uid: String,
    operation: &str,
    object: &Value,
    namespace: &str,
    requester: &Requester,
    dry_run: bool,
) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    let mut request = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "namespace": namespace,
        "operation": operation,
        "userInfo": requester.user_info(),
        "object": object,
        "oldObject": null,
        "dryRun": dry_run,
        "options": requester.options(dry_run),
    });
    if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        request["name"] = json!(name);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// The same pod in a review the way older tests wrote it: the object with its namespace
/// filled in (as the API server does before admission), created by the ReplicaSet
/// controller.
pub fn for_pod(pod: &Value, namespace: &str) -> Value {
    let mut object = pod.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace").or_insert_with(|| json!(namespace));
    }
    create(&object, namespace, &Requester::ReplicaSet, false)
}
