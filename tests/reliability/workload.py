"""The mixed workload of the reliability tests and the soak: real calls with known right answers.

The right answers ("golden") are read once from healthy services for a fixed sample of
customers; afterwards every 200 must match them exactly, so a prediction scored with missing
features, a half-loaded table or a truncated batch is caught, not just a 5xx.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.reliability.loadgen import Call

API = "/public/api/v1"
FEATURES = "customer-features"
SCORING = "customer-scoring"
LOOKUPS = ("demographics", "behavior")
CUSTOMERS = 100_000


def customer_id(number: int) -> str:
    return f"C{number:07d}"


def sample_ids(count: int, seed: int = 8) -> list[str]:
    """A fixed sample spread over the whole id range, first and last customer included."""
    rng = random.Random(seed)
    numbers = {1, CUSTOMERS} | {rng.randint(1, CUSTOMERS) for _ in range(count * 2)}
    return [customer_id(n) for n in sorted(numbers)[: count - 1]] + [customer_id(CUSTOMERS)]


def prediction_of(result: Any) -> tuple:
    """What must not change between two scorings of the same record."""
    return (
        result.get("prediction"),
        tuple(sorted((result.get("probas") or {}).items())),
        result.get("ignored"),
    )


@dataclass
class Golden:
    """Right answers for a sample of customers, read from healthy services."""

    ids: list[str]
    lookups: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[str, tuple] = field(default_factory=dict)

    def fetch_lookups(self, features_url: str, api_key: str) -> Golden:
        with httpx.Client(base_url=features_url, auth=(api_key, ""), timeout=30) as client:
            for endpoint in LOOKUPS:
                items = [{"data": {"customer_id": i}} for i in self.ids]
                response = client.post(f"{API}/{FEATURES}/{endpoint}/lookup-multi", json={"items": items})
                response.raise_for_status()
                results = response.json()["results"]
                assert len(results) == len(self.ids), (
                    f"{endpoint}: {len(results)} results for {len(self.ids)}"
                )
                for cid, result in zip(self.ids, results):
                    assert result.get("data"), f"{endpoint} has no row for {cid}: {result}"
                    self.lookups[f"{endpoint}/{cid}"] = result
        return self

    def fetch_predictions(self, scoring_url: str, api_key: str) -> Golden:
        with httpx.Client(base_url=scoring_url, auth=(api_key, ""), timeout=30) as client:
            items = [{"features": {"customer_id": i}} for i in self.ids]
            response = client.post(f"{API}/{SCORING}/high-spender/predict-multi", json={"items": items})
            response.raise_for_status()
            results = response.json()["results"]
            assert len(results) == len(self.ids)
            for cid, result in zip(self.ids, results):
                assert result.get("prediction") is not None and result.get("probas"), f"{cid}: {result}"
                self.predictions[cid] = prediction_of(result)
        return self

    # Calls: each takes a seeded Random and returns a Call whose check compares with the golden answers.

    def lookup(self, endpoint: str) -> Callable[[random.Random], Call]:
        def make(rng: random.Random) -> Call:
            cid = rng.choice(self.ids)
            expected = self.lookups[f"{endpoint}/{cid}"]

            def check(payload: Any) -> str | None:
                results = (payload or {}).get("results")
                if not results or results[0] != expected:
                    return f"{endpoint} {cid}: got {str(results)[:200]}, expected {str(expected)[:200]}"
                return None

            return Call(
                f"lookup {endpoint}",
                f"{API}/{FEATURES}/{endpoint}/lookup",
                {"data": {"customer_id": cid}},
                check=check,
            )

        return make

    def lookup_multi(self, endpoint: str, size: int = 10) -> Callable[[random.Random], Call]:
        def make(rng: random.Random) -> Call:
            ids = rng.sample(self.ids, size)
            expected = [self.lookups[f"{endpoint}/{cid}"] for cid in ids]

            def check(payload: Any) -> str | None:
                results = (payload or {}).get("results")
                if results != expected:
                    return f"{endpoint} lookup-multi of {size}: answer differs ({str(results)[:200]})"
                return None

            return Call(
                f"lookup-multi {endpoint}",
                f"{API}/{FEATURES}/{endpoint}/lookup-multi",
                {"items": [{"data": {"customer_id": c}} for c in ids]},
                check=check,
            )

        return make

    def predict(self) -> Callable[[random.Random], Call]:
        def make(rng: random.Random) -> Call:
            cid = rng.choice(self.ids)
            expected = self.predictions[cid]

            def check(payload: Any) -> str | None:
                result = (payload or {}).get("result") or {}
                if prediction_of(result) != expected:
                    return f"predict {cid}: got {prediction_of(result)}, expected {expected}"
                return None

            return Call(
                "predict",
                f"{API}/{SCORING}/high-spender/predict",
                {"features": {"customer_id": cid}},
                check=check,
            )

        return make

    def predict_multi(self, size: int = 10) -> Callable[[random.Random], Call]:
        def make(rng: random.Random) -> Call:
            ids = rng.sample(self.ids, size)
            expected = [self.predictions[c] for c in ids]

            def check(payload: Any) -> str | None:
                results = (payload or {}).get("results") or []
                got = [prediction_of(r) for r in results]
                if got != expected:
                    return f"predict-multi of {size}: answer differs ({str(results)[:200]})"
                return None

            return Call(
                "predict-multi",
                f"{API}/{SCORING}/high-spender/predict-multi",
                {"items": [{"features": {"customer_id": c}} for c in ids]},
                check=check,
            )

        return make

    def features_calls(self) -> list[Callable[[random.Random], Call]]:
        return [
            self.lookup("demographics"),
            self.lookup("behavior"),
            self.lookup_multi("demographics"),
            self.lookup_multi("behavior"),
        ]

    def scoring_calls(self) -> list[Callable[[random.Random], Call]]:
        return [self.predict(), self.predict(), self.predict_multi()]
