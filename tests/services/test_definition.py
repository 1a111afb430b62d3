"""service.yaml and environment: bad definitions fail at start-up naming the file, the key and the reason."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from apinode.definition import DefinitionError
from apinode.loader import load_definition
from apinode.settings import load_settings
from tests.apinode_proc import REPO, server_env


def edited(fixture_dir, tmp_path, edit):
    """A copy of a fixture service whose service.yaml went through ``edit(raw)``."""
    target = tmp_path / fixture_dir.name
    subprocess.run(["cp", "-r", str(fixture_dir), str(target)], check=True)
    raw = yaml.safe_load((target / "service.yaml").read_text())
    edit(raw)
    (target / "service.yaml").write_text(yaml.safe_dump(raw))
    return target


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (
            lambda raw: raw["tables"]["behavior"].update(key="client_id"),
            "tables.behavior.key: 'client_id' is not one",
        ),
        (
            lambda raw: raw["tables"]["behavior"]["columns"].update(spend_12m="money"),
            "tables.behavior.columns.spend_12m.type",
        ),
        (
            lambda raw: raw["endpoints"]["behavior"].update(table="orders"),
            "endpoints.behavior.table: unknown table 'orders'",
        ),
        (
            lambda raw: raw["endpoints"]["behavior"].update(type="sql"),
            "endpoints.behavior.type: 'sql' is not one of",
        ),
        (
            lambda raw: raw["tables"]["behavior"].update(source="sql", sql=None),
            "tables.behavior.sql: required",
        ),
        (lambda raw: raw.pop("service"), "service: required"),
        (
            lambda raw: raw["endpoints"]["profile"].update(table="behavior"),
            "endpoints.profile: set exactly one of table or tables",
        ),
        (
            lambda raw: raw["endpoints"]["profile"].update(tables=["behavior", "behavior"]),
            "endpoints.profile.tables: a table is listed twice",
        ),
        (
            lambda raw: raw["endpoints"]["profile"].update(tables=["behavior", "orders"]),
            "endpoints.profile.tables: unknown table 'orders'",
        ),
        (
            lambda raw: raw["endpoints"]["behavior"].update(strict_types="yes"),
            "endpoints.behavior.strict_types: expected bool",
        ),
    ],
)
def test_features_definition_errors_name_the_key(fixture_services, tmp_path, edit, fragment):
    service = edited(fixture_services["customer-features"], tmp_path, edit)
    with pytest.raises(DefinitionError, match="service.yaml") as error:
        load_definition(service, {})
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (
            lambda raw: raw["endpoints"]["high-spender"]["generations"]["2"].update(model="model/missing.onnx"),
            "high-spender.generations.2.model: no such file",
        ),
        (
            lambda raw: raw["endpoints"]["high-spender"]["preprocessing"][0].update(transform="log"),
            "preprocessing[0].transform: 'log' is not one of",
        ),
        (
            lambda raw: raw["endpoints"]["high-spender"]["preprocessing"][0].update(input="birthday"),
            "preprocessing[0].input: 'birthday' is not a feature",
        ),
        (
            lambda raw: raw["endpoints"]["high-spender"]["enrichment"]["lookups"][0].update(
                on_not_found="guess"
            ),
            "lookups[0].on_not_found: 'guess' is not one of",
        ),
        (
            lambda raw: raw["endpoints"]["high-spender"]["enrichment"]["lookups"][1].update(
                columns={"colour": "x"}
            ),
            "lookups[1].columns.colour: not a column of table behavior",
        ),
        (
            lambda raw: raw["endpoints"]["high-spender"]["explanations"].update(method="LIME"),
            "high-spender.explanations.method: 'LIME' is not one of ICE, SHAPLEY",
        ),
        (
            lambda raw: raw["endpoints"]["high-spender"]["explanations"].update(n_monte_carlo_steps=5),
            "explanations.n_monte_carlo_steps: must be between 25 and 1000",
        ),
        (
            lambda raw: raw["endpoints"]["high-spender"]["explanations"].update(n_explanations=12),
            "explanations.n_explanations: at most the 11 model inputs",
        ),
        (
            lambda raw: raw["endpoints"]["high-spender"]["generations"]["2"].update(reference="model/none.json"),
            "high-spender.generations.2.reference: cannot read the model reference",
        ),
        (
            lambda raw: raw["remotes"]["customer-features"].update(batches_in_flight=0),
            "remotes.customer-features.batches_in_flight: must be positive, got 0",
        ),
        (
            lambda raw: raw["remotes"]["customer-features"].update(batches_in_flight="2"),
            "remotes.customer-features.batches_in_flight: expected int, got '2'",
        ),
        (
            lambda raw: raw["remotes"]["customer-features"].update(batch_wait_seconds=0),
            "remotes.customer-features.batch_wait_seconds: must be positive, got 0",
        ),
    ],
)
def test_scoring_definition_errors_name_the_key(fixture_services, tmp_path, edit, fragment):
    service = edited(fixture_services["customer-scoring"], tmp_path, edit)
    with pytest.raises(DefinitionError) as error:
        load_definition(service, {})
    assert fragment in str(error.value)


def test_environment_switches_sources_and_enrichment(fixture_services):
    env = {
        "APINODE_SOURCE": "sql",
        "APINODE_SQL_URL": "postgresql://app@127.0.0.1:5432/mesh",
        "APINODE_SQL_MODE": "live",
        "APINODE_SQL_POOL_SIZE": "7",
        "APINODE_ENRICHMENT": "remote",
        "APINODE_FEATURES_URL": "http://127.0.0.1:9999/",
        "APINODE_FEATURES_API_KEY": "k",
        "APINODE_MAX_BATCH_ITEMS": "10",
    }
    definition = load_definition(fixture_services["customer-scoring"], env)
    sql = definition.tables["behavior"].sql
    assert definition.tables["behavior"].source == "sql"
    assert (sql.url, sql.mode, sql.pool_size, sql.table) == (
        "postgresql://app@127.0.0.1:5432/mesh",
        "live",
        7,
        "behavior",
    )
    assert definition.predictions["high-spender"].enrichment_via == "remote"
    assert definition.remotes["customer-features"].url == "http://127.0.0.1:9999"
    assert definition.limits.max_batch_items == 10


def test_overlay_file_is_merged_before_variables(fixture_services, tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        "tables:\n  behavior:\n    source: sql\n"
        "    sql: {url: 'postgresql://x@127.0.0.1/db', refresh_seconds: 5}\n"
        "limits: {max_body_bytes: 2048}\n"
    )
    definition = load_definition(fixture_services["customer-features"], {"APINODE_OVERLAY": str(overlay)})
    assert definition.tables["behavior"].sql.refresh_seconds == 5
    assert definition.tables["behavior"].sql.table == "behavior"
    assert definition.tables["demographics"].source == "bundled"
    assert definition.limits.max_body_bytes == 2048


def test_remote_enrichment_without_its_key_is_refused(fixture_services):
    with pytest.raises(DefinitionError, match="APINODE_FEATURES_API_KEY|api_key_env"):
        load_definition(fixture_services["customer-scoring"], {"APINODE_ENRICHMENT": "remote"})


def test_api_keys_from_a_mounted_file(fixture_services, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("alpha\nbeta\n")
    settings = load_settings(fixture_services["customer-features"], {"APINODE_API_KEYS_FILE": str(keys)})
    assert settings.api_keys == ("alpha", "beta")
    with pytest.raises(DefinitionError, match="APINODE_API_KEYS"):
        load_settings(fixture_services["customer-features"], {})


def test_cli_exits_2_with_the_reason(fixture_services, tmp_path):
    service = edited(
        fixture_services["customer-features"], tmp_path, lambda raw: raw["tables"].pop("behavior")
    )
    result = subprocess.run(
        [sys.executable, "-m", "apinode", "serve", str(service), "--port", "1"],
        env=server_env(),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert "endpoints.behavior.table: unknown table 'behavior'" in result.stderr


def test_unreadable_bundle_stops_start_up_with_code_3(fixture_services, tmp_path):
    service = edited(fixture_services["customer-features"], tmp_path, lambda raw: None)
    (service / "data" / "behavior.npz").write_bytes(b"not a zip")
    result = subprocess.run(
        [sys.executable, "-m", "apinode", "serve", str(service), "--port", "0"],
        env=server_env(),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 3
    assert "behavior.npz" in result.stderr
