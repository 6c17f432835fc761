#!/usr/bin/env bash
# CI step of the warehouse engines (issue 15): Java for Spark local, and the engines' drivers.
# Call it from .ci/run after `make install` and before `make test` (the suite's warehouse tests
# run DuckDB, chdb and Spark local; `make install` already installs them through the dev extra,
# so the pip line is a no-op there and only matters on a runner that installed without it).
# Usage: .ci/warehouse.sh            (from the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v java >/dev/null 2>&1; then
  echo "warehouse: installing Java for Spark local (openjdk-17-jre-headless)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null
fi
java -version 2>&1 | head -1

.venv/bin/pip install --quiet -e '.[duckdb,clickhouse,spark]'

# Smoke: every driver imports, and Spark local starts (the suite's first Spark test would
# otherwise pay the JVM start inside its own timeout).
.venv/bin/python - <<'PY'
import chdb, duckdb, pyspark, sqlglot  # noqa: F401
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
assert spark.sql("SELECT 1 AS x").collect()[0].x == 1
spark.stop()
print("warehouse: duckdb", duckdb.__version__, "| chdb", chdb.__version__, "| pyspark", pyspark.__version__)
PY
