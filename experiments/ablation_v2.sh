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
# mean ± std); EPOCHS and PRETRAINED override the recipe's for a quick check; REAL_IMAGES=DIR points
# every run at a folder of real photographs (experiments/common.sh).
# Runs go to the experiment MLflow resolves (MLFLOW_EXPERIMENT_NAME, or the mlflow run's).
set -euo pipefail
ROOT=$(cd "${1:?usage: bash experiments/ablation_v2.sh DATASETS_ROOT (with train_nodr, train_dr, test_photoreal)}" && pwd)
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-40}
PRETRAINED=${PRETRAINED:-nvidia/mit-b0}
cd "$(dirname "$0")/.."

source experiments/common.sh

for seed in $SEEDS; do
  train_run nodr_750 "$seed" -P split="$ROOT/train_nodr" -P frames=750 \
    -P epochs="$EPOCHS" -P lr=6e-5 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
  train_run dr_750 "$seed" -P split="$ROOT/train_dr" -P frames=750 \
    -P epochs="$EPOCHS" -P lr=6e-5 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
  train_run dr_1500 "$seed" -P split="$ROOT/train_dr" -P frames=1500 \
    -P epochs="$EPOCHS" -P lr=6e-5 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
done
python -m regolith.compare
