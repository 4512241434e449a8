#!/usr/bin/env bash
# The size-matched ablation of ablation_v2.sh on the generated demo data, sized to finish on a
# 2-core CPU in minutes: the same three variants at a tenth of the frames (nodr_80, dr_80 =
# the first 80 frames of train_dr, dr_160), 128x128 frames and an epoch cap of 20. The encoder
# starts random (pretrained=none): the demo runs offline, and nvidia/mit-b0 needs the hub. With
# no pretrained encoder to preserve, it trains at lr 6e-4, ten times the fine-tuning rate.
#
#   python -m regolith.synth data/demo && bash experiments/ablation_demo.sh data/demo
#   mlflow run . --env-manager local -e ablation -P recipe=demo -P data=data/demo --experiment-name regolith-demo
#
# Optional environment: SEEDS="0 1 2" runs every variant once per seed (compare reports
# mean ± std); EPOCHS and PRETRAINED override the recipe's for a quick check; REAL_IMAGES=DIR points
# every run at a folder of real photographs (experiments/common.sh).
# Runs go to the experiment MLflow resolves (MLFLOW_EXPERIMENT_NAME, or the mlflow run's).
set -euo pipefail
ROOT=$(cd "${1:?usage: bash experiments/ablation_demo.sh DATA_ROOT (from python -m regolith.synth DATA_ROOT)}" && pwd)
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-20}
PRETRAINED=${PRETRAINED:-none}
cd "$(dirname "$0")/.."

source experiments/common.sh

for seed in $SEEDS; do
  train_run nodr_80 "$seed" -P split="$ROOT/train_nodr" -P frames=80 \
    -P epochs="$EPOCHS" -P lr=6e-4 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
  train_run dr_80 "$seed" -P split="$ROOT/train_dr" -P frames=80 \
    -P epochs="$EPOCHS" -P lr=6e-4 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
  train_run dr_160 "$seed" -P split="$ROOT/train_dr" -P frames=160 \
    -P epochs="$EPOCHS" -P lr=6e-4 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
done
python -m regolith.compare
