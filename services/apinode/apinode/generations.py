"""Model generations of a prediction endpoint and the dispatch between them, as the Dataiku API node
does it: weights, a sticky hash of the caller's ``dispatchKey``, ``forcedGeneration`` per request.

service.yaml::

    generations:                     # id -> model; the first is the reference (inputs, as_of)
      "1": {model: model/high-spender.onnx, metadata: model/high-spender.json}
      "2": {model: model/high-spender-2.onnx, metadata: model/high-spender-2.json}
    dispatch:
      weights: {"1": 90, "2": 10}    # shares of the traffic; 0 keeps a generation forceable only

The environment may replace the weights (the Pulumi stack does, through the ConfigMap):
``APINODE_DISPATCH='{"high-spender": {"1": 50, "2": 50}}'``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .definition import DefinitionError, _Reader
from .errors import ApiError

DISPATCH_ENV = "APINODE_DISPATCH"


class UnknownGeneration(ApiError):
    """``forcedGeneration`` names a generation the endpoint does not have."""

    status = 400
    error_type = "UnknownGeneration"


@dataclass(frozen=True)
class Generation:
    """One version of an endpoint's model."""

    id: str
    model_path: Path
    metadata: dict[str, Any]
    reference: dict[str, Any] = field(default_factory=dict)  # percentiles, explanations' background


def _json_file(reader: _Reader, root: Path, where: str, key: str, what: str) -> dict[str, Any]:
    """The JSON file the definition names under ``key`` (relative to the service folder), or {}."""
    file = reader.get(key, str, None)
    if not file:
        return {}
    try:
        return json.loads((root / file).read_text())
    except (OSError, ValueError) as error:
        reader.fail(f"{where}.{key}", f"cannot read {what}: {error}")


def _generation(generation_id: str, reader: _Reader, root: Path, where: str) -> Generation:
    return Generation(
        generation_id,
        _model(reader, root, where),
        _json_file(reader, root, where, "metadata", "model metadata"),
        _json_file(reader, root, where, "reference", "the model reference"),
    )


def _model(reader: _Reader, root: Path, where: str) -> Path:
    path = root / reader.get("model", str)
    if not path.is_file():
        reader.fail(f"{where}.model", f"no such file {path}")
    return path


def read_generations(reader: _Reader, root: Path, default_id: str) -> tuple[Generation, ...]:
    """The endpoint's generations: its ``generations`` block, or one (``default_id``) from ``model``."""
    if reader.raw.get("generations") is None:
        return (_generation(default_id, reader, root, reader.path),)
    for key in ("model", "metadata", "reference"):
        if key in reader.raw:
            reader.fail(f"{reader.path}.{key}", "set the model per generation under generations, not here")
    block = reader.child("generations")
    generations = []
    for raw_id, _ in block.items():
        generation_id = str(raw_id)
        entry = block.child(raw_id)
        where = f"{block.path}.{generation_id}"
        generations.append(_generation(generation_id, entry, root, where))
    if not generations:
        reader.fail(f"{reader.path}.generations", "at least one generation is required")
    reference = generations[0].metadata
    for generation in generations[1:]:
        for key in ("as_of", "classes", "inputs"):
            if generation.metadata.get(key) != reference.get(key):
                reader.fail(
                    f"{block.path}.{generation.id}.metadata",
                    f"{key} differs from generation {generations[0].id}'s: generations of one endpoint "
                    "share their request schema and preprocessing",
                )
    return tuple(generations)


def _check_weights(weights: Any, known: tuple[str, ...], fail) -> tuple[tuple[str, float], ...]:
    if not isinstance(weights, dict) or not weights:
        fail(f"expected a mapping of generation to weight, got {weights!r}")
    parsed = {}
    for raw_id, weight in weights.items():
        generation_id = str(raw_id)
        if generation_id not in known:
            fail(f"unknown generation {generation_id!r}; the endpoint has {', '.join(known)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            fail(f"the weight of generation {generation_id} must be a number >= 0, got {weight!r}")
        parsed[generation_id] = float(weight)
    if sum(parsed.values()) <= 0:
        fail("at least one weight must be above 0")
    # In declaration order, so moving weight between generations moves only the keys it must.
    return tuple((g, parsed.get(g, 0.0)) for g in known)


def read_weights(reader: _Reader, generations: tuple[Generation, ...]) -> tuple[tuple[str, float], ...]:
    """``dispatch.weights``; without it, everything goes to the first generation."""
    known = tuple(g.id for g in generations)
    dispatch = reader.child("dispatch")
    for key in dispatch.raw:
        if key != "weights":
            dispatch.fail(f"{dispatch.path}.{key}", "unknown dispatch setting; the only one is weights")
    if dispatch.raw.get("weights") is None:
        return tuple((g, 1.0 if i == 0 else 0.0) for i, g in enumerate(known))
    where = f"{dispatch.path}.weights"
    return _check_weights(dispatch.raw["weights"], known, lambda reason: dispatch.fail(where, reason))


def apply_dispatch_env(raw: dict, env: Mapping[str, str]) -> None:
    """``APINODE_DISPATCH`` replaces the weights of the endpoints it names (checked when parsed)."""
    text = env.get(DISPATCH_ENV)
    if not text:
        return
    try:
        overrides = json.loads(text)
    except ValueError as error:
        raise DefinitionError(f"environment: {DISPATCH_ENV}: not JSON: {error}") from None
    if not isinstance(overrides, dict):
        raise DefinitionError(f"environment: {DISPATCH_ENV}: expected {{endpoint: {{generation: weight}}}}")
    endpoints = raw.get("endpoints") or {}
    for name, weights in overrides.items():
        endpoint = endpoints.get(name)
        if not isinstance(endpoint, dict) or endpoint.get("type") != "prediction":
            raise DefinitionError(f"environment: {DISPATCH_ENV}: {name!r} is not a prediction endpoint")
        known = tuple(str(g) for g in (endpoint.get("generations") or {"1": None}))

        def fail(reason: str, name: str = name) -> None:
            raise DefinitionError(f"environment: {DISPATCH_ENV}: {name}: {reason}")

        _check_weights(weights, known, fail)
        endpoint["dispatch"] = {**(endpoint.get("dispatch") or {}), "weights": weights}


def _unit_interval(endpoint: str, key: str) -> float:
    """A stable point in [0, 1) for a dispatch key: the same on every pod, every restart."""
    digest = hashlib.blake2b(f"{endpoint}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Dispatcher:
    """Picks the generation that answers one request."""

    def __init__(self, endpoint: str, weights: tuple[tuple[str, float], ...]) -> None:
        self._endpoint = endpoint
        self.ids = tuple(g for g, _ in weights)
        total = sum(w for _, w in weights)
        bounds, running = [], 0.0
        for generation, weight in weights:
            running += weight / total
            bounds.append((running, generation))
        self._bounds = tuple(bounds)
        self._last = next(g for g, w in reversed(weights) if w > 0)  # for rounding at the top end
        self._only = self.ids[0] if len(self.ids) == 1 else None

    def _at(self, point: float) -> str:
        for bound, generation in self._bounds:
            if point < bound:
                return generation
        return self._last

    def choose(self, body: dict) -> str:
        """``dispatch.forcedGeneration``, else the hash of ``dispatch.dispatchKey``, else at random."""
        dispatch = body.get("dispatch")
        if dispatch is None or type(dispatch) is not dict:
            return self._only or self._at(random.random())
        forced = dispatch.get("forcedGeneration")
        if forced is not None:
            forced = str(forced) if type(forced) in (str, int) else None
            if forced not in self.ids:
                raise UnknownGeneration(
                    f"unknown generation {dispatch.get('forcedGeneration')!r}",
                    f"forcedGeneration must be one of {', '.join(self.ids)} for endpoint {self._endpoint}",
                )
            return forced
        key = dispatch.get("dispatchKey")
        if key is not None:
            return self._only or self._at(_unit_interval(self._endpoint, str(key)))
        return self._only or self._at(random.random())


async def load_generations(definition, reference_models: dict) -> dict[str, dict]:
    """Per prediction endpoint, generation id -> loaded model; the first is the reference model.

    A generation whose model takes other inputs than the reference stops the start-up: the
    enrichment and the request schema are shared by all generations of an endpoint.
    """
    import asyncio
    from dataclasses import replace

    from .model import Model, ModelError

    loaded: dict[str, dict] = {}
    pending = []
    for endpoint in definition.predictions.values():
        reference = reference_models[endpoint.name]
        generations = endpoint.generations or (Generation(definition.version, endpoint.model_path, {}),)
        loaded[endpoint.name] = {generations[0].id: reference}
        for generation in generations[1:]:
            spec = replace(
                endpoint,
                model_path=generation.model_path,
                metadata=generation.metadata,
                reference=generation.reference,
            )
            pending.append((endpoint.name, generation.id, reference, asyncio.to_thread(Model, spec)))
    models = await asyncio.gather(*(task for *_, task in pending))
    for (name, generation_id, reference, _), model in zip(pending, models):
        if model.input_names != reference.input_names or model.classes != reference.classes:
            raise ModelError(
                f"endpoint {name}: generation {generation_id}'s model takes {sorted(model.input_names)} "
                f"and answers {model.classes}; the reference takes {sorted(reference.input_names)} "
                f"and answers {reference.classes}"
            )
        loaded[name][generation_id] = model
    return loaded
