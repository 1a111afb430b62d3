"""The policy pack as the Pulumi CLI runs it: `python -m pulumi.policy` in policy/, spoken to over gRPC.

This is what `pulumi preview --policy-pack policy` does: start the pack, read its port from
stdout, ask for its policies, then send every resource for analysis.
"""
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from policy.mesh_guardrails.pack import PACK_NAME
from policy.mesh_guardrails.rules import RULES, STACK_RULES

PACK_DIR = Path(__file__).resolve().parent.parent
REPO = "aws:ecr/repository:Repository"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


@pytest.fixture(scope="module")
def analyzer():
    # The engine address is only used to log a crash; nothing listens there.
    process = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:9", "."],
                               cwd=PACK_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = process.stdout.readline().strip()
        if not port.isdigit():
            process.kill()
            pytest.fail(f"the policy pack did not start: {process.communicate(timeout=10)[1]}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        process.wait(timeout=10)


def analyze(stub, resource_type: str, props: dict, stack: str) -> list:
    struct = struct_pb2.Struct()
    struct.update(props)
    urn = f"urn:pulumi:{stack}::data-mesh::{resource_type}::thing"
    request = analyzer_pb2.AnalyzeRequest(type=resource_type, properties=struct, urn=urn, name="thing")
    return list(stub.Analyze(request, timeout=30).diagnostics)


def test_pack_serves_every_rule_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == PACK_NAME
    assert [p.name for p in info.policies] == [rule.name for rule in (*RULES, *STACK_RULES)]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}


def test_violations_block_with_the_rule_message(analyzer):
    found = analyze(analyzer, REPO, {"imageTagMutability": "MUTABLE"}, "prod")
    assert {(d.policyName, d.enforcementLevel) for d in found} == {
        ("ecr-scan-on-push", analyzer_pb2.MANDATORY), ("ecr-immutable-tags-in-prod", analyzer_pb2.MANDATORY)}
    assert any("set image_tag_mutability='IMMUTABLE'" in d.message for d in found)


def test_stack_comes_from_the_urn(analyzer):
    repository = {"imageTagMutability": "MUTABLE", "imageScanningConfiguration": {"scanOnPush": True}}
    assert analyze(analyzer, REPO, repository, "dev") == []
    assert [d.policyName for d in analyze(analyzer, REPO, repository, "prod")] == ["ecr-immutable-tags-in-prod"]


def test_image_digest_unknown_during_preview_only_warns(analyzer):
    # Before the first build, `pulumi preview` cannot know the digest: that must not block it.
    container = {"name": "app", "image": UNKNOWN_STRING_VALUE,
                 "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    spec = {"securityContext": {"runAsNonRoot": True}, "automountServiceAccountToken": False,
            "containers": [container]}
    found = analyze(analyzer, DEPLOYMENT, {"spec": {"template": {"spec": spec}}}, "prod")
    assert [(d.policyName, d.enforcementLevel) for d in found] == [("images-by-digest", analyzer_pb2.ADVISORY)]
    assert "during preview" in found[0].message


def test_pack_manifest_runs_python_from_an_ignored_virtualenv():
    manifest = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    venv = PACK_DIR / manifest["runtime"]["options"]["virtualenv"]
    # The CLI builds that virtualenv from requirements.txt; it must never be committed.
    ignored = subprocess.run(["git", "check-ignore", "-q", str(venv / "bin" / "python")], cwd=PACK_DIR)
    assert ignored.returncode == 0, f"{venv.relative_to(PACK_DIR.parent)} is not ignored by git"
    assert "pulumi-policy==" in (PACK_DIR / "requirements.txt").read_text()


def test_stack_rule_runs_over_the_whole_stack(analyzer):
    """`pulumi preview` sends every resource once more to AnalyzeStack: a namespace without default-deny is caught."""
    def resource(resource_type: str, name: str, props: dict) -> analyzer_pb2.AnalyzerResource:
        struct = struct_pb2.Struct()
        struct.update(props)
        return analyzer_pb2.AnalyzerResource(type=resource_type, properties=struct, name=name,
                                             urn=f"urn:pulumi:prod::data-mesh::{resource_type}::{name}")

    spec = {"automountServiceAccountToken": False, "containers": [{"name": "app"}]}
    request = analyzer_pb2.AnalyzeStackRequest(resources=[
        resource(DEPLOYMENT, "app", {"metadata": {"namespace": "shop"}, "spec": {"template": {"spec": spec}}})])
    found = list(analyzer.AnalyzeStack(request, timeout=30).diagnostics)
    assert {d.policyName for d in found} == {"namespace-zero-trust"}
    assert any("namespace 'shop' runs pods without a default-deny NetworkPolicy" in d.message for d in found)
    assert {d.enforcementLevel for d in found} == {analyzer_pb2.MANDATORY}
