"""Fill a throwaway PostgreSQL (tests/pgcluster.py) with the full customer-features tables.

The rows are the bundled ones, so answers from the SQL-backed service must equal the golden
answers read from the bundled service.
"""

from __future__ import annotations

import yaml
from apinode.bundle import read_bundle

from tests.pgcluster import PgCluster
from tests.reliability.servers import FEATURES_DIR

SQL_TYPES = {
    "string": "text",
    "date": "date",
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
}


def load_feature_tables(db: PgCluster) -> None:
    definition = yaml.safe_load((FEATURES_DIR / "service.yaml").read_text())
    for table in definition["tables"].values():
        columns = {
            c: (spec["type"] if isinstance(spec, dict) else spec) for c, spec in table["columns"].items()
        }
        ddl = ", ".join(
            f"{c} {SQL_TYPES[t]}" + (" PRIMARY KEY" if c == table["key"] else "") for c, t in columns.items()
        )
        db.execute(f"CREATE TABLE {table['sql']['table']} ({ddl})")
        data = read_bundle(FEATURES_DIR / table["bundled"]["path"])
        values = [(data[c].decode() if hasattr(data[c], "decode") else data[c]).tolist() for c in columns]
        db.insert(table["sql"]["table"], list(columns), zip(*values))
