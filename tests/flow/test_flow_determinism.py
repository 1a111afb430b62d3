"""Same command, same bytes; another seed, other bytes."""

from __future__ import annotations

import hashlib

import pytest

from flow.cli import main


def _digests(folder) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


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
