"""What the add-on controllers in kube-system share: where they run and the traffic they need."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# The EKS Pod Identity agent, on every node's link-local address (EKS User Guide, "Set up the Amazon
# EKS Pod Identity Agent": 169.254.170.23); the AWS SDKs fetch the pod's credentials there over HTTP.
POD_IDENTITY_AGENT_CIDR = "169.254.170.23/32"


def on_managed_nodes() -> dict[str, Any]:
    """Node affinity of the controllers: the managed group's nodes, never a node Karpenter launched."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
        "matchExpressions": [{"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"},
                             {"key": "eks.amazonaws.com/nodegroup", "operator": "Exists"}]}]}}}


def controller_network_policy(app: str, ingress: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A controller's NetworkPolicy: DNS, HTTPS (the API server, the AWS APIs) and its credentials.

    Needed when the VPC CNI enforces policies in strict mode (a pod no policy selects gets nothing);
    least privilege otherwise. Destinations by port: the policy sees the API server's Service IP.
    """
    return {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": app}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": list(ingress),
        "egress": [
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"},
                       {"port": 443, "protocol": "TCP"}]},
            {"to": [{"ipBlock": {"cidr": POD_IDENTITY_AGENT_CIDR}}], "ports": [{"port": 80, "protocol": "TCP"}]},
        ],
    }
