"""The peers' side, built from the same rows: Feast repositories (sqlite and Redis online stores) and an MLflow model.

* Feast: feature views ``demographics`` and ``behavior`` holding exactly the
  bundles' columns, materialized from parquet into sqlite, and into Redis (Feast's production
  online store, bench/redis_store.py);
* MLflow: the flow's own pipeline (``flow.train.build_pipeline``), fitted on the
  same customers and split, saved with ``mlflow.sklearn`` so that ``/invocations``
  answers ``predict_proba`` (what our endpoint returns).

Both are rebuilt only when the bundles change (a stamp of their hash).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

DEMOGRAPHICS_FOR_MODEL = ("birthdate", "signup_date", "gender", "region", "campaign_status")
BEHAVIOR_FOR_MODEL = ("orders_12m", "spend_12m", "avg_basket", "recency_days", "distinct_categories", "return_rate")
MODEL_FEATURES = ("age", "tenure_months", "orders_12m", "spend_12m", "avg_basket", "recency_days",
                  "distinct_categories", "return_rate", "gender", "region", "campaign_status")
_STAMP_VERSION = "2"
# We fitted it ourselves a moment ago; skops needs to be told this type may be loaded.
_TREE_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


def feast_refs_for_model() -> list[str]:
    """The 11 feature references the chain asks Feast for (dates become age and tenure in the client)."""
    return [f"demographics:{name}" for name in DEMOGRAPHICS_FOR_MODEL] + [
        f"behavior:{name}" for name in BEHAVIOR_FOR_MODEL]


def read_table(path: Path) -> dict[str, np.ndarray]:
    """A bundle's columns as plain arrays (dictionary-encoded strings decoded)."""
    from apinode.bundle import EncodedColumn, read_bundle

    return {name: (column.decode() if isinstance(column, EncodedColumn) else column)
            for name, column in read_bundle(path).items()}


def _stamp(data_dir: Path) -> str:
    digest = hashlib.sha256(_STAMP_VERSION.encode())
    for name in ("demographics.npz", "behavior.npz"):
        digest.update((data_dir / name).read_bytes())
    return digest.hexdigest()


def _fresh(folder: Path, stamp: str) -> bool:
    marker = folder / "STAMP"
    return marker.exists() and marker.read_text() == stamp


def _frame(columns: dict[str, np.ndarray]):
    import pandas as pd

    frame = pd.DataFrame({name: (values.astype(np.int64) if values.dtype.kind == "i" else values)
                          for name, values in columns.items()})
    frame["event_timestamp"] = pd.Timestamp("2026-06-30", tz="UTC")
    return frame


_FEATURE_STORE_YAML = """\
project: bench
provider: local
registry: data/registry.db
online_store:
{online_store}offline_store:
  type: file
entity_key_serialization_version: 3
auth:
  type: no_auth
"""
SQLITE_STORE = "  type: sqlite\n  path: data/online_store.db\n"


def redis_store(port: int) -> str:
    """Feast's Redis online store (feast/infra/online_stores/redis.py: RedisOnlineStoreConfig)."""
    return f"  type: redis\n  connection_string: 127.0.0.1:{port}\n"


def build_feast(data_dir: Path, repo: Path, online_store: str = SQLITE_STORE, redis=None) -> Path:
    """A Feast repository with both tables materialized into its online store.

    sqlite: the store is a file in the repository. Redis (``redis``: the running
    ``bench.redis_store.RedisServer`` the yaml points at): the rows live in that server, which
    loaded the snapshot of an earlier run at start; rematerialized (and saved) when the data
    changed or the snapshot is missing.
    """
    kind = online_store.split("type: ", 1)[1].split("\n", 1)[0]
    stamp = f"{_stamp(data_dir)}-{kind}"
    if _fresh(repo, stamp) and (redis is None or redis.keys() >= _customers(data_dir)):
        (repo / "feature_store.yaml").write_text(_FEATURE_STORE_YAML.format(online_store=online_store))
        return repo
    os.environ.setdefault("FEAST_USAGE", "False")
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    if redis is not None:
        redis.command("FLUSHALL")
        shutil.rmtree(repo / "data" / "registry.db", ignore_errors=True)
        (repo / "STAMP").unlink(missing_ok=True)
    else:
        shutil.rmtree(repo, ignore_errors=True)
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(_FEATURE_STORE_YAML.format(online_store=online_store))
    kinds = {"i": Int64, "f": Float64, "U": String}
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    views = []
    for table in ("demographics", "behavior"):
        columns = read_table(data_dir / f"{table}.npz")
        parquet = repo / "data" / f"{table}.parquet"
        _frame(columns).to_parquet(parquet, index=False)
        schema = [Field(name=name, dtype=kinds[values.dtype.kind]) for name, values in columns.items()
                  if name != "customer_id"]
        views.append(FeatureView(name=table, entities=[customer], ttl=dt.timedelta(days=36500), schema=schema,
                                 online=True, source=FileSource(path=str(parquet.resolve()),
                                                                timestamp_field="event_timestamp")))
    store = FeatureStore(repo_path=str(repo))
    store.apply([customer, *views])
    store.materialize(dt.datetime(2026, 6, 29, tzinfo=dt.UTC), dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
    if redis is not None:
        if redis.keys() < _customers(data_dir):
            raise RuntimeError(f"Feast materialized {redis.keys()} keys into Redis, not one per customer")
        redis.save()
    (repo / "STAMP").write_text(stamp)
    return repo


def _customers(data_dir: Path) -> int:
    return len(read_table(data_dir / "demographics.npz")["customer_id"])


def model_frame(demographics: dict[str, np.ndarray], behavior: dict[str, np.ndarray]):
    """The 11 model inputs as a DataFrame in MODEL_FEATURES order (numbers as float64)."""
    import pandas as pd

    from flow.features import model_inputs

    inputs = model_inputs(demographics, behavior)
    return pd.DataFrame({name: (inputs[name][:, 0].astype(np.float64) if inputs[name].dtype.kind == "f"
                                else inputs[name][:, 0].astype(object)) for name in MODEL_FEATURES})


def build_mlflow(data_dir: Path, onnx_model: Path, folder: Path) -> tuple[Path, float]:
    """The flow's sklearn pipeline, fitted like the ONNX model, saved for ``mlflow models serve``.

    Returns the model folder and the largest gap between its probabilities and the ONNX model's
    on 2,000 customers (how equivalent the two models are).
    """
    stamp = _stamp(data_dir) + onnx_model.read_bytes().hex()[:64]
    marker = folder / "agreement.json"
    if _fresh(folder, stamp) and marker.exists():
        return folder / "model", json.loads(marker.read_text())["max_abs_diff"]
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from threadpoolctl import threadpool_limits

    from flow import constants as c
    from flow.population import generate_population
    from flow.train import HOLDOUT_FRACTION, build_pipeline

    demographics, behavior = read_table(data_dir / "demographics.npz"), read_table(data_dir / "behavior.npz")
    population = generate_population(len(demographics["customer_id"]), c.SEED)
    if not np.array_equal(population.demographics["customer_id"], demographics["customer_id"]):
        raise RuntimeError("the bundles are not the flow's population: rebuild them with `make data`")
    frame = model_frame(demographics, behavior)
    target = population.high_spender.astype(np.int64)
    order = np.random.default_rng(c.SEED + 1).permutation(len(target))
    fit_rows = np.sort(order[int(round(len(target) * HOLDOUT_FRACTION)):])
    pipeline = build_pipeline(c.SEED)
    with threadpool_limits(limits=1):
        pipeline.fit(frame.iloc[fit_rows], target[fit_rows])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sample = frame.head(5)
    mlflow.sklearn.save_model(pipeline, str(folder / "model"), pyfunc_predict_fn="predict_proba",
                              signature=infer_signature(sample, pipeline.predict_proba(sample)),
                              skops_trusted_types=[_TREE_PREDICTOR])
    gap = _agreement(pipeline, frame.sample(2000, random_state=1), onnx_model)
    marker.write_text(json.dumps({"max_abs_diff": gap}))
    (folder / "STAMP").write_text(stamp)
    return folder / "model", gap


def _agreement(pipeline, frame, onnx_model: Path) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    feed = {name: (frame[[name]].to_numpy(np.float32) if frame[name].dtype.kind == "f"
                   else frame[[name]].to_numpy(str)) for name in MODEL_FEATURES}
    _, onnx_probabilities = session.run(None, feed)
    return float(np.max(np.abs(onnx_probabilities[:, 1] - pipeline.predict_proba(frame)[:, 1])))
