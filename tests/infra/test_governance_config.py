"""Per-stack model dispatch (data-mesh:modelDispatch) and monitoring settings: validated against the
generations the service definition ships, and handed to the runtime through the ConfigMap."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from apinode.loader import load_definition
from infra.config import ConfigError, parse_settings, stack_file_config
from infra.mocks import ROOT, run_stack
from infra.render import manifests

P = "data-mesh:"


def _parse(stack: str, edit, tmp_path: Path):
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    edit(document["config"])
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document))
    secrets = {f"{P}databasePassword": "pw"}
    return parse_settings({**stack_file_config(path), **secrets}, stack, frozenset(secrets))


def _dispatch(value: Any):
    return lambda config: config.__setitem__(f"{P}modelDispatch", value)


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (_dispatch({"high-spender": {"1": 50, "3": 50}}), f"{P}modelDispatch.high-spender.3",
         ["not a setting of this program", "pulumi config rm"]),
        (_dispatch({"high-spender": {"1": 90, "2": -10}}), f"{P}modelDispatch.high-spender.2",
         ["must be a number >= 0", "pulumi config set"]),
        (_dispatch({"high-spender": {"1": 0, "2": 0}}), f"{P}modelDispatch.high-spender.1",
         ["nothing would answer"]),
        (_dispatch({"high-spender": {"1": "ninety"}}), f"{P}modelDispatch.high-spender.1",
         ["must be a number >= 0"]),
        (_dispatch({"high-spendr": {"1": 100}}), f"{P}modelDispatch.high-spendr",
         ["did you mean 'data-mesh:modelDispatch.high-spender'"]),
        (_dispatch("90/10"), f"{P}modelDispatch", ["must be an object"]),
        (lambda c: c.__setitem__(f"{P}monitoring", {"prometheusOperator": "yes"}),
         f"{P}monitoring.prometheusOperator", ["true or false"]),
        (lambda c: c.__setitem__(f"{P}monitoring", {"grafana": True}), f"{P}monitoring.grafana",
         ["not a setting of this program"]),
    ],
    ids=["unknown-generation", "negative-weight", "all-zero", "not-a-number", "unknown-endpoint",
         "not-an-object", "monitoring-not-boolean", "monitoring-unknown-key"],
)
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_bad_dispatch_or_monitoring_setting_names_the_key_and_the_fix(stack, edit, key, words, tmp_path):
    with pytest.raises(ConfigError) as caught:
        _parse(stack, edit, tmp_path)
    message = str(caught.value)
    assert f"'{key}'" in message and "pulumi config" in message, message
    for word in words:
        assert word in message, message


@functools.cache
def _configmaps(stack: str) -> dict[str, dict]:
    return {m["metadata"]["name"]: m["data"] for m in manifests(run_stack(stack).resources)
            if m["kind"] == "ConfigMap"}


@pytest.mark.parametrize(("stack", "weights"), [("dev", {"1": 50, "2": 50}), ("prod", {"1": 90, "2": 10})])
def test_the_stacks_dispatch_reaches_the_scoring_runtime_through_its_configmap(stack, weights):
    config = _configmaps(stack)
    assert "APINODE_DISPATCH" not in config["customer-features-config"]
    value = config["customer-scoring-config"]["APINODE_DISPATCH"]
    assert json.loads(value) == {"high-spender": weights}
    # The runtime accepts exactly what the ConfigMap carries, against the committed definition.
    definition = load_definition(ROOT / "services" / "customer-scoring", {"APINODE_DISPATCH": value})
    assert dict(definition.predictions["high-spender"].dispatch) == {g: float(w) for g, w in weights.items()}


def test_without_a_dispatch_setting_the_definition_decides(tmp_path):
    settings = _parse("dev", lambda c: c.pop(f"{P}modelDispatch"), tmp_path)
    assert settings.service("customer-scoring").runtime_env == ()
    assert settings.governance.model_dispatch == {}
    assert settings.governance.prometheus_operator is False


def test_a_dispatch_change_rolls_only_the_scoring_pods(tmp_path):
    """The ConfigMap digest on the pod template changes with the weights (rolling forward or back)."""
    from infra.workload import config_data

    before = _parse("prod", lambda c: None, tmp_path)
    after = _parse("prod", _dispatch({"high-spender": {"1": 0, "2": 100}}), tmp_path)
    scoring = [config_data(s.service("customer-scoring"), s.database, None) for s in (before, after)]
    features = [config_data(s.service("customer-features"), s.database, None) for s in (before, after)]
    assert scoring[0]["APINODE_DISPATCH"] != scoring[1]["APINODE_DISPATCH"]
    assert features[0] == features[1]
    assert copy.deepcopy(scoring[1])["APINODE_DISPATCH"] == '{"high-spender":{"1":0,"2":100}}'
