"""The committed artifacts are exactly what ``python -m flow all`` builds, from a bare interpreter."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from flow.artifacts import FEATURES_DATA, REPO_ROOT, SCORING_DATA, artifact_paths


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_flow_all_rebuilds_the_committed_artifacts_byte_for_byte(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "flow", "all", "--root", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "holdout AUC" in result.stderr
    differing = [str(p) for p in artifact_paths() if _sha256(tmp_path / p) != _sha256(REPO_ROOT / p)]
    assert not differing, f"committed artifacts are stale, run `make data`: {differing}"


def test_both_services_ship_the_same_bundles():
    for name in ("demographics.npz", "behavior.npz"):
        features = REPO_ROOT / FEATURES_DATA / name
        scoring = REPO_ROOT / SCORING_DATA / name
        assert features.read_bytes() == scoring.read_bytes()
