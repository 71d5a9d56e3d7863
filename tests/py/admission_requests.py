"""Builds examples/admission/<mode>.json from examples/<mode>/deployment.yaml: the
AdmissionReview the API server sends when the ReplicaSet controller creates one of the
Deployment's pods (defaults applied, service-account volume added, no name yet, generateName
set), so `curl --data @examples/admission/<mode>.json .../mutate` sends exactly what a cluster
would.

  python admission_requests.py EXAMPLES_DIR           rewrite the files
  python admission_requests.py EXAMPLES_DIR --check   exit 1 if a file is out of date
"""

import copy
import json
import os
import sys

import yaml

MODES = ["eso", "csi", "init", "sidecar"]
# Fixed so the files are stable; one per mode.
UIDS = {
    "eso": "0d7a6f0e-3c55-4c1b-9f47-2a0c1e5b7a01",
    "csi": "5b1f2e8a-9d3c-4e6f-8a7b-1c2d3e4f5a02",
    "init": "9c8b7a6d-5e4f-4a3b-9c2d-1e0f9a8b7c03",
    "sidecar": "e4d3c2b1-a0f9-4e8d-8c7b-6a5f4e3d2c04",
}
HASH = "7f9c6d5b84"
TOKEN_VOLUME = "kube-api-access-x7k2p"


def pod_from_deployment(deploy):
    template = copy.deepcopy(deploy["spec"]["template"])
    name = deploy["metadata"]["name"]
    namespace = deploy["metadata"]["namespace"]
    meta = template.get("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), "pod-template-hash": HASH}
    pod_meta = {
        "generateName": f"{name}-{HASH}-",
        "namespace": namespace,
        "labels": meta["labels"],
        "annotations": meta.get("annotations", {}),
        "ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": f"{name}-{HASH}",
            "uid": "3f2e1d0c-b9a8-4765-8432-10fedcba9876",
            "controller": True,
            "blockOwnerDeletion": True,
        }],
    }
    spec = template["spec"]
    # What the API server's defaulting and the ServiceAccount admission plugin add before any
    # mutating webhook is called.
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec.setdefault("tolerations", [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ])
    spec.setdefault("volumes", []).append({
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
    for c in spec.get("containers", []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("volumeMounts", []).append({
            "name": TOKEN_VOLUME,
            "readOnly": True,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        })
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec, "status": {}}


def review(mode, deploy):
    pod = pod_from_deployment(deploy)
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UIDS[mode],
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "8c1e5f2a-6b3d-4c7e-9f0a-1b2c3d4e5f60",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def main():
    examples = sys.argv[1]
    check = "--check" in sys.argv[2:]
    stale = []
    for mode in MODES:
        with open(os.path.join(examples, mode, "deployment.yaml"), encoding="utf-8") as f:
            deploy = yaml.safe_load(f)
        text = json.dumps(review(mode, deploy), indent=2) + "\n"
        path = os.path.join(examples, "admission", f"{mode}.json")
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    current = f.read()
            except FileNotFoundError:
                current = None
            if current != text:
                stale.append(path)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print("out of date (regenerate with python tests/py/admission_requests.py examples):", ", ".join(stale))
        sys.exit(1)


if __name__ == "__main__":
    main()
