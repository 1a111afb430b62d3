"""EKS managed add-on versions, pinned per Kubernetes version: the one table a version bump edits.

Only Kubernetes versions in EKS standard support have a row (the config refuses the others):
standard support lasts 14 months after a version's EKS release, then extended support bills six
times the cluster-hour price (docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html).
1.34 leaves standard support on 2026-12-02, 1.35 on 2027-03-27 (EKS release calendar).

Add-on builds differ per Kubernetes version. Before changing a row, list what EKS offers:
    aws eks describe-addon-versions --kubernetes-version 1.36 --addon-name coredns \
        --query 'addons[].addonVersions[].addonVersion'
and keep the row's builds from that list; never "most recent" at run time (an unrelated `up` would
upgrade the add-on).
"""

from __future__ import annotations

VPC_CNI = "vpc-cni"
KUBE_PROXY = "kube-proxy"
COREDNS = "coredns"
POD_IDENTITY_AGENT = "eks-pod-identity-agent"
METRICS_SERVER = "metrics-server"
ADDONS = (VPC_CNI, KUBE_PROXY, POD_IDENTITY_AGENT, COREDNS, METRICS_SERVER)

ADDON_VERSIONS: dict[str, dict[str, str]] = {
    "1.35": {
        VPC_CNI: "v1.21.1-eksbuild.7",
        KUBE_PROXY: "v1.35.3-eksbuild.2",
        POD_IDENTITY_AGENT: "v1.3.10-eksbuild.3",
        COREDNS: "v1.13.2-eksbuild.4",
        METRICS_SERVER: "v0.8.1-eksbuild.5",
    },
    "1.36": {
        VPC_CNI: "v1.22.4-eksbuild.3",
        KUBE_PROXY: "v1.36.0-eksbuild.25",
        POD_IDENTITY_AGENT: "v1.3.10-eksbuild.3",
        COREDNS: "v1.14.3-eksbuild.23",
        METRICS_SERVER: "v0.9.0-eksbuild.11",
    },
}


def addon_version(kubernetes_version: str, addon: str) -> str:
    """The pinned build of an add-on for a Kubernetes version (KeyError: no such row, a bug upstream of here)."""
    return ADDON_VERSIONS[kubernetes_version][addon]
