"""Enrichment lookups with the lenient policies: ``on_missing_key: ignore``, ``on_not_found: ignore``,
``on_several: first``. No committed scoring endpoint declares them (both fail), but a definition may
(docs/service-definition.md), and a caller then gets a score from what is there, or the list of
what is still missing: never the strict policy's refusal, never another customer's row.

The fixture: customer-scoring whose two lookups carry the lenient policies, over a demographics
table where C0000001 is on rows 0 and 1 (so C0000002 is not there at all); behavior is complete.
Each case runs through predict (``fill_now`` from the memory table) and predict-multi (``merge``).
"""

from __future__ import annotations

import httpx
import pytest

from apinode_fixtures import CATEGORICAL, NUMERIC, duplicated_service, tables
from tests.services.inprocess import InProcessService

DUPLICATED, ABSENT = "C0000001", "C0000002"
DEMOGRAPHIC_INPUTS = ["age", "campaign_status", "gender", "region", "tenure_months"]  # sorted
SENT_FROM_DEMOGRAPHICS = ("birthdate", "signup_date", "gender", "region", "campaign_status")


@pytest.fixture(scope="module")
def lenient(tmp_path_factory) -> dict:
    lenient_policies = {"on_missing_key: fail": "on_missing_key: ignore", "on_not_found: fail": "on_not_found: ignore",
                        "on_several: fail": "on_several: first"}
    target, demographics = duplicated_service(tmp_path_factory.mktemp("lenient"), "customer-scoring", DUPLICATED,
                                              lenient_policies)
    assert (target / "service.yaml").read_text().count("on_several: first") == 2, "both lookups made lenient"
    _, behavior = tables(500)
    rows = [{column: values[n] for column, values in demographics.items()} for n in (0, 1)]
    return {"scoring": InProcessService(target), "rows": rows, "behavior": behavior}


def _demographics_sent(row: dict) -> dict:
    return {name: str(row[name]) for name in SENT_FROM_DEMOGRAPHICS}


def _score(service: InProcessService, features: dict, multi: bool) -> dict:
    """The one result for ``features``; predict-multi with the record between two others."""
    if multi:
        items = [{"features": {"customer_id": "C0000003"}}, {"features": features},
                 {"features": {"customer_id": "C0000004"}}]
        response = service.post("high-spender/predict-multi", {"items": items})
        results = _ok(response)["results"]
        assert [r["ignored"] for r in (results[0], results[2])] == [False, False], results
        return results[1]
    return _ok(service.post("high-spender/predict", {"features": features}))["result"]


def _unscored(service: InProcessService, features: dict, multi: bool) -> tuple[str, str]:
    """(errorType, detailed message) of a record that cannot be scored: a 400 from predict, the
    item answered ignored (and its neighbours scored) from predict-multi."""
    if multi:
        result = _score(service, features, multi)
        assert result["ignored"] is True and result["ignoreReason"] == "MISSING_FEATURES", result
        return result["errorType"], result["message"]
    response = service.post("high-spender/predict", {"features": features})
    assert response.status_code == 400, f"HTTP {response.status_code}: {response.text}"
    return response.json()["errorType"], response.json()["detailedMessage"]


def _ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text}"
    return response.json()


def _needs(names: list[str]) -> str:
    return f"the model needs {', '.join(names)}: send them, or a key to look them up"


PATHS = [pytest.param(False, id="predict"), pytest.param(True, id="predict-multi")]


@pytest.mark.parametrize("multi", PATHS)
def test_several_matches_with_first_scores_the_row_stored_first(lenient, multi):
    scoring, (first, second) = lenient["scoring"], lenient["rows"]
    looked_up = _score(scoring, {"customer_id": DUPLICATED}, multi)
    assert looked_up["ignored"] is False, looked_up
    with_first = _score(scoring, {"customer_id": DUPLICATED, **_demographics_sent(first)}, multi)
    with_second = _score(scoring, {"customer_id": DUPLICATED, **_demographics_sent(second)}, multi)
    assert with_first["probas"] != with_second["probas"], "the two rows must score differently to tell them apart"
    assert looked_up["probas"] == with_first["probas"], "scored with the first stored row, not the second"


@pytest.mark.parametrize("multi", PATHS)
def test_not_found_with_ignore_fills_the_other_table_and_names_what_is_still_missing(lenient, multi):
    error_type, detail = _unscored(lenient["scoring"], {"customer_id": ABSENT}, multi)
    assert error_type == "MissingFeatures", "ignore is not fail: no RecordNotFound"
    assert detail == _needs(DEMOGRAPHIC_INPUTS), "only demographics inputs are missing: behavior was filled"


@pytest.mark.parametrize("multi", PATHS)
def test_not_found_with_ignore_scores_when_the_caller_sent_the_rest(lenient, multi):
    scoring, (first, _) = lenient["scoring"], lenient["rows"]
    result = _score(scoring, {"customer_id": ABSENT, **_demographics_sent(first)}, multi)
    assert result["ignored"] is False and result["prediction"] in ("0", "1"), result
    behavior = lenient["behavior"]
    row = list(behavior["customer_id"]).index(ABSENT)
    sent_in_full = {"customer_id": ABSENT, **_demographics_sent(first),
                    **{name: float(behavior[name][row]) for name in NUMERIC if name in behavior}}
    assert result["probas"] == _score(scoring, sent_in_full, multi)["probas"], "behavior filled from ABSENT's row"


@pytest.mark.parametrize("multi", PATHS)
def test_missing_key_with_ignore_names_the_missing_features_instead_of_the_key(lenient, multi):
    behavior_inputs = sorted(name for name in NUMERIC if name not in ("age", "tenure_months"))
    error_type, detail = _unscored(lenient["scoring"], {"gender": "F", "region": "west", "campaign_status": "active",
                                                        "age": 40, "tenure_months": 12}, multi)
    assert error_type == "MissingFeatures", "ignore is not fail: no MissingLookupKey"
    assert detail == _needs(behavior_inputs)
    complete = {"age": 40, "tenure_months": 12, "gender": "F", "region": "west", "campaign_status": "active",
                **{name: 1.0 for name in behavior_inputs}}
    assert set(complete) == set(NUMERIC) | set(CATEGORICAL)
    scored = _score(lenient["scoring"], complete, multi)
    assert scored["ignored"] is False, "every input sent: no key needed, whatever the policy"
