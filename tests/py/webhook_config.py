"""A MutatingWebhookConfiguration checked the way the API server checks it, and its
matchConditions evaluated with a real CEL implementation (cel-expr-python: Google's CEL C++
runtime), the way the API server decides whether to call the webhook.

  python webhook_config.py CASES.json

CASES.json: {"configs": [FILE, ...], "objects": [{"name": str, "object": {...},
                                                   "request": {...} (optional)}]}

For every config file (YAML, one or more MutatingWebhookConfigurations) prints, as one JSON
document on stdout:

  {"configs": [{"file", "webhooks": N,
                "problems": [{"path", "message"}],
                "calls": [{"object", "webhook", "decision": "call" | "skip" | "reject",
                           "conditions": [{"name", "result": true | false | "error", "error"}]}]}]}

Problems are what `ValidateMutatingWebhookConfiguration` (pkg/apis/admissionregistration/
validation/validation.go) rejects: names, sideEffects, timeoutSeconds 1-30, reinvocation and
match policies, admissionReviewVersions, rules, label selectors, clientConfig, and
matchConditions (at most 64, unique qualified names, each expression compiling with the
admission variables to exactly `bool`). Decisions follow matchconditions/matcher.go: any
condition false skips the webhook; otherwise an evaluation error rejects the request under
`failurePolicy: Fail` and skips the webhook under `Ignore`; otherwise the webhook is called.

Exit code 0 when every config has no problems, 1 otherwise, 2 on unusable input.

What is not the API server's: `request`, `namespaceObject` and `authorizer` are declared as
`dyn` (the API server types them), so a misspelt field of those is found at evaluation, not
compilation; the CEL environment is the standard library only (the API server's has more
extension libraries, so everything that compiles here compiles there); and cel-cpp has no
runtime cost budget, so cost is argued in docs/INSTALL.md, not measured here.
"""

import json
import re
import sys

import yaml
from cel_expr_python import cel

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

SIDE_EFFECTS = {"None", "NoneOnDryRun"}
FAILURE_POLICIES = {"Ignore", "Fail"}
MATCH_POLICIES = {"Exact", "Equivalent"}
REINVOCATION_POLICIES = {"Never", "IfNeeded"}
OPERATIONS = {"*", "CREATE", "UPDATE", "DELETE", "CONNECT"}
SCOPES = {"*", "Cluster", "Namespaced"}
SELECTOR_OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}
ACCEPTED_REVIEW_VERSIONS = {"v1", "v1beta1"}
MAX_MATCH_CONDITIONS = 64

# The variables the API server declares for matchConditions (plugin/cel/compile.go,
# HasAuthorizer true, no params). `object` and `oldObject` are dyn there too.
VARIABLES = {
    "object": cel.Type.DYN,
    "oldObject": cel.Type.DYN,
    "request": cel.Type.DYN,
    "namespaceObject": cel.Type.DYN,
    "authorizer": cel.Type.DYN,
}
ENV = cel.NewEnv(variables=VARIABLES)


def is_dns1123_label(s):
    return isinstance(s, str) and len(s) <= 63 and bool(DNS1123_LABEL.match(s))


def is_dns1123_subdomain(s):
    return isinstance(s, str) and 0 < len(s) <= 253 and all(is_dns1123_label(p) for p in s.split("."))


def is_dns1035_label(s):
    return isinstance(s, str) and len(s) <= 63 and bool(DNS1035_LABEL.match(s))


def qualified_name_errors(s):
    """apimachinery's IsQualifiedName: [prefix/]name, name <= 63, prefix a DNS-1123 subdomain."""
    if not isinstance(s, str) or not s:
        return ["must be a non-empty string"]
    parts = s.split("/")
    if len(parts) > 2:
        return ["a qualified name has at most one '/'"]
    errors = []
    if len(parts) == 2:
        prefix, name = parts
        if not is_dns1123_subdomain(prefix):
            errors.append(f"prefix {prefix!r} must be a DNS-1123 subdomain")
    else:
        name = parts[0]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append(f"name part must be no more than 63 characters (is {len(name)})")
    elif not QUALIFIED_NAME.match(name):
        errors.append("name part must consist of alphanumerics, '-', '_' or '.', and start and end alphanumeric")
    return errors


def is_fully_qualified_name(s):
    """apimachinery's IsFullyQualifiedName: a DNS-1123 subdomain with at least three segments."""
    return is_dns1123_subdomain(s) and len(s.split(".")) >= 3


def is_label_value(s):
    return isinstance(s, str) and len(s) <= 63 and bool(LABEL_VALUE.match(s))


class Checker:
    def __init__(self):
        self.problems = []

    def add(self, path, message):
        self.problems.append({"path": path, "message": message})

    def one_of(self, path, value, allowed, required=False):
        if value is None:
            if required:
                self.add(path, f"required, one of {sorted(allowed)}")
        elif value not in allowed:
            self.add(path, f"{value!r} not supported, one of {sorted(allowed)}")

    def wildcard_list(self, path, values, allowed=None):
        if not isinstance(values, list) or not values:
            self.add(path, "required, a non-empty list")
            return
        if "*" in values and len(values) > 1:
            self.add(path, "if '*' is present, it must be the only entry")
        for i, v in enumerate(values):
            if allowed is not None and v not in allowed:
                self.add(f"{path}[{i}]", f"{v!r} not supported")

    def selector(self, path, sel):
        if sel is None:
            return
        if not isinstance(sel, dict):
            self.add(path, "must be a label selector object")
            return
        for key, value in (sel.get("matchLabels") or {}).items():
            for e in qualified_name_errors(key):
                self.add(f"{path}.matchLabels", f"key {key!r}: {e}")
            if not is_label_value(value):
                self.add(f"{path}.matchLabels[{key}]", f"{value!r} is not a valid label value")
        for i, expr in enumerate(sel.get("matchExpressions") or []):
            at = f"{path}.matchExpressions[{i}]"
            for e in qualified_name_errors(expr.get("key")):
                self.add(f"{at}.key", e)
            op = expr.get("operator")
            values = expr.get("values") or []
            self.one_of(f"{at}.operator", op, SELECTOR_OPERATORS, required=True)
            if op in ("In", "NotIn") and not values:
                self.add(f"{at}.values", "must be specified when operator is In or NotIn")
            if op in ("Exists", "DoesNotExist") and values:
                self.add(f"{at}.values", "may not be specified when operator is Exists or DoesNotExist")
            for j, v in enumerate(values):
                if not is_label_value(v):
                    self.add(f"{at}.values[{j}]", f"{v!r} is not a valid label value")

    def client_config(self, path, cc):
        cc = cc or {}
        if ("url" in cc) == ("service" in cc):
            self.add(path, "exactly one of url or service is required")
            return
        if "service" in cc:
            svc = cc["service"] or {}
            if not is_dns1035_label(svc.get("name")):
                self.add(f"{path}.service.name", f"{svc.get('name')!r} must be a DNS-1035 label")
            if not is_dns1123_label(svc.get("namespace")):
                self.add(f"{path}.service.namespace", f"{svc.get('namespace')!r} must be a DNS-1123 label")
            p = svc.get("path")
            if p is not None and (not isinstance(p, str) or not p.startswith("/")):
                self.add(f"{path}.service.path", "must start with '/'")
            port = svc.get("port", 443)
            if not isinstance(port, int) or not 1 <= port <= 65535:
                self.add(f"{path}.service.port", "must be 1-65535")
        elif not isinstance(cc["url"], str) or not cc["url"].startswith("https://"):
            self.add(f"{path}.url", "must be an https URL")

    def match_conditions(self, path, conditions):
        compiled = []
        if conditions is None:
            return compiled
        if len(conditions) > MAX_MATCH_CONDITIONS:
            self.add(path, f"must have at most {MAX_MATCH_CONDITIONS} items, has {len(conditions)}")
        seen = set()
        for i, mc in enumerate(conditions):
            at = f"{path}[{i}]"
            name = mc.get("name")
            if not name:
                self.add(f"{at}.name", "required")
            else:
                for e in qualified_name_errors(name):
                    self.add(f"{at}.name", f"{name!r}: {e}")
                if name in seen:
                    self.add(f"{at}.name", f"duplicate {name!r}")
                seen.add(name)
            expression = (mc.get("expression") or "").strip()
            if not expression:
                self.add(f"{at}.expression", "required")
                compiled.append((name, None))
                continue
            program = compile_condition(expression)
            if isinstance(program, str):
                self.add(f"{at}.expression", program)
                program = None
            compiled.append((name, program))
        return compiled

    def webhook(self, path, hook):
        name = hook.get("name")
        if not is_fully_qualified_name(name):
            self.add(f"{path}.name", f"{name!r} must be a DNS-1123 subdomain of at least three segments")
        versions = hook.get("admissionReviewVersions") or []
        if not versions:
            self.add(f"{path}.admissionReviewVersions", "required")
        if len(set(versions)) != len(versions):
            self.add(f"{path}.admissionReviewVersions", "duplicate version")
        for v in versions:
            if not is_dns1035_label(v):
                self.add(f"{path}.admissionReviewVersions", f"{v!r} must be a DNS-1035 label")
        if versions and not ACCEPTED_REVIEW_VERSIONS & set(versions):
            self.add(f"{path}.admissionReviewVersions", "must include v1 or v1beta1")
        self.one_of(f"{path}.sideEffects", hook.get("sideEffects"), SIDE_EFFECTS, required=True)
        self.one_of(f"{path}.failurePolicy", hook.get("failurePolicy"), FAILURE_POLICIES)
        self.one_of(f"{path}.matchPolicy", hook.get("matchPolicy"), MATCH_POLICIES)
        self.one_of(f"{path}.reinvocationPolicy", hook.get("reinvocationPolicy"), REINVOCATION_POLICIES)
        timeout = hook.get("timeoutSeconds")
        if timeout is not None and (not isinstance(timeout, int) or not 1 <= timeout <= 30):
            self.add(f"{path}.timeoutSeconds", f"{timeout!r}: the timeout value must be between 1 and 30 seconds")
        for i, rule in enumerate(hook.get("rules") or []):
            at = f"{path}.rules[{i}]"
            self.wildcard_list(f"{at}.operations", rule.get("operations"), OPERATIONS)
            self.wildcard_list(f"{at}.apiGroups", rule.get("apiGroups"))
            self.wildcard_list(f"{at}.apiVersions", rule.get("apiVersions"))
            if "" in (rule.get("apiVersions") or []):
                self.add(f"{at}.apiVersions", "an empty version is not allowed")
            self.wildcard_list(f"{at}.resources", rule.get("resources"))
            self.one_of(f"{at}.scope", rule.get("scope"), SCOPES)
        self.selector(f"{path}.namespaceSelector", hook.get("namespaceSelector"))
        self.selector(f"{path}.objectSelector", hook.get("objectSelector"))
        self.client_config(f"{path}.clientConfig", hook.get("clientConfig"))
        return self.match_conditions(f"{path}.matchConditions", hook.get("matchConditions"))


def compile_condition(expression):
    """A compiled program, or the reason the API server would refuse the expression."""
    try:
        program = ENV.compile(expression)
    except RuntimeError as e:
        return f"compilation failed: {e}"
    if program.return_type() != cel.Type.BOOL:
        return f"must evaluate to bool but got {program.return_type().name().lower()}"
    return program


def evaluate(program, obj, request):
    """True, False, or the error message of a failed evaluation."""
    try:
        value = program.eval(data={
            "object": obj,
            "oldObject": None,
            "request": request,
            "namespaceObject": None,
            "authorizer": None,
        })
    except RuntimeError as e:
        return str(e)
    if value.type() == cel.Type.BOOL:
        return value.value()
    return f"{value.type().name()}: {value.value()}"


def default_request(obj):
    """What the API server puts in `request` for a pod CREATE (fact 4)."""
    meta = obj.get("metadata") or {}
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": meta.get("name", ""), "namespace": meta.get("namespace", "default"),
        "operation": "CREATE", "dryRun": False,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                     "groups": ["system:serviceaccounts", "system:authenticated"]},
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }


def check_config(path, objects):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    checker = Checker()
    calls = []
    webhooks = 0
    for doc in docs:
        if not isinstance(doc, dict):
            checker.add("", "not an object")
            continue
        if doc.get("apiVersion") != "admissionregistration.k8s.io/v1" or doc.get("kind") != "MutatingWebhookConfiguration":
            checker.add("", f"not an admissionregistration.k8s.io/v1 MutatingWebhookConfiguration: {doc.get('kind')}")
            continue
        if not is_dns1123_subdomain((doc.get("metadata") or {}).get("name")):
            checker.add("metadata.name", "must be a DNS-1123 subdomain")
        names = set()
        for i, hook in enumerate(doc.get("webhooks") or []):
            webhooks += 1
            if hook.get("name") in names:
                checker.add(f"webhooks[{i}].name", f"duplicate {hook.get('name')!r}")
            names.add(hook.get("name"))
            compiled = checker.webhook(f"webhooks[{i}]", hook)
            fail = hook.get("failurePolicy", "Fail") == "Fail"
            for case in objects:
                obj = case["object"]
                request = case.get("request") or default_request(obj)
                results = []
                for name, program in compiled:
                    if program is None:
                        results.append({"name": name, "result": "error", "error": "not compiled"})
                        continue
                    r = evaluate(program, obj, request)
                    if isinstance(r, bool):
                        results.append({"name": name, "result": r, "error": None})
                    else:
                        results.append({"name": name, "result": "error", "error": r})
                if any(r["result"] is False for r in results):
                    decision = "skip"
                elif any(r["result"] == "error" for r in results):
                    decision = "reject" if fail else "skip"
                else:
                    decision = "call"
                calls.append({"object": case["name"], "webhook": hook.get("name"),
                              "decision": decision, "conditions": results})
    if webhooks == 0:
        checker.add("", "no webhooks")
    return {"file": path, "webhooks": webhooks, "problems": checker.problems, "calls": calls}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    if not cases.get("configs"):
        print("no configs given", file=sys.stderr)
        sys.exit(2)
    objects = cases.get("objects") or []
    reports = [check_config(path, objects) for path in cases["configs"]]
    json.dump({"configs": reports}, sys.stdout, indent=1)
    print()
    sys.exit(1 if any(r["problems"] for r in reports) else 0)


if __name__ == "__main__":
    main()
