"""The program as a whole: exports, secrets, a clean failure on bad config, and the mock harness itself."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pulumi
import pytest

from infra.config import SERVICE_IDS
from infra.mocks import DUMMY_SECRETS, StackRun, run_program, run_stack, stack_config

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = {"vpcId", "publicSubnetIds", "privateSubnetIds", "clusterName", "kubeconfig", "ecrRepositoryUrls",
           "imageRefs", "serviceEndpoints", "apiKeys"}


def test_stack_exports(stack_run: StackRun) -> None:
    outputs = stack_run.outputs
    assert set(outputs) == EXPORTS
    assert outputs["vpcId"] == "network-vpc-id"
    zones = 2 if stack_run.stack == "dev" else 3
    assert len(outputs["publicSubnetIds"]) == len(outputs["privateSubnetIds"]) == zones
    assert outputs["clusterName"] == f"data-mesh-{stack_run.stack}"
    assert json.loads(outputs["kubeconfig"])["kind"] == "Config"
    for mapping in ("ecrRepositoryUrls", "imageRefs", "serviceEndpoints", "apiKeys"):
        assert sorted(outputs[mapping]) == sorted(SERVICE_IDS), mapping


def test_kubeconfig_and_api_keys_are_secret_outputs(stack_run: StackRun) -> None:
    assert {"kubeconfig", "apiKeys"} <= stack_run.secret_outputs
    assert not {"vpcId", "clusterName", "ecrRepositoryUrls", "imageRefs"} & stack_run.secret_outputs


def test_configured_api_key_reaches_the_secret_output() -> None:
    secrets = {"data-mesh:customerScoringApiKey": DUMMY_SECRETS["data-mesh:customerScoringApiKey"]}
    run = run_stack("dev", secrets=secrets)
    assert run.outputs["apiKeys"]["customer-scoring"] == secrets["data-mesh:customerScoringApiKey"]
    assert "apiKeys" in run.secret_outputs


def test_every_resource_belongs_to_a_component(stack_run: StackRun) -> None:
    components = {r.urn for r in stack_run.resources if r.type.startswith("mesh:")}
    top_level = {r.type for r in stack_run.resources if r.parent not in components}
    assert top_level <= {"mesh:infra:Network", "mesh:infra:Cluster", "mesh:infra:Registry",
                         "mesh:infra:ServiceImage", "mesh:infra:ImagePromotion", "mesh:k8s:ServiceMesh",
                         "mesh:infra:Istio", "mesh:infra:PlatformAddons"}, top_level


def test_kubernetes_resources_use_the_cluster_provider(stack_run: StackRun) -> None:
    provider = stack_run.one("pulumi:providers:kubernetes", "cluster-k8s")
    kubernetes = [r for r in stack_run.resources if r.type.startswith("kubernetes:")]
    assert kubernetes, "the mesh declares no Kubernetes resources"
    assert all(r.provider and r.provider.startswith(provider.urn) for r in kubernetes)


def test_bad_config_fails_main_with_one_clear_error() -> None:
    config = {**stack_config("dev"), "data-mesh:vpcCidr": "10.0.0.0/8"}
    with pytest.raises(pulumi.RunError) as caught:
        run_program("dev", config, program=lambda: runpy.run_path(str(ROOT / "__main__.py")))
    message = str(caught.value)
    assert message.startswith("config key 'data-mesh:vpcCidr': prefix /8")
    assert "pulumi config set" in message
    # RunError is printed by Pulumi without a traceback; no chained provider exception behind it
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_bad_config_declares_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config error stops the run before the first resource: nothing half-declared for `pulumi up`."""
    import infra.mocks

    monitors: list = []

    class KeptMonitor(infra.mocks._RecordingMonitor):
        def __init__(self, mocks) -> None:
            super().__init__(mocks)
            monitors.append(self)

    monkeypatch.setattr(infra.mocks, "_RecordingMonitor", KeptMonitor)
    config = {**stack_config("prod"), "data-mesh:nodeGroup": json.dumps({"instanceTypes": ["m6i.large"],
                                                                          "minSize": 3, "desiredSize": 2,
                                                                          "maxSize": 6})}

    def program() -> None:
        from infra.program import main
        main()

    with pytest.raises(pulumi.RunError, match="data-mesh:nodeGroup.desiredSize"):
        run_program("prod", {**config, **{"data-mesh:databasePassword": "x"}},
                    secret_keys={"data-mesh:databasePassword"}, program=program)
    (monitor,) = monitors
    assert [(r.type, r.name) for r in monitor.captured] == []
    # The same harness does record what a valid run declares, so the empty list above means something.
    run_program("dev", stack_config("dev"), program=program)
    assert len(monitors) == 2 and len(monitors[1].captured) > 50


def test_harness_runs_are_isolated(dev: StackRun) -> None:
    prod_with_override = run_stack("prod", overrides={"data-mesh:natGateways": "single"})
    again = run_stack("dev")
    assert len(prod_with_override.of_type("aws:ec2/natGateway:NatGateway")) == 1
    assert sorted(r.urn for r in again.resources) == sorted(r.urn for r in dev.resources)
    assert all(r.urn.startswith("urn:pulumi:dev::data-mesh::") for r in again.resources)


def test_harness_answers_every_invoke_the_program_makes(stack_run: StackRun) -> None:
    assert stack_run.invocations, "the program must look up zones and ECR credentials"
    assert not stack_run.unanswered, [i.token for i in stack_run.unanswered]


def test_harness_waits_for_every_resource(stack_run: StackRun) -> None:
    # resources declared inside apply() callbacks (subnet zones) and after remote components are all there
    names = {r.name for r in stack_run.resources}
    assert {"cluster-nodes", "cluster-k8s", "network-private-default-0"} <= names
    assert len({r.urn for r in stack_run.resources}) == len(stack_run.resources)
