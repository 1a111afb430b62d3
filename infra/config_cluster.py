"""Cluster lifecycle settings: Kubernetes version, who reaches the API server, protection, logs, database CA.

Called from ``infra/config.py`` with its reader; each function fails with a ``ConfigError`` that
names the key and the ``pulumi config`` fix, before any resource is declared.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from infra.addon_versions import ADDON_VERSIONS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The values CloudWatch Logs accepts for retentionInDays (PutRetentionPolicy API reference).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)
VERIFYING_SSL_MODES = ("verify-ca", "verify-full")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def kubernetes_version(top: Any) -> str:
    """A version in EKS standard support with a pinned add-on row; anything else is a config error."""
    supported = tuple(ADDON_VERSIONS)
    value = top.raw("kubernetesVersion", supported[-1])
    version = str(value)
    if version not in supported:
        raise top.fail("kubernetesVersion", f"'{version}' is not a Kubernetes version this program supports: "
                       f"one of {', '.join(supported)} (in EKS standard support, with add-on versions pinned in "
                       "infra/addon_versions.py); older versions run in extended support at six times the "
                       "cluster-hour price", supported[0])
    return version


def api_access(top: Any, public_cidrs: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(private CIDRs, security group ids) admitted on tcp/443 to the cluster security group."""
    example = "'{\"privateCidrs\": [\"10.50.0.0/16\"]}'"
    access = top.child("apiAccess", example, default={})
    access.only({"privateCidrs", "securityGroupIds"})
    cidrs = access.cidrs("privateCidrs", "'[\"10.50.0.0/16\"]'", default=[])
    for cidr in cidrs:
        if not ipaddress.IPv4Network(cidr).is_private:
            raise access.fail("privateCidrs", f"{cidr} is a public range; the private endpoint is reached from "
                              "the VPC or a connected network (public ranges go in data-mesh:publicEndpointCidrs)",
                              "'[\"10.50.0.0/16\"]'")
    groups = access.strings("securityGroupIds", "'[\"sg-0123456789abcdef0\"]'", default=[])
    for group in groups:
        if not _SECURITY_GROUP.match(group):
            raise access.fail("securityGroupIds", f"'{group}' is not a security group id like sg-0123456789abcdef0",
                              "'[\"sg-0123456789abcdef0\"]'")
    if not (public_cidrs or cidrs or groups):
        raise access.fail("privateCidrs", "is empty and so is data-mesh:publicEndpointCidrs: nothing could reach "
                          "the Kubernetes API (the cluster security group admits only itself), so every Kubernetes "
                          "resource would fail; list the network the deploying runner is in", example)
    return cidrs, groups


def protect(top: Any) -> bool:
    """Whether the cluster, its KMS key and the ECR repositories refuse deletion (on unless turned off)."""
    return top.boolean("protect", "true", default=True)


def log_retention_days(top: Any) -> int:
    """Retention of the control-plane log group /aws/eks/<cluster>/cluster."""
    days = top.integer("clusterLogRetentionDays", "90", default=90, low=1, high=3653)
    if days not in LOG_RETENTION_DAYS:
        nearest = min(LOG_RETENTION_DAYS, key=lambda allowed: abs(allowed - days))
        raise top.fail("clusterLogRetentionDays", f"{days} is not a retention CloudWatch Logs accepts "
                       f"({', '.join(map(str, LOG_RETENTION_DAYS))})", str(nearest))
    return days


def database_ca_bundle(reader: Any, ssl_mode: str) -> str | None:
    """The PEM bundle the database's server certificate is checked against (required by verify-*)."""
    if not reader.has("caBundleFile"):
        if ssl_mode in VERIFYING_SSL_MODES:
            raise reader.fail("caBundleFile", f"is required with sslMode {ssl_mode}: the client checks the server "
                              "certificate against this CA bundle (a PEM file in this repository)",
                              "certs/features-db-ca.pem")
        return None
    relative = reader.string("caBundleFile", "certs/features-db-ca.pem")
    path = (PROJECT_ROOT / relative).resolve()
    if PROJECT_ROOT not in path.parents:
        raise reader.fail("caBundleFile", f"'{relative}' is outside the project directory",
                          "certs/features-db-ca.pem")
    try:
        text = path.read_text()
    except OSError as error:
        raise reader.fail("caBundleFile", f"cannot read '{relative}' ({error.strerror})",
                          "certs/features-db-ca.pem") from None
    if _PEM_CERTIFICATE not in text or "PRIVATE KEY" in text:
        raise reader.fail("caBundleFile", f"'{relative}' must hold PEM certificates only "
                          "(BEGIN CERTIFICATE blocks, no private key)", "certs/features-db-ca.pem")
    return text
