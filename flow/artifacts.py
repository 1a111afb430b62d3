"""Where the flow's outputs live and how they are written (same inputs, same bytes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from apinode.bundle import write_bundle

from flow import constants as c
from flow.constants import MODEL_NAME
from flow.population import Population

if TYPE_CHECKING:
    from flow.train import TrainedModel

REPO_ROOT = Path(__file__).resolve().parent.parent
FEATURES_DATA = Path("services/customer-features/data")
SCORING_DATA = Path("services/customer-scoring/data")
SCORING_MODEL = Path("services/customer-scoring/model")
BUNDLE_NAMES = ("demographics.npz", "behavior.npz")


def model_stem(generation: str) -> str:
    """File name of a generation's model, without suffix: generation 1 keeps the plain name."""
    return MODEL_NAME if generation == "1" else f"{MODEL_NAME}-{generation}"


def artifact_paths(generations: tuple[str, ...] = ("1", "2")) -> list[Path]:
    """Every file ``python -m flow all`` writes, relative to the repository root."""
    bundles = [folder / name for folder in (FEATURES_DATA, SCORING_DATA) for name in BUNDLE_NAMES]
    models = [SCORING_MODEL / f"{model_stem(g)}{suffix}" for g in generations
              for suffix in (".onnx", ".json", ".reference.json")]
    return bundles + models


def write_bundles(population: Population, out: Path) -> list[Path]:
    """``demographics.npz`` and ``behavior.npz`` in ``out``, columns in contract order."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "demographics.npz": {name: population.demographics[name] for name in c.DEMOGRAPHICS_COLUMNS},
        "behavior.npz": {name: population.behavior[name] for name in c.BEHAVIOR_COLUMNS},
    }
    for file_name, columns in tables.items():
        write_bundle(out / file_name, columns)
    return [out / name for name in BUNDLE_NAMES]


def model_card_text(card: dict) -> str:
    """Sorted keys, fixed indentation, trailing newline: a stable text for a stable card."""
    return json.dumps(card, sort_keys=True, indent=2) + "\n"


def write_all(population: Population, models: dict[str, TrainedModel], root: Path) -> list[Path]:
    """Both services' bundles (identical copies) and each generation's model and card, under ``root``."""
    written = write_bundles(population, root / FEATURES_DATA)
    (root / SCORING_DATA).mkdir(parents=True, exist_ok=True)
    for source in list(written):
        # Each image ships only its own service folder, so the scoring service gets its own copy.
        written.append(Path(shutil.copyfile(source, root / SCORING_DATA / source.name)))
    model_dir = root / SCORING_MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    for generation, model in models.items():
        stem = model_stem(generation)
        (model_dir / f"{stem}.onnx").write_bytes(model.onnx_bytes)
        (model_dir / f"{stem}.json").write_text(model_card_text(model.card), encoding="utf-8")
        (model_dir / f"{stem}.reference.json").write_text(model_card_text(model.reference), encoding="utf-8")
        written += [model_dir / f"{stem}{suffix}" for suffix in (".onnx", ".json", ".reference.json")]
    return written
