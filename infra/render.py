"""Write a stack's Kubernetes manifests for offline review, from the program run under mocks.

    python -m infra.render --stack prod --out rendered/prod      (or: make render STACK=prod)

No cloud credentials and no cluster: the program runs against ``infra.mocks``, every Kubernetes
resource it declares is turned back into the manifest Kubernetes would receive (apiVersion, kind,
metadata, spec in camelCase), one YAML file per resource plus ``index.md``. Secret values are
replaced by ``<secret>``. The same ``manifests()`` feeds the schema validation and checkov tests.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from infra.mocks import Captured, StackRun, Unknown

SECRET_PLACEHOLDER = "<secret>"
# Apply order, which is also the reading order: the namespace, its policies, then each service.
KIND_ORDER = ("Namespace", "NetworkPolicy", "ServiceAccount", "ConfigMap", "Secret", "Deployment", "Service",
              "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget")
# Custom resources (Istio, Gateway API) after the built-in kinds: their controllers must run first.
CUSTOM_KIND_ORDER = ("PeerAuthentication", "AuthorizationPolicy", "Gateway")
# A Helm release is not a manifest: its chart, version and values are asserted in tests/infra/test_istio.py.
_NOT_MANIFESTS = ("kubernetes:helm.sh/",)
_TOP_LEVEL = ("apiVersion", "kind", "metadata")
# API groups Kubernetes itself serves; anything else is a Helm release or an add-on's custom resource,
# validated against the add-on's CRD schema (tests/infra/crds) rather than by kubernetes-validate.
BUILT_IN_GROUPS = frozenset({
    "core", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
    "storage.k8s.io", "scheduling.k8s.io", "admissionregistration.k8s.io", "apiextensions.k8s.io",
    "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io", "certificates.k8s.io"})


def api_version(type_token: str) -> str:
    """``kubernetes:apps/v1:Deployment`` -> ``apps/v1``; the core group is plain ``v1``."""
    group_version = type_token.split(":")[1]
    return group_version.removeprefix("core/")


def _sorted(value: Any) -> Any:
    """Keys sorted at every level (as kubectl prints them) so files diff cleanly between runs."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value) if value[key] is not None}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    if isinstance(value, Unknown):
        return "<unknown until pulumi up>"
    return value


def to_manifest(resource: Captured) -> dict[str, Any] | None:
    """The manifest of one captured Kubernetes resource; None for anything else."""
    if not resource.type.startswith("kubernetes:") or not resource.custom \
            or resource.type.startswith(_NOT_MANIFESTS):
        return None
    kind = resource.type.rsplit(":", 1)[1]
    if resource.secret_inputs and kind != "Secret":
        raise ValueError(f"{kind} {resource.name} has secret inputs {sorted(resource.secret_inputs)}: "
                         "secrets belong in a Secret, consumed by reference")
    body = {key: value for key, value in resource.inputs.items() if key not in _TOP_LEVEL}
    if kind == "Secret":
        body = {key: ({item: SECRET_PLACEHOLDER for item in value} if key in ("data", "stringData") else value)
                for key, value in body.items()}
    metadata = dict(resource.inputs.get("metadata") or {})
    metadata.setdefault("name", resource.name)
    return {
        "apiVersion": resource.inputs.get("apiVersion") or api_version(resource.type),
        "kind": resource.inputs.get("kind") or kind,
        "metadata": _sorted(metadata),
        **_sorted(body),
    }


def built_in(manifest: dict[str, Any]) -> bool:
    """A kind of Kubernetes itself, validated by kubernetes-validate; the rest by its CRD schema."""
    group = manifest["apiVersion"].rsplit("/", 1)[0] if "/" in manifest["apiVersion"] else "core"
    return group in BUILT_IN_GROUPS


def _order(manifest: dict[str, Any]) -> tuple[int, str, str]:
    kind = manifest["kind"]
    order = (*KIND_ORDER, *CUSTOM_KIND_ORDER)
    rank = order.index(kind) if kind in order else len(order)
    return rank, manifest["metadata"].get("namespace", ""), manifest["metadata"]["name"]


def manifests(resources: Iterable[Captured]) -> list[dict[str, Any]]:
    """Every Kubernetes manifest of a built-in kind the run declared, in apply order."""
    found = [m for m in (to_manifest(r) for r in resources) if m is not None]
    return sorted(found, key=_order)


def custom_resources(resources: Iterable[Captured]) -> list[dict[str, Any]]:
    """The add-ons' custom resources the run declared (NodePool, EC2NodeClass, IngressClassParams...)."""
    found = [m for m in (to_manifest(r) for r in resources) if m is not None and not built_in(m)]
    return sorted(found, key=lambda m: (m["apiVersion"], m["kind"], m["metadata"]["name"]))


def file_name(manifest: dict[str, Any]) -> str:
    rank = _order(manifest)[0]
    meta = manifest["metadata"]
    # Custom resources of the same name live in several namespaces (PeerAuthentication "default").
    scope = f"{meta['namespace']}-" if manifest["kind"] in CUSTOM_KIND_ORDER and meta.get("namespace") else ""
    return f"{rank:02d}-{manifest['kind'].lower()}-{scope}{meta['name']}.yaml"


def write(stack: str, items: list[dict[str, Any]], out: Path) -> list[Path]:
    """One file per manifest plus index.md; files of an earlier render are replaced."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.yaml"), out / "index.md"]:
        old.unlink(missing_ok=True)
    header = (f"# Stack {stack}: rendered by `make render STACK={stack}` from the Pulumi program under mocks.\n"
              "# For review only: `pulumi up` applies these. Secret values are shown as <secret>.\n")
    paths, rows = [], []
    for manifest in items:
        path = out / file_name(manifest)
        if path.exists():
            raise ValueError(f"two manifests would be written to {path.name}")
        path.write_text(header + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False))
        paths.append(path)
        meta = manifest["metadata"]
        rows.append(f"| [{path.name}]({path.name}) | {manifest['kind']} | {meta['name']} | "
                    f"{meta.get('namespace', '(cluster)')} |")
    index = [f"# Kubernetes manifests of stack `{stack}`", "",
             f"{len(paths)} resources, in apply order. Regenerate with `make render STACK={stack}`.", "",
             "| file | kind | name | namespace |", "|---|---|---|---|", *rows, ""]
    (out / "index.md").write_text("\n".join(index))
    return paths


def render(stack: str, out: Path) -> list[Path]:
    """Run the stack under mocks with its dummy secrets and write its manifests to ``out``."""
    from infra.mocks import run_stack

    run: StackRun = run_stack(stack)
    return write(stack, manifests(run.resources), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.render", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="stack name, reads Pulumi.<stack>.yaml (dev, prod)")
    parser.add_argument("--out", type=Path, help="output folder (default: rendered/<stack>)")
    parser.add_argument("--docs", type=Path, help="also rewrite the stack's connectivity table in this file "
                        "(make render passes docs/kubernetes.md)")
    args = parser.parse_args(argv)
    out = args.out or Path("rendered") / args.stack
    try:
        paths = render(args.stack, out)
        if args.docs is not None:
            from infra.connectivity_table import write_docs

            write_docs(args.stack, args.docs)
            print(f"render: connectivity table of stack {args.stack} written to {args.docs}")
    except Exception as error:  # a config error or a leak check: one line, not a traceback
        print(f"render: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(f"render: wrote {len(paths)} manifests of stack {args.stack} to {out}/ (see {out}/index.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
