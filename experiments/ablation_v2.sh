#!/usr/bin/env bash
# The v2 size-matched ablation of the reference study (shared/reference/03-training.txt), as run
# on the GPU box: three SegFormer-B0 fine-tunes that differ only in their training data, then
# compare, which answers what domain randomization adds at matched size (dr_750 vs nodr_750)
# and what doubling the data adds (dr_1500 vs dr_750).
#
#   bash experiments/ablation_v2.sh ROOT       # ROOT holds train_nodr, train_dr, test_photoreal
#   mlflow run . --env-manager local -e ablation -P data=ROOT [--experiment-name NAME]
#
# dr_750 is the first 750 frames of train_dr (-P frames=750); no symlinked copy is needed.
# Optional environment: SEEDS="0 1 2" runs every variant once per seed (compare reports
# mean ± std); EPOCHS and PRETRAINED override the recipe's for a quick check.
# Runs go to the experiment MLflow resolves (MLFLOW_EXPERIMENT_NAME, or the mlflow run's).
set -euo pipefail
ROOT=$(cd "${1:?usage: bash experiments/ablation_v2.sh DATASETS_ROOT (with train_nodr, train_dr, test_photoreal)}" && pwd)
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-40}
PRETRAINED=${PRETRAINED:-nvidia/mit-b0}
cd "$(dirname "$0")/.."

# Under `mlflow run -e ablation` this script runs inside the ablation's own run (MLFLOW_RUN_ID):
# compare records into it, and each training run is a new run of the same experiment
# (MLFLOW_EXPERIMENT_ID; `mlflow run` refuses one given by both name and id), nested under it.
if [ -n "${MLFLOW_EXPERIMENT_ID:-}" ]; then unset MLFLOW_EXPERIMENT_NAME; fi
train_run() { env -u MLFLOW_RUN_ID mlflow run . --env-manager local -P parent="${MLFLOW_RUN_ID:-}" "$@"; }

for seed in $SEEDS; do
  train_run --run-name nodr_750 -P split="$ROOT/train_nodr" -P frames=750 -P seed="$seed" \
    -P epochs="$EPOCHS" -P lr=6e-5 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
  train_run --run-name dr_750 -P split="$ROOT/train_dr" -P frames=750 -P seed="$seed" \
    -P epochs="$EPOCHS" -P lr=6e-5 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
  train_run --run-name dr_1500 -P split="$ROOT/train_dr" -P frames=1500 -P seed="$seed" \
    -P epochs="$EPOCHS" -P lr=6e-5 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
done
python -m regolith.compare
