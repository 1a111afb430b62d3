"""The Grafana dashboard (dashboards/apinode.json): what an on-call reader needs, on metrics that exist."""

from __future__ import annotations

import json
from pathlib import Path

from tests.infra.runtime_metrics import exposed_metric_names, used_metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "apinode.json"


def _panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_every_panel_queries_metrics_the_runtime_exposes_through_the_chosen_data_source():
    exposed = exposed_metric_names()
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            used = used_metric_names(target["expr"])
            assert used and used <= exposed, (panel["title"], used - exposed)
            assert 'namespace="$namespace"' in target["expr"], panel["title"]


def test_the_dashboard_covers_traffic_errors_latency_data_enrichment_and_generations():
    exprs = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in _panels()}
    text = " ".join(exprs.values())
    assert "apinode_requests_total" in text and "by (service, endpoint, error_type)" in text
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.99," in text
    assert "apinode_source_data_age_seconds" in text and "apinode_source_stale" in text
    assert "apinode_source_failures_total" in text and 'error_type="SourceUnavailable"' in text
    per_generation = [title for title, expr in exprs.items() if "generation" in expr]
    assert len(per_generation) >= 4, per_generation


def test_panel_ids_are_unique_and_the_layout_does_not_overlap():
    document = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in document["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, panel["title"]
        cells |= area
