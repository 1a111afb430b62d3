"""The features image configured as in prod: tables from a real PostgreSQL instead of the bundled
files, secrets from read-only mounted files. Its answers equal the bundled image's."""

from __future__ import annotations

import dataikuapi
import pytest
from image_harness import Container, start_container, wait_ready

from tests.apinode_proc import FEATURES_DIR, free_port
from tests.pgcluster import load_bundles, throwaway_cluster

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

API_KEY = "image-sql-test-key"
# Where infra/workload.py mounts the service's Secret.
SECRETS_DIR = "/var/run/secrets/apinode"
# Present, present, last of the 100k, and absent.
CUSTOMERS = ("C0000001", "C0000002", "C0100000", "C9999999")
ENDPOINTS = ("demographics", "behavior")
# Changed in the database only, so an answer shows which source it came from.
MARKED_CUSTOMER, MARKED_REGION = "C0000003", "only-in-postgres"


@pytest.fixture(scope="module")
def database():
    with throwaway_cluster() as db:
        load_bundles(db, FEATURES_DIR)
        db.execute(
            "UPDATE demographics SET region = %s WHERE customer_id = %s", (MARKED_REGION, MARKED_CUSTOMER)
        )
        yield db


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory, database):
    """What the Kubernetes Secret volume holds: the API keys and the database password, one file each."""
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "api-keys").write_text(API_KEY)
    (folder / "sql-password").write_text(database.password)
    # The container's non-root user must read them, as with the Secret volume's default 0644.
    folder.chmod(0o755)
    for secret in folder.iterdir():
        secret.chmod(0o644)
    return folder


@pytest.fixture(scope="module")
def features(docker, images, database, secrets_dir):
    """customer-features twice: bundled, and on PostgreSQL (cached, as the prod stack sets it)."""
    ref = images["customer-features"].ref
    ports: set[int] = set()
    started: dict[str, Container] = {}
    try:
        started["bundled"] = start_container(
            docker, ref, "features-bundled", free_port(ports), {"APINODE_API_KEYS": API_KEY}, API_KEY
        )
        sql_env = {
            "APINODE_API_KEYS_FILE": f"{SECRETS_DIR}/api-keys",
            "APINODE_SOURCE": "sql",
            "APINODE_SQL_URL": database.url,
            "APINODE_SQL_PASSWORD_FILE": f"{SECRETS_DIR}/sql-password",
            "APINODE_SQL_MODE": "cached",
        }
        started["sql"] = start_container(
            docker,
            ref,
            "features-sql",
            free_port(ports),
            sql_env,
            API_KEY,
            mounts=(f"{secrets_dir}:{SECRETS_DIR}:ro",),
        )
        for container in started.values():
            wait_ready(docker, container)
        yield started
    finally:
        for container in started.values():
            docker.attempt("rm", "--force", container.id)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_sql_backed_image_answers_like_the_bundled_one(features, endpoint):
    bundled, sql = (
        dataikuapi.APINodeClient(features[k].url, "customer-features", API_KEY) for k in ("bundled", "sql")
    )
    for customer in CUSTOMERS:
        expected = bundled.lookup_record(endpoint, {"customer_id": customer})
        assert sql.lookup_record(endpoint, {"customer_id": customer}) == expected, customer
    assert expected["notFound"] is True  # the absent customer really is absent in both


def test_sql_backed_image_reads_the_database(features):
    bundled, sql = (
        dataikuapi.APINodeClient(features[k].url, "customer-features", API_KEY) for k in ("bundled", "sql")
    )
    record = {"customer_id": MARKED_CUSTOMER}
    assert sql.lookup_record("demographics", record)["data"]["region"] == MARKED_REGION
    assert bundled.lookup_record("demographics", record)["data"]["region"] != MARKED_REGION
