"""Structural checks of the custom resources the chart renders and the examples ship, written
from the published CRDs of each project (field names, required fields, enums, types). Not the
full CRD schemas, which no PyPI package here ships; enough to catch a wrong apiVersion, a
misspelt or misplaced field, a missing required field or a wrong type.

  python crd_check.py FILE...   prints {"checked": N, "problems": ["file: kind path: message"]}
                                as JSON; exits 1 on any problem or when nothing was checked.
                                Objects of kinds not listed here are a problem too, so nothing
                                passes unchecked.
"""

import json
import sys

import jsonschema
import yaml

STR = {"type": "string"}
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}


def obj(props, required=(), extra=False):
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": extra}


META = obj({"name": STR, "namespace": STR, "labels": {"type": "object"}, "annotations": {"type": "object"}}, ["name"])


def resource(spec, namespaced=True):
    meta = dict(META)
    if namespaced:
        meta = {**META, "required": ["name", "namespace"]}
    return obj({"apiVersion": STR, "kind": STR, "metadata": meta, "spec": spec}, ["apiVersion", "kind", "metadata", "spec"])


ISSUER_REF = obj({"name": STR, "kind": STR, "group": STR}, ["name"])
PRIVATE_KEY = obj({
    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
    "size": {"type": "integer"},
    "encoding": {"enum": ["PKCS1", "PKCS8"]},
    "rotationPolicy": {"enum": ["Never", "Always"]},
})
USAGES = {"type": "array", "items": {"enum": [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}}

# cert-manager.io/v1
CERTIFICATE = resource(obj({
    "secretName": STR, "issuerRef": ISSUER_REF, "commonName": STR, "dnsNames": {"type": "array", "items": STR},
    "ipAddresses": {"type": "array", "items": STR}, "duration": DURATION, "renewBefore": DURATION,
    "isCA": {"type": "boolean"}, "usages": USAGES, "privateKey": PRIVATE_KEY,
    "secretTemplate": {"type": "object"}, "subject": {"type": "object"},
}, ["secretName", "issuerRef"]))
ISSUER = resource({"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
    "selfSigned": obj({"crlDistributionPoints": {"type": "array"}}),
    "ca": obj({"secretName": STR, "crlDistributionPoints": {"type": "array"}}, ["secretName"]),
    "acme": {"type": "object"}, "vault": {"type": "object"}, "venafi": {"type": "object"},
}, "additionalProperties": False})

# external-secrets.io/v1
STORE_REF = obj({"name": STR, "kind": {"enum": ["SecretStore", "ClusterSecretStore"]}})
EXTERNAL_SECRET = resource(obj({
    "refreshInterval": DURATION, "refreshPolicy": {"enum": ["CreatedOnce", "Periodic", "OnChange"]},
    "secretStoreRef": STORE_REF,
    "target": obj({"name": STR, "creationPolicy": {"enum": ["Owner", "Orphan", "Merge", "None"]},
                   "deletionPolicy": {"enum": ["Delete", "Merge", "Retain"]}, "template": {"type": "object"},
                   "immutable": {"type": "boolean"}}),
    "data": {"type": "array", "items": obj({
        "secretKey": STR,
        "remoteRef": obj({"key": STR, "property": STR, "version": STR,
                          "conversionStrategy": STR, "decodingStrategy": STR, "metadataPolicy": STR}, ["key"]),
        "sourceRef": {"type": "object"},
    }, ["secretKey", "remoteRef"])},
    "dataFrom": {"type": "array"},
}))
VAULT_PROVIDER = obj({
    "server": STR, "path": STR, "version": {"enum": ["v1", "v2"]}, "namespace": STR, "caBundle": STR,
    "caProvider": {"type": "object"}, "readYourWrites": {"type": "boolean"}, "forwardInconsistent": {"type": "boolean"},
    "auth": obj({
        "kubernetes": obj({"mountPath": STR, "role": STR, "serviceAccountRef": obj({"name": STR, "audiences": {"type": "array"}}, ["name"]),
                           "secretRef": {"type": "object"}}, ["mountPath", "role"]),
        "tokenSecretRef": {"type": "object"}, "appRole": {"type": "object"}, "jwt": {"type": "object"},
        "cert": {"type": "object"}, "iam": {"type": "object"}, "ldap": {"type": "object"}, "userPass": {"type": "object"},
    }),
}, ["server"])
SECRET_STORE = resource(obj({
    "provider": {"type": "object", "minProperties": 1, "maxProperties": 1,
                 "properties": {"vault": VAULT_PROVIDER, "aws": {"type": "object"}}, "additionalProperties": {"type": "object"}},
    "refreshInterval": {"type": "integer"}, "retrySettings": {"type": "object"}, "controller": STR, "conditions": {"type": "array"},
}, ["provider"]))

# secrets-store.csi.x-k8s.io/v1
SECRET_PROVIDER_CLASS = resource(obj({
    "provider": STR,
    "parameters": {"type": "object", "additionalProperties": STR},
    "secretObjects": {"type": "array", "items": obj({
        "secretName": STR, "type": STR, "labels": {"type": "object"}, "annotations": {"type": "object"},
        "data": {"type": "array", "items": obj({"key": STR, "objectName": STR})}}, ["secretName", "type"])},
}, ["provider"]))

# monitoring.coreos.com/v1
SERVICE_MONITOR = resource(obj({
    "selector": obj({"matchLabels": {"type": "object"}, "matchExpressions": {"type": "array"}}),
    "namespaceSelector": obj({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": STR}}),
    "endpoints": {"type": "array", "items": obj({
        "port": STR, "targetPort": {}, "path": STR, "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": DURATION, "scrapeTimeout": DURATION, "tlsConfig": {"type": "object"},
        "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"}, "honorLabels": {"type": "boolean"}})},
    "jobLabel": STR, "podTargetLabels": {"type": "array"}, "targetLabels": {"type": "array"},
}, ["selector"]))
POD_MONITOR = resource(obj({
    "selector": obj({"matchLabels": {"type": "object"}, "matchExpressions": {"type": "array"}}),
    "namespaceSelector": obj({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": STR}}),
    "podMetricsEndpoints": {"type": "array", "items": obj({
        "port": STR, "portNumber": {"type": "integer"}, "path": STR, "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": DURATION, "scrapeTimeout": DURATION, "relabelings": {"type": "array"},
        "metricRelabelings": {"type": "array"}, "honorLabels": {"type": "boolean"}})},
    "jobLabel": STR, "podTargetLabels": {"type": "array"},
}, ["selector"]))
RULE = {"type": "object", "additionalProperties": False, "required": ["expr"],
        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
        "properties": {"alert": STR, "record": STR, "expr": {"type": ["string", "integer"]}, "for": DURATION,
                       "keep_firing_for": DURATION,
                       "labels": {"type": "object", "additionalProperties": STR},
                       "annotations": {"type": "object", "additionalProperties": STR}}}
PROMETHEUS_RULE = resource(obj({"groups": {"type": "array", "items": obj({
    "name": STR, "interval": DURATION, "rules": {"type": "array", "items": RULE},
    "partial_response_strategy": STR, "limit": {"type": "integer"}, "labels": {"type": "object"}}, ["name"])}}))

SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): CERTIFICATE,
    ("cert-manager.io/v1", "Issuer"): ISSUER,
    ("external-secrets.io/v1", "ExternalSecret"): EXTERNAL_SECRET,
    ("external-secrets.io/v1", "SecretStore"): SECRET_STORE,
    ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"): SECRET_PROVIDER_CLASS,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
}


def main():
    problems = []
    checked = 0
    for path in sys.argv[1:]:
        try:
            with open(path, encoding="utf-8") as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
        except (OSError, yaml.YAMLError) as e:
            problems.append(f"{path}: cannot read: {e}")
            continue
        for doc in docs:
            if not isinstance(doc, dict):
                problems.append(f"{path}: not an object")
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            schema = SCHEMAS.get(key)
            if schema is None:
                problems.append(f"{path}: no schema for {key[0]} {key[1]}")
                continue
            for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
                where = "/".join(str(p) for p in error.absolute_path)
                problems.append(f"{path}: {key[1]} {where}: {error.message}")
            checked += 1
    json.dump({"checked": checked, "problems": problems}, sys.stdout, indent=1)
    print()
    sys.exit(1 if problems or checked == 0 else 0)


if __name__ == "__main__":
    main()
