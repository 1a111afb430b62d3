"""Shared fixtures: a small seeded population and its bundles, read back like the runtime reads them.

Test modules are named test_flow_* so they never clash with other areas' modules.
"""

from __future__ import annotations

import numpy as np
import pytest
from apinode.bundle import EncodedColumn, read_bundle

from flow.artifacts import write_bundles
from flow.population import generate_population

SMALL = 3000


def decoded(path) -> dict[str, np.ndarray]:
    """A bundle's columns, dictionary-encoded strings decoded, in file order."""
    return {
        name: column.decode() if isinstance(column, EncodedColumn) else column
        for name, column in read_bundle(path).items()
    }


@pytest.fixture(scope="session")
def read_decoded():
    return decoded


@pytest.fixture(scope="session")
def small_population():
    return generate_population(SMALL)


@pytest.fixture(scope="session")
def small_bundles(small_population, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    demographics, behavior = write_bundles(small_population, out)
    return decoded(demographics), decoded(behavior)
