"""customer-scoring's model generations: 2 is retrained with other settings, not a copy of 1, and
both share what the service requires of generations of one endpoint (inputs, classes, as_of)."""

from __future__ import annotations

import hashlib
import json

from flow.artifacts import REPO_ROOT, SCORING_MODEL, artifact_paths, model_stem
from flow.train import GENERATIONS


def _card(generation: str) -> dict:
    return json.loads((REPO_ROOT / SCORING_MODEL / f"{model_stem(generation)}.json").read_text())


def test_generation_2_is_trained_with_other_settings_into_another_model():
    assert set(GENERATIONS) == {"1", "2"}
    one, two = _card("1"), _card("2")
    assert (one["generation"], two["generation"]) == ("1", "2")
    assert one["training"]["params"] != two["training"]["params"]
    assert two["training"]["params"] == GENERATIONS["2"]["params"]
    models = [REPO_ROOT / SCORING_MODEL / f"{model_stem(g)}.onnx" for g in ("1", "2")]
    assert len({hashlib.sha256(path.read_bytes()).hexdigest() for path in models}) == 2


def test_generations_share_inputs_classes_and_snapshot_date():
    one, two = _card("1"), _card("2")
    for key in ("inputs", "classes", "as_of"):
        assert one[key] == two[key], key
    assert two["metrics"]["holdout_auc"] > 0.75


def test_make_data_writes_both_generations():
    names = {path.name for path in artifact_paths()}
    assert {"high-spender.onnx", "high-spender.json", "high-spender-2.onnx", "high-spender-2.json"} <= names
