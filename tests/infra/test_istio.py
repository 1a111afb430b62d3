"""Istio ambient as both stacks declare it: pinned charts in Istio's order, ambient profile, STRICT mTLS.

Facts and where they come from (re-check them on an Istio upgrade):
- install order and values: Istio, docs/ambient/install/helm ("base", "istiod --set profile=ambient",
  "cni --set profile=ambient", "ztunnel");
- chained CNI on EKS: manifests/charts/istio-cni/values.yaml (``cni.chained``) and
  docs/ambient/install/platform-prerequisites (EKS: no platform override);
- a waypoint is a Gateway API Gateway, so the Gateway API CRDs precede istiod
  (docs/ambient/usage/waypoint);
- Kubernetes support per release: docs/releases/supported-releases (re-check the row on a bump).
"""

from __future__ import annotations

import pytest

from infra.config import KUBERNETES_VERSIONS
from infra.istio import CHART_REPOSITORY, GATEWAY_API_CRDS, ISTIO_VERSIONS, SYSTEM_NAMESPACE, istio_version
from infra.mocks import StackRun

RELEASE = "kubernetes:helm.sh/v3:Release"
PEER_AUTHENTICATION = "kubernetes:security.istio.io/v1:PeerAuthentication"


def releases(run: StackRun) -> dict[str, object]:
    """Istio's releases (the platform add-ons have Helm releases of their own, in kube-system)."""
    return {r.inputs["chart"]: r for r in run.of_type(RELEASE) if r.inputs.get("namespace") == SYSTEM_NAMESPACE}


def test_every_supported_kubernetes_version_has_a_pinned_istio() -> None:
    assert set(ISTIO_VERSIONS) == set(KUBERNETES_VERSIONS)
    assert all(v.count(".") == 2 and v.replace(".", "").isdigit() for v in ISTIO_VERSIONS.values())
    with pytest.raises(ValueError, match="no Istio release pinned for Kubernetes 1.99"):
        istio_version("1.99")


def test_four_charts_pinned_from_istios_repository(stack_run: StackRun) -> None:
    found = releases(stack_run)
    assert set(found) == {"base", "istiod", "cni", "ztunnel"}
    version = ISTIO_VERSIONS[stack_run.config["data-mesh:kubernetesVersion"]]
    for chart, release in found.items():
        assert release.inputs["version"] == version, chart
        assert release.inputs["repositoryOpts"] == {"repo": CHART_REPOSITORY}
        assert release.inputs["namespace"] == SYSTEM_NAMESPACE
        assert release.inputs["atomic"] is True


def test_ambient_profile_and_a_chained_cni(stack_run: StackRun) -> None:
    found = releases(stack_run)
    assert found["istiod"].inputs["values"]["profile"] == "ambient"
    assert found["cni"].inputs["values"]["profile"] == "ambient"
    # Replacing the VPC CNI's conflist instead of chaining behind it would leave pods without addresses.
    assert found["cni"].inputs["values"]["cni"]["chained"] is True


def test_charts_install_in_istios_order(stack_run: StackRun) -> None:
    found = releases(stack_run)
    urn = {chart: release.urn for chart, release in found.items()}
    crds = stack_run.one("kubernetes:yaml/v2:ConfigFile")
    assert crds.inputs["file"] == GATEWAY_API_CRDS and "/v1." in GATEWAY_API_CRDS
    assert urn["base"] in found["istiod"].dependencies and crds.urn in found["istiod"].dependencies
    for agent in ("cni", "ztunnel"):
        assert urn["istiod"] in found[agent].dependencies, f"{agent} before istiod"


def test_istiod_is_highly_available_where_the_services_are(prod: StackRun, dev: StackRun) -> None:
    assert releases(prod)["istiod"].inputs["values"]["pilot"]["autoscaleMin"] == 2
    assert "pilot" not in releases(dev)["istiod"].inputs["values"]


def test_mtls_is_strict_mesh_wide_and_in_the_namespace(stack_run: StackRun) -> None:
    found = {(p.inputs["metadata"]["namespace"], p.inputs["metadata"]["name"]): p
             for p in stack_run.of_type(PEER_AUTHENTICATION)}
    namespace = stack_run.config["data-mesh:namespace"]
    for key in ((SYSTEM_NAMESPACE, "default"), (namespace, "default")):
        assert found[key].inputs["spec"] == {"mtls": {"mode": "STRICT"}}, key
    istiod = releases(stack_run)["istiod"].urn
    assert all(istiod in p.dependencies or any(istiod in stack_run.by_urn(d).dependencies
                                               for d in p.dependencies if d.startswith("urn:"))
               for p in found.values()), "custom resources wait for istiod's webhook"


def test_the_only_exception_to_strict_is_scorings_client_port(stack_run: StackRun) -> None:
    """Clients outside the mesh cannot speak mTLS; ambient honours a port-level PERMISSIVE.

    istio/istio architecture/ambient/peer-authentication.md: a STRICT PeerAuthentication with a
    PERMISSIVE port becomes a ztunnel DENY of unauthenticated traffic except on that port.
    """
    relaxed = [p for p in stack_run.of_type(PEER_AUTHENTICATION) if p.inputs["spec"].get("portLevelMtls")]
    assert len(relaxed) == 1
    spec = relaxed[0].inputs["spec"]
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "customer-scoring"}}
    assert spec["mtls"] == {"mode": "STRICT"} and spec["portLevelMtls"] == {"8080": {"mode": "PERMISSIVE"}}


def test_the_namespace_is_enrolled_and_uses_the_waypoint(stack_run: StackRun) -> None:
    namespace = stack_run.one("kubernetes:core/v1:Namespace", "mesh-namespace")
    assert namespace.inputs["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    assert namespace.inputs["metadata"]["labels"]["istio.io/use-waypoint"] == "waypoint"
    gateway = stack_run.one("kubernetes:gateway.networking.k8s.io/v1:Gateway")
    assert gateway.inputs["spec"]["gatewayClassName"] == "istio-waypoint"
    assert gateway.inputs["spec"]["listeners"] == [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]
    # "all": pod-addressed traffic (a Prometheus scrape) goes through it too, not only Service traffic.
    assert gateway.inputs["metadata"]["labels"]["istio.io/waypoint-for"] == "all"


def test_workloads_wait_for_their_policies_and_the_mesh(stack_run: StackRun) -> None:
    """A pod created before its policies runs unrestricted (or is refused): each Deployment depends on all."""
    namespace = stack_run.config["data-mesh:namespace"]
    policies = {r.urn for r in stack_run.resources if r.type in (
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", "kubernetes:security.istio.io/v1:AuthorizationPolicy",
        PEER_AUTHENTICATION, "kubernetes:gateway.networking.k8s.io/v1:Gateway")
        and r.get("metadata.namespace") in (namespace, SYSTEM_NAMESPACE)}
    assert len(policies) > 10
    agents = {r.urn for r in stack_run.of_type(RELEASE) if r.inputs["chart"] in ("istiod", "cni", "ztunnel")}
    for deployment in stack_run.of_type("kubernetes:apps/v1:Deployment"):
        missing = (policies | agents) - set(deployment.dependencies)
        assert not missing, f"{deployment.name} does not wait for {sorted(missing)}"
