//! What the API server does with a webhook's answer: `VerifyAdmissionResponse` (fact 6,
//! `webhook/request/admissionreview.go`), the denial it turns `allowed: false` into (fact 7,
//! `webhook/errors/statuserror.go`), and the warnings it passes on to the client (fact 8,
//! `endpoints/filters/warning.go` with apimachinery's `NewWarningHeader`).

use std::collections::HashSet;

use serde_json::Value;

use super::Status;

/// The parts of a verified answer the dispatcher uses.
#[derive(Debug)]
pub struct Verified {
    pub allowed: bool,
    /// The decoded JSON patch (an array), when the answer carries one.
    pub patch: Option<Value>,
    pub result: Option<Value>,
    pub warnings: Vec<String>,
    pub audit_annotations: Vec<(String, String)>,
}

/// `VerifyAdmissionResponse(uid, mutating=true, review)` for a v1 review, followed by the
/// dispatcher's own checks (patch type JSONPatch, patch decodable). Every error is a call
/// error, which the webhook's failurePolicy decides on.
pub fn verify(uid: &str, review: &Value) -> Result<Verified, String> {
    let response = review.get("response").filter(|r| r.is_object()).ok_or("webhook response was absent")?;
    let got_uid = response.get("uid").and_then(Value::as_str).unwrap_or_default();
    if got_uid != uid {
        return Err(format!("expected response.uid={uid:?}, got {got_uid:?}"));
    }
    let (api_version, kind) =
        (review["apiVersion"].as_str().unwrap_or_default(), review["kind"].as_str().unwrap_or_default());
    if (api_version, kind) != ("admission.k8s.io/v1", "AdmissionReview") {
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {api_version}, Kind={kind}"
        ));
    }
    let allowed = match response.get("allowed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("failed to call webhook: response.allowed is not a bool: {other}")),
    };
    let patch_text = response.get("patch").and_then(Value::as_str).filter(|p| !p.is_empty());
    let patch_type = response.get("patchType").filter(|t| !t.is_null());
    let patch = match (patch_text, patch_type) {
        (Some(_), None) => return Err("webhook returned response.patch but not response.patchType".into()),
        (None, Some(_)) => return Err("webhook returned response.patchType but not response.patch".into()),
        (None, None) => None,
        (Some(_), Some(t)) if t == "" => return Err(format!("webhook returned invalid response.patchType of {t}")),
        (Some(_), Some(t)) if t != "JSONPatch" => return Err(format!("unsupported patch type {t}")),
        (Some(_), Some(_)) => super::super::patch::from_response(review)
            .map_err(|e| format!("received undecodable patch in webhook response: {e}"))?,
    };
    if let Some(p) = &patch {
        if !p.is_array() {
            return Err(format!("received undecodable patch in webhook response: not a list of operations: {p}"));
        }
    }
    let warnings = match response.get("warnings") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(w)) => w
            .iter()
            .map(|w| {
                w.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("failed to call webhook: warning {w} is not a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("failed to call webhook: response.warnings is not a list: {other}")),
    };
    let audit_annotations = response
        .get("auditAnnotations")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default();
    Ok(Verified { allowed, patch, result: response.get("status").cloned(), warnings, audit_annotations })
}

/// `ToStatusErr(attr, webhookName, result)`: the error a client sees for `allowed: false`.
pub fn denial(webhook: &str, pod_name: &str, result: Option<&Value>) -> Status {
    let result = result.cloned().unwrap_or(Value::Null);
    let mut code = result["code"].as_u64().unwrap_or(0) as u16;
    if code == 0 {
        code = 403;
    }
    let denied_by = format!("admission webhook {webhook:?} denied the request");
    let message = result["message"].as_str().filter(|m| !m.is_empty());
    let reason = result["reason"].as_str().filter(|r| !r.is_empty());
    let message = match (message, reason) {
        (Some(m), _) => format!("{denied_by}: {m}"),
        (None, Some(r)) => format!("{denied_by}: {r}"),
        (None, None) => format!("{denied_by} without explanation"),
    };
    let name = if pod_name.is_empty() { "Unknown" } else { pod_name };
    let prefix =
        if code == 500 { "Internal error occurred".to_string() } else { format!("pods {name:?} is forbidden") };
    let reason =
        reason.map(str::to_string).unwrap_or_else(|| if code == 500 { "InternalError" } else { "Forbidden" }.into());
    Status { code, reason, message: format!("{prefix}: {message}") }
}

/// The warnings a client receives, recorded as the API server's warning recorder writes
/// `Warning` headers: empty texts skipped, duplicates removed, a text with a control
/// character or invalid UTF-8 dropped (`NewWarningHeader` refuses it), and once 4,096 runes
/// would be exceeded, every warning cut to 256 runes and the rest dropped past the limit.
#[derive(Debug, Default)]
pub struct Warnings {
    recorded: HashSet<String>,
    ordered: Vec<String>,
    written: Vec<String>,
    total: usize,
    truncating: bool,
}

const TRUNCATE_AT_TOTAL_RUNES: usize = 4 * 1024;
const TRUNCATE_ITEM_RUNES: usize = 256;

impl Warnings {
    pub fn add(&mut self, text: &str) {
        if text.is_empty() || (self.total >= TRUNCATE_AT_TOTAL_RUNES && self.truncating) {
            return;
        }
        if !self.recorded.insert(text.to_string()) {
            return;
        }
        self.ordered.push(text.to_string());
        let mut text = text.to_string();
        let mut runes = text.chars().count();
        if self.truncating && runes > TRUNCATE_ITEM_RUNES {
            text = text.chars().take(TRUNCATE_ITEM_RUNES).collect();
            runes = TRUNCATE_ITEM_RUNES;
        }
        if !header_ok(&text) {
            return;
        }
        if self.total + runes <= TRUNCATE_AT_TOTAL_RUNES || self.truncating {
            self.total += runes;
            self.written.push(text);
            return;
        }
        // Over the limit: from now on every warning is truncated, the earlier ones too.
        self.truncating = true;
        self.total = 0;
        self.written.clear();
        for w in &self.ordered {
            let cut: String = w.chars().take(TRUNCATE_ITEM_RUNES).collect();
            if header_ok(&cut) {
                self.total += cut.chars().count();
                self.written.push(cut);
            }
        }
    }

    /// What `kubectl` prints, one `Warning: ` line per entry.
    pub fn shown(&self) -> &[String] {
        &self.written
    }
}

/// `NewWarningHeader`'s check on the text: valid UTF-8 (a Rust string is) and no control
/// character (Go's `unicode.IsControl`, the Cc category, as Rust's `char::is_control`).
fn header_ok(text: &str) -> bool {
    !text.chars().any(char::is_control)
}
