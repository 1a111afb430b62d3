"""Same command, same bytes; another seed, other bytes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import onnx
import pytest

from flow.artifacts import REPO_ROOT, SCORING_MODEL, artifact_paths
from flow.cli import main


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(folder) -> dict[str, str]:
    return {path.name: _sha256(path) for path in sorted(folder.iterdir())}


def test_two_runs_write_identical_bundles(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["generate", "--customers", "2500", "--out", str(first)]) == 0
    assert main(["generate", "--customers", "2500", "--out", str(second)]) == 0
    assert set(_digests(first)) == {"demographics.npz", "behavior.npz"}
    assert _digests(first) == _digests(second)


def test_another_seed_gives_other_customers(tmp_path):
    main(["generate", "--customers", "2500", "--out", str(tmp_path / "default")])
    main(["generate", "--customers", "2500", "--seed", "7", "--out", str(tmp_path / "seven")])
    default, seven = _digests(tmp_path / "default"), _digests(tmp_path / "seven")
    assert default["demographics.npz"] != seven["demographics.npz"]
    assert default["behavior.npz"] != seven["behavior.npz"]


@pytest.mark.parametrize("bad", ["0", "10000000", "many"])
def test_customer_count_out_of_range_is_refused(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--customers", bad, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--customers" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_model_bytes_do_not_depend_on_the_process(tmp_path):
    """Separate processes (own hash salt, own memory layout) must write the same bytes.

    skl2onnx once listed the graph's opsets in a per-process order; the flow sorts them.
    """
    digests = []
    for run in range(2):
        root = tmp_path / str(run)
        subprocess.run(
            [sys.executable, "-m", "flow", "all", "--customers", "2000", "--root", str(root)],
            cwd=REPO_ROOT, env={k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"},
            check=True, capture_output=True, timeout=300,
        )
        digests.append({str(path): _sha256(root / path) for path in artifact_paths()})
    assert digests[0] == digests[1]


def test_model_lists_its_opsets_in_a_fixed_order():
    model = onnx.load(str(REPO_ROOT / SCORING_MODEL / "high-spender.onnx"))
    domains = [entry.domain for entry in model.opset_import]
    assert domains == sorted(domains) and set(domains) == {"", "ai.onnx.ml"}
