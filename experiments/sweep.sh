#!/usr/bin/env bash
# A seed sweep: the three variants of an ablation recipe over seeds 0..K-1, each (variant, seed)
# its own run tagged regolith.seed, all nested under one parent run, then compare (mean ± std,
# and 95% intervals over seeds and over validation frames where the runs were evaluated).
#
#   mlflow run . --env-manager local -e sweep -P data=ROOT -P seeds=5 [-P recipe=v2|demo] --experiment-name NAME
#   mlflow run . --env-manager local -e sweep --run-id PARENT_RUN_ID -P data=ROOT -P seeds=5   # resume into it
#
# Re-running skips the pairs the store already holds as FINISHED runs; with --run-id the new
# runs nest under the same parent. EPOCHS and PRETRAINED pass through to the recipe.
set -euo pipefail
DATA=${1:?usage: bash experiments/sweep.sh DATA_ROOT K [RECIPE]}
K=${2:?usage: bash experiments/sweep.sh DATA_ROOT K [RECIPE]}
RECIPE=${3:-v2}
cd "$(dirname "$0")/.."
SEEDS="$(seq 0 $((K - 1)) | tr '\n' ' ')" SKIP_FINISHED=1 exec bash "experiments/ablation_$RECIPE.sh" "$DATA"
