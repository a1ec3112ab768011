"""Write the JSON Schema that tests/deploy/test_kserve.py validates deploy/kserve/*.yaml against.

    python deploy/kserve/sdk_schema.py            # -> deploy/kserve/kserve-sdk-0.15.2.schema.json

KServe's CRDs (InferenceService, ServingRuntime) are generated from its Go API types; so is its
Python SDK (`pip install kserve`), whose `kserve/models/*.py` carry, per type, every field's JSON name
(`attribute_map`), type (`openapi_types`) and the fields that must be set. No registry this project
can reach ships the CRD YAML itself, so the schema is built from the SDK's wheel on PyPI (downloaded
with `pip download --no-deps`, read with `ast`, never installed: its pins, e.g. protobuf < 5 and
uvicorn < 0.31, clash with this project's) and written as a JSON Schema: KServe's types strict (no
field the SDK does not know), Kubernetes' types (V1Container, V1ObjectMeta, ...) as references to
the strict Kubernetes schemas that kubernetes-validate ships, resolved when validating.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

KSERVE_VERSION = "0.15.2"
HERE = Path(__file__).resolve().parent
OUT = HERE / f"kserve-sdk-{KSERVE_VERSION}.schema.json"
# Kubernetes' definitions, as kubernetes-validate's strict schemas identify them (their `$id`)
K8S_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
K8S_VERSION = "1.30.0"  # the definitions' names only; tests/deploy/test_kubernetes.py's version
SCALARS = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "object": {},
    "datetime": {"type": "string"},
    "date": {"type": "string"},
}
# The two resources a deployment writes, by kind: their root types in the SDK.
ROOTS = {"InferenceService": "V1beta1InferenceService", "ServingRuntime": "V1alpha1ServingRuntime"}
# Kubernetes types the SDK names by their Python client's class name, and their definitions' names.
K8S_NAMES = {
    "V1ObjectMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "ResourceQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "K8sIoApiAppsV1DeploymentStrategy": "io.k8s.api.apps.v1.DeploymentStrategy",
}


def k8s_definitions(version: str = K8S_VERSION) -> dict:
    """kubernetes-validate's strict Kubernetes definitions (`$id` K8S_DEFINITIONS)."""
    from kubernetes_validate.utils import schema_contents

    return schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)


def wheel_path(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "-d", str(dest), f"kserve=={KSERVE_VERSION}"],
        check=True,
    )  # fmt: skip
    return next(dest.glob(f"kserve-{KSERVE_VERSION}-*.whl"))


def sdk_types(wheel: Path) -> dict[str, dict]:
    """{class name: {"fields": {json name: type string}, "required": [json names]}} of kserve/models."""
    types = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not re.fullmatch(r"kserve/models/\w+\.py", name) or name.endswith("__init__.py"):
                continue
            source = zf.read(name).decode()
            for node in ast.parse(source).body:
                if not isinstance(node, ast.ClassDef):
                    continue
                assigned = {
                    stmt.targets[0].id: ast.literal_eval(stmt.value)
                    for stmt in node.body
                    if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id in ("openapi_types", "attribute_map")
                }  # fmt: skip
                if "openapi_types" not in assigned:
                    continue
                names = assigned["attribute_map"]
                required = re.findall(r"Invalid value for `(\w+)`, must not be `None`", source)
                types[node.name] = {
                    "fields": {names[attr]: kind for attr, kind in assigned["openapi_types"].items()},
                    "required": sorted(names[attr] for attr in set(required) if attr in names),
                }
    return types


def k8s_definition(name: str, definitions: set[str]) -> str | None:
    """The Kubernetes definition of a client class name: V1Container -> io.k8s.api.core.v1.Container."""
    if name in K8S_NAMES:
        return K8S_NAMES[name]
    match = re.fullmatch(r"V(\d)(alpha\d|beta\d)?(\w+)", name)
    if not match:
        return None
    suffix = f".v{match[1]}{match[2] or ''}.{match[3]}"
    found = sorted(d for d in definitions if d.endswith(suffix))
    core = [d for d in found if d.startswith("io.k8s.api.core.")]
    return (core or found or [None])[0]


def schema_of(kind: str, types: dict, definitions: set[str], missing: set[str]) -> dict:
    kind = kind.strip()
    if kind in SCALARS:
        return dict(SCALARS[kind])
    if match := re.fullmatch(r"list\[(.+)\]", kind):
        return {"type": "array", "items": schema_of(match[1], types, definitions, missing)}
    if match := re.fullmatch(r"dict\(str, (.+)\)", kind):
        return {"type": "object", "additionalProperties": schema_of(match[1], types, definitions, missing)}
    if kind in types:
        return {"$ref": f"#/$defs/{kind}"}
    definition = k8s_definition(kind, definitions)
    if definition is None:
        missing.add(kind)
        return {}
    return {"$ref": f"{K8S_DEFINITIONS}#/$defs/{definition}"}


def build(types: dict, definitions: set[str]) -> dict:
    missing: set[str] = set()
    defs = {}
    for name, t in sorted(types.items()):
        defs[name] = {
            "type": "object",
            "properties": {f: schema_of(k, types, definitions, missing) for f, k in t["fields"].items()},
            "required": t["required"],
            "additionalProperties": False,
        }
    if missing:
        print(f"types left unchecked (no definition found): {', '.join(sorted(missing))}", file=sys.stderr)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": f"KServe {KSERVE_VERSION}'s resources as its Python SDK (PyPI "
        f"kserve=={KSERVE_VERSION}, kserve/models) types them; written by deploy/kserve/sdk_schema.py. "
        "Kubernetes types: references to the strict Kubernetes definitions kubernetes-validate ships.",
        "roots": ROOTS,
        "$defs": defs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="the kserve wheel (default: pip download it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    definitions = set(k8s_definitions()["$defs"])
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or wheel_path(Path(tmp))
        schema = build(sdk_types(wheel), definitions)
    args.out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"{args.out}: {len(schema['$defs'])} KServe types from {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
