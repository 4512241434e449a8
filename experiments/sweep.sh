#!/usr/bin/env bash
# A seed sweep: the three variants of an ablation recipe over seeds 0..K-1, each (variant, seed)
# its own run tagged regolith.seed, all nested under one parent run, then compare (mean ± std,
# and 95% intervals over seeds and over validation frames where the runs were evaluated).
#
#   bash experiments/sweep.sh DATA_ROOT K [RECIPE] [--epochs N] [--pretrained ID]
#   mlflow run . --env-manager local -e sweep -P data=ROOT -P seeds=5 [-P recipe=v2|demo] --experiment-name NAME
#   mlflow run . --env-manager local -e sweep --run-id PARENT_RUN_ID -P data=ROOT -P seeds=5   # resume into it
#
# Re-running skips the pairs the store already holds as FINISHED runs; with --run-id the new
# runs nest under the same parent. The logic, and the check of every argument, is regolith.sweep's:
# this file only passes them on (it once did shell arithmetic on K, which ran code given as K).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 2 ]; then echo "usage: bash experiments/sweep.sh DATA_ROOT K [RECIPE] [options]" >&2; exit 2; fi
data=$1 count=$2
shift 2
recipe=v2
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then recipe=$1; shift; fi
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec python -m regolith.sweep "$data" --recipe "$recipe" \
  --count "$count" --skip-finished "$@"
