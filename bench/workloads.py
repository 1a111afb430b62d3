"""What each system is asked to do: servers to start and the request each workload sends."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from bench.cores import UPSTREAM_CORE
from bench.load import Target
from bench.peers import MODEL_FEATURES, model_frame, read_table
from bench.procs import ServerSpec

API_KEY = "bench-key"
AUTH = (("Authorization", f"Bearer {API_KEY}"),)
PORTS = {"features": 18181, "scoring": 18180, "bare": 18190, "feast": 18166, "mlflow": 18155, "redis": 18179}
DEMOGRAPHICS = ("birthdate", "gender", "region", "campaign_status", "signup_date", "channel",
                "household_size", "income_band")
INTEGER_FEATURES = ("age", "tenure_months", "orders_12m", "recency_days", "distinct_categories")
MULTI_ROWS = 100


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things are on this checkout."""

    root: Path
    out: Path

    @property
    def project_python(self) -> str:
        # bench/run exports the project venv it was given (make bench VENV=...).
        return str(Path(os.environ.get("BENCH_VENV") or self.root / ".venv") / "bin" / "python")

    @property
    def peers_bin(self) -> Path:
        return Path(sys.executable).parent

    @property
    def features_dir(self) -> Path:
        return self.root / "services" / "customer-features"

    @property
    def scoring_dir(self) -> Path:
        return self.root / "services" / "customer-scoring"

    @property
    def onnx_model(self) -> Path:
        return self.scoring_dir / "model" / "high-spender.onnx"


def _url(name: str, path: str) -> str:
    return f"http://127.0.0.1:{PORTS[name]}{path}"


def ours(layout: Layout, role: str, service_dir: Path, extra_env: dict[str, str] | None = None,
         name: str | None = None) -> ServerSpec:
    """One of our services on the runtime, as `python -m apinode serve` runs it (role: features|scoring)."""
    # Query records off unless a row measures them (the runtime's default writes them to stdout).
    env = {"PYTHONPATH": str(layout.root / "services" / "apinode"), "APINODE_API_KEYS": API_KEY,
           "APINODE_LOG_LEVEL": "warning", "APINODE_QUERY_LOG": "off", **(extra_env or {})}
    return ServerSpec(name or role, [layout.project_python, "-m", "apinode", "serve", str(service_dir),
                                     "--host", "127.0.0.1", "--port", str(PORTS[role])], _url(role, "/readyz"), env)


def features(layout: Layout, service_dir: Path | None = None, name: str = "features",
             extra_env: dict[str, str] | None = None) -> ServerSpec:
    return ours(layout, "features", service_dir or layout.features_dir, extra_env, name=name)


def scoring(layout: Layout, remote: bool, extra_env: dict[str, str] | None = None,
            name: str | None = None) -> ServerSpec:
    env = {"APINODE_ENRICHMENT": "remote", "APINODE_FEATURES_URL": _url("features", ""),
           "APINODE_FEATURES_API_KEY": API_KEY} if remote else {"APINODE_ENRICHMENT": "bundled"}
    return ours(layout, "scoring", layout.scoring_dir, {**env, **(extra_env or {})}, name=name)


def two_hops(layout: Layout, suffix: str = "") -> tuple[ServerSpec, ServerSpec]:
    """Scoring through customer-features as deployed (two pods: here customer-features on the load
    generator's core), on the ports of the moment: the pair one two-hop score costs the CPU of."""
    return (features(layout).on(UPSTREAM_CORE, f"features-upstream{suffix}"),
            scoring(layout, remote=True, name=f"scoring-remote{suffix}"))


def has_query_log(layout: Layout) -> bool:
    """Query audit records (APINODE_QUERY_LOG) are in this checkout's runtime."""
    return (layout.root / "services" / "apinode" / "apinode" / "audit.py").exists()


def has_tracing(layout: Layout) -> bool:
    """W3C trace context across the hop is in this checkout's runtime."""
    return (layout.root / "services" / "apinode" / "apinode" / "tracing.py").exists()


def bare(layout: Layout, variant: tuple[str, ...] = (), name: str = "bare") -> ServerSpec:
    command = [layout.project_python, str(layout.root / "bench" / "bare.py"), "--data",
               str(layout.scoring_dir / "data"), "--model", str(layout.onnx_model), "--port", str(PORTS["bare"]),
               "--runtime-path", str(layout.root / "services" / "apinode"), *variant]
    return ServerSpec(name, command, _url("bare", "/readyz"))


# The bare reference with one piece of the server stack swapped out (bare.py flags).
STACK_VARIANTS = (
    ("uvloop + httptools + orjson (the runtime's stack)", ()),
    ("asyncio loop instead of uvloop", ("--loop", "asyncio")),
    ("h11 instead of httptools", ("--http", "h11")),
    ("stdlib json instead of orjson", ("--json", "stdlib")),
)


def feast(layout: Layout, repo: Path, name: str = "feast") -> ServerSpec:
    # Worker recycling off and a long registry TTL: the peer at its best, not at its defaults.
    command = [str(layout.peers_bin / "feast"), "serve", "-h", "127.0.0.1", "-p", str(PORTS["feast"]),
               "--no-access-log", "--workers", "1", "--max-requests", "0", "--registry_ttl_sec", "3600"]
    return ServerSpec(name, command, _url("feast", "/health"), {"FEAST_USAGE": "False"}, cwd=repo)


def mlflow(layout: Layout, model: Path) -> ServerSpec:
    command = [str(layout.peers_bin / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(PORTS["mlflow"]), "--workers", "1"]
    env = {"PATH": f"{layout.peers_bin}:/usr/bin:/bin", "MLFLOW_TRACKING_URI": str(layout.out / "mlruns")}
    return ServerSpec("mlflow", command, _url("mlflow", "/ping"), env)


def lookup_ours() -> Target:
    return Target(_url("features", "/public/api/v1/customer-features/demographics/lookup"),
                  '{"data":{"customer_id":"{id}"}}', AUTH)


def lookup_bare() -> Target:
    return Target(_url("bare", "/lookup"), '{"data":{"customer_id":"{id}"}}')


def lookup_feast() -> Target:
    body = json.dumps({"features": [f"demographics:{name}" for name in DEMOGRAPHICS],
                       "entities": {"customer_id": ["{id}"]}})
    return Target(_url("feast", "/get-online-features"), body)


def score_ours() -> Target:
    return Target(_url("scoring", "/public/api/v1/customer-scoring/high-spender/predict"),
                  '{"features":{"customer_id":"{id}"}}', AUTH)


# Explanations asked per request, as a Dataiku client does (the endpoint's defaults say off).
EXPLANATIONS = {
    "ice": '{"enabled":true,"method":"ICE"}',
    "shapley-25": '{"enabled":true,"method":"SHAPLEY","nMonteCarloSteps":25}',
}


def score_explained(kind: str) -> Target:
    return Target(_url("scoring", "/public/api/v1/customer-scoring/high-spender/predict"),
                  '{"features":{"customer_id":"{id}"},"explanations":' + EXPLANATIONS[kind] + "}", AUTH)


def score_bare() -> Target:
    return Target(_url("bare", "/score"), '{"features":{"customer_id":"{id}"}}')


def chain_urls() -> tuple[str, str]:
    return _url("feast", "/get-online-features"), _url("mlflow", "/invocations")


def multi_rows(layout: Layout, seed: int = 7) -> list[dict]:
    """The same 100 customers for both sides: the 11 model inputs of each, nothing to look up."""
    data = layout.scoring_dir / "data"
    demographics, behavior = read_table(data / "demographics.npz"), read_table(data / "behavior.npz")
    rows = np.random.default_rng(seed).choice(len(demographics["customer_id"]), MULTI_ROWS, replace=False)
    frame = model_frame(demographics, behavior).iloc[rows]
    return [{name: (int(value) if name in INTEGER_FEATURES else float(value) if isinstance(value, float) else value)
             for name, value in record.items()} for record in frame.to_dict(orient="records")]


def multi_ours(items: list[dict]) -> Target:
    body = json.dumps({"items": [{"features": item} for item in items]}, separators=(",", ":"))
    return Target(_url("scoring", "/public/api/v1/customer-scoring/high-spender/predict-multi"), body, AUTH)


def multi_mlflow(records: list[dict]) -> Target:
    body = json.dumps({"dataframe_split": {"columns": list(MODEL_FEATURES),
                                           "data": [[record[name] for name in MODEL_FEATURES] for record in records]}},
                      separators=(",", ":"))
    return Target(_url("mlflow", "/invocations"), body)
