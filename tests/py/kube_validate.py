"""Strict schema validation of Kubernetes objects with the kubernetes-validate library, reported
as JSON so callers never read the verdict out of log text.

  python kube_validate.py --version V [--version V ...] FILE...

Every YAML or JSON document in every FILE is validated with `strict=True` (unknown fields are
errors) against each version. Prints one JSON object on stdout:

  {"validated": N, "problems": [{"file", "kind", "name", "version", "path", "message"}]}

`validated` counts (document, version) pairs that passed. Exits 1 if there is any problem or
if nothing was validated (an empty file list or files with no documents); a document whose kind
has no schema in that version is a problem too, never a silent pass as in the CLI's warning.
"""

import argparse
import json
import sys

import yaml
import kubernetes_validate
from kubernetes_validate import utils


def documents(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        return [json.loads(text)]
    return [d for d in yaml.safe_load_all(text) if d is not None]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--version", action="append", required=True)
    p.add_argument("files", nargs="*")
    args = p.parse_args()

    validated = 0
    problems = []

    def problem(path, doc, version, where, message):
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        problems.append({
            "file": path,
            "kind": doc.get("kind") if isinstance(doc, dict) else None,
            "name": (meta or {}).get("name") or (meta or {}).get("generateName"),
            "version": version,
            "path": where,
            "message": message,
        })

    for path in args.files:
        try:
            docs = documents(path)
        except (OSError, ValueError, yaml.YAMLError) as e:
            problem(path, {}, None, "", f"cannot read: {e}")
            continue
        for doc in docs:
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                problem(path, doc if isinstance(doc, dict) else {}, None, "", "not a Kubernetes object")
                continue
            for version in args.version:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    validated += 1
                except utils.ValidationError as e:
                    where = ".".join(str(x) for x in e.absolute_path)
                    problem(path, doc, version, where, e.message)
                except (utils.SchemaNotFoundError, utils.VersionNotSupportedError,
                        utils.InvalidSchemaError) as e:
                    problem(path, doc, version, "", e.message)
    json.dump({"validated": validated, "problems": problems}, sys.stdout, indent=1)
    print()
    sys.exit(1 if problems or validated == 0 else 0)


if __name__ == "__main__":
    main()
