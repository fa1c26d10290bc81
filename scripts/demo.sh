#!/usr/bin/env bash
# Run the labelflow demo: a local Kafka broker, synthetic imagery and annotations flowing
# through every stage into the catalog, with live progress. Extra arguments go to
# `labelflow demo` (try --help).
#
#   bash scripts/demo.sh [--duration 60]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/labelflow demo "$@"
