"""Small stand-ins for the flow's artifacts, written in the same contract (bundle columns, model IO)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from apinode.bundle import write_bundle

REPO = Path(__file__).resolve().parents[2]
NUMERIC = [
    "age",
    "tenure_months",
    "orders_12m",
    "spend_12m",
    "avg_basket",
    "recency_days",
    "distinct_categories",
    "return_rate",
]
CATEGORICAL = {
    "gender": ["F", "M", "X"],
    "region": ["north", "south", "east", "west"],
    "campaign_status": ["active", "lapsed", "never"],
}
AS_OF = "2026-06-30"


def customer_ids(count: int, start: int = 1) -> np.ndarray:
    return np.array([f"C{n:07d}" for n in range(start, start + count)])


def tables(count: int, seed: int = 7) -> tuple[dict, dict]:
    """Demographics and behavior columns for ``count`` customers, C0000001 upward."""
    rng = np.random.default_rng(seed)
    ids = customer_ids(count)
    birth = np.datetime64("1950-01-01") + rng.integers(0, 365 * 55, count).astype("timedelta64[D]")
    signup = np.datetime64("2015-01-01") + rng.integers(0, 365 * 11, count).astype("timedelta64[D]")
    demographics = {
        "customer_id": ids,
        "birthdate": birth.astype(str),
        "gender": rng.choice(CATEGORICAL["gender"], count),
        "region": rng.choice(CATEGORICAL["region"], count),
        "campaign_status": rng.choice(CATEGORICAL["campaign_status"], count),
        "signup_date": signup.astype(str),
        "channel": rng.choice(["web", "store", "app"], count),
        "household_size": rng.integers(1, 6, count).astype(np.int32),
        "income_band": rng.choice(["low", "mid", "high"], count),
    }
    orders = rng.integers(0, 40, count).astype(np.int32)
    spend = np.round(orders * rng.gamma(2.0, 30.0, count), 2)
    behavior = {
        "customer_id": ids,
        "orders_12m": orders,
        "spend_12m": spend,
        "avg_basket": np.round(spend / np.maximum(orders, 1), 2),
        "recency_days": rng.integers(0, 365, count).astype(np.int32),
        "distinct_categories": rng.integers(1, 12, count).astype(np.int32),
        "top_category": rng.choice(["books", "garden", "toys", "food"], count),
        "return_rate": np.round(rng.uniform(0, 0.4, count), 3),
    }
    return demographics, behavior


def tiny_model(path: Path, bias: float = -1.5) -> None:
    """A logistic score over the contract's 11 inputs: label int64 [N], probabilities float32 [N, 2]."""
    weights = np.array(
        [[0.01], [0.005], [0.05], [0.002], [0.001], [-0.004], [0.05], [-2.0]], dtype=np.float32
    )
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in NUMERIC]
    inputs += [helper.make_tensor_value_info(n, TensorProto.STRING, [None, 1]) for n in CATEGORICAL]
    nodes = [
        helper.make_node("Concat", NUMERIC, ["numbers"], axis=1),
        helper.make_node("MatMul", ["numbers", "weights"], ["linear"]),
    ]
    terms = ["linear"]
    for name, values in CATEGORICAL.items():
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                [name],
                [f"{name}_w"],
                domain="ai.onnx.ml",
                keys_strings=values,
                values_floats=[0.3 * (j - 1) for j in range(len(values))],
                default_float=0.0,
            )
        )
        terms.append(f"{name}_w")
    nodes += [
        helper.make_node("Sum", terms + ["bias"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p1"]),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-high-spender",
        inputs,
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        initializer=[
            helper.make_tensor("weights", TensorProto.FLOAT, [8, 1], weights.ravel()),
            helper.make_tensor("bias", TensorProto.FLOAT, [1], [bias]),
            helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    meta = {
        "inputs": [{"name": n, "type": "number"} for n in NUMERIC]
        + [{"name": n, "type": "string"} for n in CATEGORICAL],
        "classes": ["0", "1"],
        "as_of": AS_OF,
        "metrics": {},
    }
    path.with_suffix(".json").write_text(json.dumps(meta))


def model_rows(demographics: dict, behavior: dict) -> dict[str, np.ndarray]:
    """The tiny model's 11 inputs for the fixture customers, derived as the service derives them."""
    import datetime as dt

    from apinode.transforms import months_since, years_since

    as_of = dt.date.fromisoformat(AS_OF)
    numbers = {
        "age": years_since(demographics["birthdate"], as_of),
        "tenure_months": months_since(demographics["signup_date"], as_of),
        **{name: behavior[name] for name in NUMERIC[2:]},
    }
    columns = {name: np.asarray(numbers[name], dtype=np.float32) for name in NUMERIC}
    columns.update({name: np.asarray(demographics[name], dtype=str) for name in CATEGORICAL})
    return columns


def tiny_reference(model_path: Path, demographics: dict, behavior: dict) -> None:
    """The reference flow/ writes, for the tiny model: score percentiles and 100 background rows."""
    import onnxruntime

    from flow.reference import background_rows, percentile_cuts

    columns = model_rows(demographics, behavior)
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    feed = {name: column.reshape(-1, 1) for name, column in columns.items()}
    _, probabilities = session.run(["label", "probabilities"], feed)
    reference = {
        "positive_class": "1",
        "proba_percentiles": percentile_cuts(probabilities[:, 1]),
        "background": background_rows(feed, seed=11),
    }
    model_path.with_suffix(".reference.json").write_text(json.dumps(reference))


def service_dir(root: Path, service: str, count: int = 500) -> Path:
    """A copy of services/<service>/service.yaml next to fixture data (and model, for scoring)."""
    target = root / service
    (target / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "services" / service / "service.yaml", target / "service.yaml")
    demographics, behavior = tables(count)
    write_bundle(target / "data" / "demographics.npz", demographics)
    write_bundle(target / "data" / "behavior.npz", behavior)
    if service == "customer-scoring":
        (target / "model").mkdir(exist_ok=True)
        tiny_model(target / "model" / "high-spender.onnx")
        tiny_reference(target / "model" / "high-spender.onnx", demographics, behavior)
        # Generation 2: the same inputs, another bias, so its answers differ from generation 1's.
        tiny_model(target / "model" / "high-spender-2.onnx", bias=-0.5)
        tiny_reference(target / "model" / "high-spender-2.onnx", demographics, behavior)
    return target


def duplicated_service(root: Path, service: str, duplicated: str, policies: dict[str, str] | None = None) -> tuple[Path, dict]:
    """``service_dir`` whose demographics hold ``duplicated`` on rows 0 and 1 (row 1's own customer
    is gone: the duplicate a bad export produces), each ``policies`` line of service.yaml replaced
    (``{"on_several: fail": "on_several: first"}``; each must be there). Returns the folder and the
    demographics columns."""
    demographics, _ = tables(500)
    demographics["customer_id"] = demographics["customer_id"].copy()
    demographics["customer_id"][1] = duplicated
    target = service_dir(root, service)
    write_bundle(target / "data" / "demographics.npz", demographics)
    definition = target / "service.yaml"
    text = definition.read_text()
    for old, new in (policies or {}).items():
        assert old in text, f"{service}'s service.yaml has no {old!r}"
        text = text.replace(old, new)
    definition.write_text(text)
    return target, demographics
