//! AdmissionReview `admission.k8s.io/v1` on the wire.
//!
//! Only the fields the decision needs are deserialised, in one pass over the body: of the pod
//! (`object`), the parts the decision reads ([`super::pod_view`]); `oldObject`, `userInfo` and
//! `options` are skipped without building values. The answer echoes the request uid and
//! carries the patch as the base64 string the API server expects.

use serde::Deserialize;
use thiserror::Error;

use super::pod_view::PodView;
use crate::config::Config;
use crate::decide::{self, Decision};
use crate::json::push_json;
use crate::json::tree::JsonRef;
use crate::vocabulary::mode::Mode;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// A request that cannot be answered with an AdmissionReview at all (HTTP 400).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("body is not an AdmissionReview: {0}")]
    NotJson(String),
    #[error("unsupported AdmissionReview {0:?}; this webhook speaks admission.k8s.io/v1 (set admissionReviewVersions: [\"v1\"])")]
    Version(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has no uid")]
    NoUid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    uid: Option<String>,
    kind: Option<GroupVersionKind>,
    sub_resource: Option<String>,
    namespace: Option<String>,
    operation: Option<String>,
    /// `null` (DELETE) becomes `None`.
    #[serde(borrow)]
    object: Option<PodView<'a>>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// The answer to one review, with what metrics and logs need to know about it.
#[derive(Debug)]
pub struct Reviewed {
    /// Serialised AdmissionReview response.
    pub body: Vec<u8>,
    pub uid: String,
    pub namespace: String,
    pub mode: Option<Mode>,
    /// `skipped`, `injected`, `unchanged`, `mirror`, `denied`, `ignored` (not a Pod CREATE).
    pub outcome: &'static str,
    /// Bytes of the JSON patch before base64 (0 when none).
    pub patch_bytes: usize,
    /// The policy rule broken, if any, and at which enforcement level.
    pub policy: Option<decide::PolicyHit>,
    pub dry_run: bool,
}

/// Answers one AdmissionReview body.
pub fn review(body: &[u8], config: &Config) -> Result<Reviewed, ReviewError> {
    // One UTF-8 check of the whole body, instead of one per string inside the parser.
    let text = std::str::from_utf8(body).map_err(|e| ReviewError::NotJson(format!("not UTF-8: {e}")))?;
    let review: ReviewIn = serde_json::from_str(text).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    let version = review.api_version.unwrap_or_default();
    let kind = review.kind.unwrap_or_default();
    if version != API_VERSION || kind != KIND {
        return Err(ReviewError::Version(format!("{version} {kind}").trim().to_string()));
    }
    let request = review.request.ok_or(ReviewError::NoRequest)?;
    let uid = request.uid.filter(|u| !u.is_empty()).ok_or(ReviewError::NoUid)?;
    let request_namespace = request.namespace.unwrap_or_default();

    let is_pod_create = request.kind.as_ref().is_some_and(|k| k.group.is_empty() && k.kind == "Pod")
        && request.operation.as_deref() == Some("CREATE")
        && request.sub_resource.as_deref().unwrap_or_default().is_empty();
    let (Some(object), true) = (request.object, is_pod_create) else {
        return Ok(answer(uid, request_namespace, None, "ignored", &Decision::allow_nothing(), request.dry_run));
    };

    let pod = match object.into_json().map_or_else(|| whole_object(text), Ok)? {
        pod @ JsonRef::Object(_) => pod,
        _ => {
            let denial =
                Decision::Deny { message: "request.object is not a JSON object".into(), mode: None, policy: None };
            return Ok(answer(uid, request_namespace, None, "denied", &denial, request.dry_run));
        }
    };
    // generateName pods and some clients leave metadata.namespace empty.
    let namespace = pod
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(JsonRef::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .unwrap_or(request_namespace);
    let decision = decide::decide(&pod, &namespace, config);
    let outcome = decision.outcome_label();
    Ok(answer(uid, namespace, decision.mode(), outcome, &decision, request.dry_run))
}

/// `request.object` parsed whole, for the rare pod whose decision needs all of it.
fn whole_object(text: &str) -> Result<JsonRef<'_>, ReviewError> {
    #[derive(Deserialize)]
    struct Review<'a> {
        #[serde(borrow)]
        request: Request<'a>,
    }
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        object: JsonRef<'a>,
    }
    let review: Review = serde_json::from_str(text).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    Ok(review.request.object)
}

impl Decision {
    fn allow_nothing() -> Decision {
        Decision::Allow {
            patch: Vec::new(),
            warnings: Vec::new(),
            mode: None,
            outcome: decide::Outcome::Skipped,
            policy: None,
        }
    }
}

fn answer(
    uid: String,
    namespace: String,
    mode: Option<Mode>,
    outcome: &'static str,
    decision: &Decision,
    dry_run: bool,
) -> Reviewed {
    let (allowed, message, patch, warnings): (bool, Option<&str>, Option<Vec<u8>>, &[String]) = match decision {
        Decision::Allow { patch, warnings, .. } => {
            let bytes = (!patch.is_empty()).then(|| crate::decide::patch::to_json(patch));
            (true, None, bytes, warnings)
        }
        Decision::Deny { message, .. } => (false, Some(message.as_str()), None, &[]),
    };
    let patch_bytes = patch.as_ref().map_or(0, Vec::len);
    let body = response_body(&uid, allowed, message, patch.as_deref(), warnings);
    Reviewed { body, uid, namespace, mode, outcome, patch_bytes, dry_run, policy: decision.policy().cloned() }
}

/// The AdmissionReview answer, written by hand: the base64 patch goes straight into the body
/// instead of through a string serialiser that would scan every byte of it for escapes (the
/// base64 alphabet needs none). Strings from the request or the decision are escaped by
/// serde_json.
fn response_body(
    uid: &str,
    allowed: bool,
    message: Option<&str>,
    patch: Option<&[u8]>,
    warnings: &[String],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(192 + patch.map_or(0, |p| p.len() * 4 / 3 + 4));
    body.extend_from_slice(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#);
    push_json(&mut body, uid);
    body.extend_from_slice(if allowed { br#","allowed":true"# } else { br#","allowed":false"# });
    if let Some(message) = message {
        body.extend_from_slice(br#","status":{"code":403,"message":"#);
        push_json(&mut body, message);
        body.push(b'}');
    }
    if let Some(patch) = patch {
        body.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        // SIMD base64: the patch is the largest part of the answer.
        base64_simd::STANDARD.encode_append(patch, &mut body);
        body.push(b'"');
    }
    if !warnings.is_empty() {
        body.extend_from_slice(br#","warnings":"#);
        push_json(&mut body, warnings);
    }
    body.extend_from_slice(b"}}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::{json, Value};

    /// An AdmissionReview shaped the way kube-apiserver sends it.
    fn request(object: Value, operation: &str, kind: &str, namespace: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": kind},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "uid": "x", "groups": ["system:serviceaccounts"]},
                "object": object,
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        })
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "annotations": annotations},
               "spec": {"containers": [{"name": "app", "image": "nginx"}]}})
    }

    fn answer(review: &Value) -> Value {
        let out = super::review(&serde_json::to_vec(review).unwrap(), &Config::builtin().unwrap()).unwrap();
        serde_json::from_slice(&out.body).unwrap()
    }

    #[test]
    fn patch_is_base64_json_and_uid_is_echoed() {
        let a = answer(&request(
            pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"})),
            "CREATE",
            "Pod",
            "payments",
        ));
        assert_eq!(a["apiVersion"], API_VERSION);
        assert_eq!(a["kind"], KIND);
        let r = &a["response"];
        assert_eq!(r["uid"], "0df28fbd-5f5f-11e8-b7cc-42010a800002");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD.decode(r["patch"].as_str().unwrap()).unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
        assert!(!ops.is_empty());
        assert!(r["warnings"][0].as_str().unwrap().starts_with("secretmode init"));
        // generateName pod without metadata.namespace: the request's namespace is used.
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#"\"role\":\"payments\""#), "{text}");
    }

    #[test]
    fn denial_is_allowed_false_with_a_message_and_no_patch() {
        let a = answer(&request(pod(json!({"secrets/mode": "bogus"})), "CREATE", "Pod", "ns"));
        let r = &a["response"];
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 403);
        assert!(r["status"]["message"].as_str().unwrap().contains("secrets/mode"));
        assert!(r.get("patch").is_none() && r.get("patchType").is_none());
    }

    #[test]
    fn not_our_business_is_allowed_without_patch() {
        let opted_in = pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}));
        for review in [
            request(opted_in.clone(), "UPDATE", "Pod", "ns"),
            request(json!(null), "DELETE", "Pod", "ns"),
            request(opted_in.clone(), "CREATE", "Deployment", "ns"),
            request(pod(json!({"other": "x"})), "CREATE", "Pod", "ns"),
        ] {
            let r = answer(&review)["response"].clone();
            assert_eq!(r["allowed"], true, "{review}");
            assert!(r.get("patch").is_none());
        }
        let mut sub = request(opted_in, "CREATE", "Pod", "ns");
        sub["request"]["subResource"] = json!("binding");
        assert!(answer(&sub)["response"].get("patch").is_none());
    }

    #[test]
    fn dry_run_gets_the_same_answer() {
        let mut review =
            request(pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"})), "CREATE", "Pod", "ns");
        let normal = answer(&review);
        review["request"]["dryRun"] = json!(true);
        assert_eq!(answer(&review), normal);
    }

    #[test]
    fn unreadable_reviews_are_errors_not_panics() {
        let cfg = Config::builtin().unwrap();
        let full = serde_json::to_vec(&request(pod(json!({})), "CREATE", "Pod", "ns")).unwrap();
        type Check = fn(&ReviewError) -> bool;
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (b"".to_vec(), |e| matches!(e, ReviewError::NotJson(_))),
            (b"not json".to_vec(), |e| matches!(e, ReviewError::NotJson(_))),
            (full[..full.len() / 2].to_vec(), |e| matches!(e, ReviewError::NotJson(_))),
            (
                br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_vec(),
                |e| matches!(e, ReviewError::Version(_)),
            ),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), |e| {
                *e == ReviewError::NoRequest
            }),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#.to_vec(), |e| {
                *e == ReviewError::NoUid
            }),
            (br#"[1,2]"#.to_vec(), |e| matches!(e, ReviewError::NotJson(_))),
            (b"{\"apiVersion\":\"\xff\"}".to_vec(), |e| matches!(e, ReviewError::NotJson(_))),
        ];
        for (body, expected) in cases {
            let e = review(&body, &cfg).unwrap_err();
            assert!(expected(&e), "{}: {e}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn policy_hits_are_reported_for_metrics() {
        let yaml = crate::config::DEFAULT_CONFIG_YAML
            .replace("      enforcement: enforce", "      allowedModes: [eso]\n      enforcement: audit");
        let cfg = Config::from_yaml(&yaml, "t").unwrap();
        let body = serde_json::to_vec(&request(
            pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"})),
            "CREATE",
            "Pod",
            "ns",
        ))
        .unwrap();
        let out = review(&body, &cfg).unwrap();
        assert_eq!(out.outcome, "injected");
        let hit = out.policy.expect("audit-level violation reported");
        assert_eq!((hit.rule.as_str(), hit.enforcement), ("default", crate::config::policy::Enforcement::Audit));
        let clean = review(&body, &Config::builtin().unwrap()).unwrap();
        assert!(clean.policy.is_none());
    }

    #[test]
    fn the_hand_written_answer_escapes_what_it_echoes() {
        let uid = "a\"b\\c\nd\u{1}é/</script>";
        let body = response_body(uid, false, Some("bad \"value\"\n"), None, &["w\"1".to_string()]);
        let a: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(a["response"]["uid"], uid);
        assert_eq!(a["response"]["status"]["message"], "bad \"value\"\n");
        assert_eq!(a["response"]["warnings"], json!(["w\"1"]));
        let body = response_body("u", true, None, Some(br#"[{"op":"add"}]"#), &[]);
        let a: Value = serde_json::from_slice(&body).unwrap();
        let patch = base64::engine::general_purpose::STANDARD.decode(a["response"]["patch"].as_str().unwrap()).unwrap();
        assert_eq!(patch, br#"[{"op":"add"}]"#);
        assert!(a["response"].get("warnings").is_none() && a["response"].get("status").is_none());
    }

    #[test]
    fn an_injected_pod_is_read_whole_and_left_alone() {
        let config = Config::builtin().unwrap();
        let pod = pod(json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z"}));
        let Decision::Allow { patch, .. } = decide::admit_pod(&pod, "ns", &config) else { panic!("denied") };
        let mut patched = pod.clone();
        let ops: json_patch::Patch = serde_json::from_value(serde_json::to_value(&patch).unwrap()).unwrap();
        json_patch::patch(&mut patched, &ops).unwrap();
        let again = answer(&request(patched.clone(), "CREATE", "Pod", "ns"));
        assert_eq!(again["response"]["allowed"], true, "{again}");
        assert!(again["response"].get("patch").is_none(), "{again}");
        // Only the whole pod shows the difference: a field the view skips, changed inside the
        // injected sidecar (native by default: the first init container), is a collision.
        assert_eq!(patched["spec"]["initContainers"][0]["name"], "secretmode-sidecar");
        patched["spec"]["initContainers"][0]["image"] = json!("attacker/agent:latest");
        let tampered = answer(&request(patched, "CREATE", "Pod", "ns"));
        assert_eq!(tampered["response"]["allowed"], false, "{tampered}");
    }

    #[test]
    fn non_object_pod_is_denied() {
        let a = answer(&request(json!("a string"), "CREATE", "Pod", "ns"));
        assert_eq!(a["response"]["allowed"], false);
    }
}
