"""What AWS would answer the mocked program: identities, session contexts, a cluster's kubeconfig.

Kept apart from ``infra/mocks.py`` (the engine side) so each stays small; only the mocks use it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

ACCOUNT_ID = "123456789012"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def deploy_session_arn(stack: str) -> str:
    """Who runs `pulumi up` of a stack: its CI deploy role (docs/cicd.md), as an STS session ARN."""
    return f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/deploy-{stack}/pulumi-up"


def kubeconfig(cluster_name: str, region: str) -> dict[str, Any]:
    """The kubeconfig pulumi-eks builds: exec auth through `aws eks get-token`."""
    server = f"https://{_digest(cluster_name)[:32].upper()}.gr7.{region}.eks.amazonaws.com"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server,
                                                         "certificate-authority-data": "bW9jaw=="}}],
        "contexts": [{"name": "aws", "context": {"cluster": cluster_name, "user": "aws"}}],
        "current-context": "aws",
        "users": [{"name": "aws", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", cluster_name]}}}],
    }


def session_context(arn: str) -> dict[str, Any]:
    """What IAM answers for an ARN: an assumed-role session maps to its role, anything else to itself."""
    match = re.match(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/(.+)/([^/]+)$", arn)
    if not match:
        return {"arn": arn, "issuerArn": arn, "issuerId": "", "issuerName": "", "sessionName": "", "id": arn}
    partition, account, role, session = match.groups()
    return {"arn": arn, "issuerArn": f"arn:{partition}:iam::{account}:role/{role}", "issuerId": "AROAMOCK",
            "issuerName": role.rsplit("/", 1)[-1], "sessionName": session, "id": arn}
