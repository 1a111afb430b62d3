"""Mesh settings: who else may call customer-features (``data-mesh:consumers``).

Called from ``infra/config.py``; kept apart so the mesh's rules live in one place. A consumer is a
workload identity, ``<namespace>/<service account>``: the SPIFFE principal
``cluster.local/ns/<namespace>/sa/<service account>`` that the ambient mesh's ztunnel proves with
mTLS, and that the AuthorizationPolicy of customer-features admits next to customer-scoring.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from infra.settings import Consumer, MeshSettings

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A ServiceAccount name is a DNS subdomain (RFC 1123), at most 253 characters.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Namespaces whose workloads must never be let in as data consumers: the cluster's own, the mesh's.
RESERVED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "istio-system"})
EXAMPLE = "'[\"analytics/churn-model\"]'"


def parse_consumers(values: Mapping[str, Any], *, project: str, stack: str, own_namespace: str) -> MeshSettings:
    """``data-mesh:consumers``: a list of ``<namespace>/<service account>``, default none."""
    from infra.config import ConfigError  # config imports this module; ConfigError lives there

    key = f"{project}:consumers"

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"config key '{key}': {problem}. "
                           f"Fix: pulumi config set --path '{key}' {EXAMPLE} --stack {stack}")

    raw = values.get("consumers")
    if raw is None:
        return MeshSettings()
    if not isinstance(raw, list):
        raise fail(f"must be a list of '<namespace>/<service account>' strings, got {raw!r}")
    consumers: list[Consumer] = []
    for item in raw:
        if not isinstance(item, str) or item.count("/") != 1:
            raise fail(f"{item!r} is not '<namespace>/<service account>'")
        namespace, account = item.split("/")
        if not _DNS_LABEL.match(namespace):
            raise fail(f"'{namespace}' in '{item}' is not a valid Kubernetes namespace name")
        if not (_DNS_SUBDOMAIN.match(account) and len(account) <= 253):
            raise fail(f"'{account}' in '{item}' is not a valid service account name")
        if namespace in RESERVED_NAMESPACES:
            raise fail(f"'{item}' is in the system namespace {namespace}, never a data consumer")
        if namespace == own_namespace:
            raise fail(f"'{item}' is in the services' own namespace {own_namespace}: only customer-scoring "
                       "calls customer-features there")
        consumer = Consumer(namespace=namespace, service_account=account)
        if consumer in consumers:
            raise fail(f"'{item}' is listed twice")
        consumers.append(consumer)
    return MeshSettings(consumers=tuple(consumers))
