"""Stack settings for governance: the model dispatch of customer-scoring and the monitoring add-ons.

``data-mesh:modelDispatch``: per prediction endpoint, the share of traffic of each generation
(``{"high-spender": {"1": 90, "2": 10}}``). The generations are the ones the service definition
(``services/customer-scoring/service.yaml``) ships, so a typo or a generation that does not
exist stops the preview with the key and the fix, not the pods at start-up. The weights reach
the runtime as ``APINODE_DISPATCH`` in the service's ConfigMap.

``data-mesh:monitoring``: ``prometheusOperator`` (declare ServiceMonitors and PrometheusRules;
the stack's cluster runs the Prometheus Operator) and ``cloudwatchObservability`` (the EKS
add-on that ships the pods' logs, the query records among them, to CloudWatch).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from infra.settings import GovernanceSettings, ServiceSettings

SCORING = "customer-scoring"
DISPATCH_KEY = "modelDispatch"
MONITORING_KEY = "monitoring"
KEYS = {DISPATCH_KEY, MONITORING_KEY}
SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
_EXAMPLE = "'{\"high-spender\": {\"1\": 90, \"2\": 10}}'"


def declared_generations(service_id: str, services_dir: Path = SERVICES_DIR) -> dict[str, tuple[str, ...]]:
    """Prediction endpoint -> the generation ids its service definition declares, in order."""
    raw = yaml.safe_load((services_dir / service_id / "service.yaml").read_text()) or {}
    version = str(raw.get("version", "1"))
    out = {}
    for name, endpoint in (raw.get("endpoints") or {}).items():
        if isinstance(endpoint, dict) and endpoint.get("type") == "prediction":
            out[str(name)] = tuple(str(g) for g in (endpoint.get("generations") or {version: None}))
    return out


def _dispatch(top, generations: dict[str, tuple[str, ...]]) -> dict[str, tuple[tuple[str, float], ...]]:
    if not top.has(DISPATCH_KEY):
        return {}
    reader = top.child(DISPATCH_KEY, _EXAMPLE)
    reader.only(set(generations))
    parsed = {}
    for endpoint, known in generations.items():
        if not reader.has(endpoint):
            continue
        weights = reader.child(endpoint, "'{\"1\": 90, \"2\": 10}'")
        weights.only(set(known))
        shares = []
        for generation in known:
            value = weights.raw(generation, "10", default=0)
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise weights.fail(generation, f"must be a number >= 0, got {value!r}", "10")
            try:
                number = float(value)
            except ValueError:
                raise weights.fail(generation, f"must be a number >= 0, got {value!r}", "10") from None
            if not number >= 0 or number == float("inf"):
                raise weights.fail(generation, f"must be a number >= 0, got {value!r}", "10")
            shares.append((generation, number))
        if sum(weight for _, weight in shares) <= 0:
            raise weights.fail(known[0], "every generation has weight 0: nothing would answer", "100")
        parsed[endpoint] = tuple(shares)
    return parsed


def parse_governance(top, services: tuple[ServiceSettings, ...]) -> tuple[tuple[ServiceSettings, ...],
                                                                           GovernanceSettings]:
    """The governance settings, and the services with the runtime variables those settings imply."""
    dispatch = _dispatch(top, declared_generations(SCORING))
    monitoring = top.child(MONITORING_KEY, "'{\"prometheusOperator\": true}'", default={})
    monitoring.only({"prometheusOperator", "cloudwatchObservability"})
    settings = GovernanceSettings(
        model_dispatch=dispatch,
        prometheus_operator=monitoring.boolean("prometheusOperator", "true", default=False),
        cloudwatch_observability=monitoring.boolean("cloudwatchObservability", "true", default=False),
    )
    return tuple(_with_runtime_env(service, settings) for service in services), settings


def dispatch_env(dispatch: dict[str, tuple[tuple[str, float], ...]]) -> str:
    """``APINODE_DISPATCH`` for the runtime: compact JSON, keys in a fixed order (stable checksum)."""
    document: dict[str, Any] = {
        endpoint: {g: (int(w) if float(w).is_integer() else w) for g, w in weights}
        for endpoint, weights in sorted(dispatch.items())
    }
    return json.dumps(document, separators=(",", ":"))


def _with_runtime_env(service: ServiceSettings, settings: GovernanceSettings) -> ServiceSettings:
    if service.id != SCORING or not settings.model_dispatch:
        return service
    env = (*service.runtime_env, ("APINODE_DISPATCH", dispatch_env(settings.model_dispatch)))
    return dataclasses.replace(service, runtime_env=env)
