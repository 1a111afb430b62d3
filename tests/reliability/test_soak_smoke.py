"""`make soak` in miniature: the soak runs, finds no error, and writes its report."""

from __future__ import annotations

import pytest

from bench import soak


@pytest.mark.timeout(180)
def test_a_short_soak_passes_and_writes_its_report(tmp_path):
    out = tmp_path / "soak.md"
    code = soak.main(["--minutes", "0.2", "--workers", "6", "--out", str(out)])
    text = out.read_text()
    assert code == 0, text
    assert "**PASS**: 0 errors" in text
    for heading in (
        "## Totals",
        "## customer-features over time",
        "## customer-scoring over time",
        "## Resident memory (MiB) over time",
    ):
        assert heading in text, f"{heading} missing from the report:\n{text}"
