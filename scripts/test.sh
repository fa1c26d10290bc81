#!/usr/bin/env bash
# Run labelflow's checks: lint, then every test (unit, integration against a real Kafka broker,
# SQLite and PostgreSQL, a real Label Studio, and end to end). Extra arguments go to pytest.
#
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-postgres --with-labelstudio
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
