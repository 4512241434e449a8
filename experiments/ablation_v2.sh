#!/usr/bin/env bash
# The v2 size-matched ablation of the reference study (shared/reference/03-training.txt), as run
# on the GPU box: three SegFormer-B0 fine-tunes that differ only in their training data, then
# compare, which answers what domain randomization adds at matched size (dr_750 vs nodr_750)
# and what doubling the data adds (dr_1500 vs dr_750). dr_750 is the first 750 frames of train_dr.
# The recipe's parameters are regolith.sweep's RECIPES["v2"]; this file only passes its arguments on.
#
#   bash experiments/ablation_v2.sh ROOT       # ROOT holds train_nodr, train_dr, test_photoreal
#   bash experiments/ablation_v2.sh ROOT --seeds "0 1 2" [--epochs N] [--pretrained ID] [--real-images DIR]
#   mlflow run . --env-manager local -e ablation -P data=ROOT [--experiment-name NAME]
#
# --seeds runs every variant once per seed (compare reports mean ± std); --epochs and --pretrained
# override the recipe's for a quick check; --real-images points every run at a folder of real
# photographs. Any other argument is refused. Runs go to the experiment MLflow resolves
# (MLFLOW_EXPERIMENT_NAME, or the mlflow run's).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec python -m regolith.sweep --recipe v2 "$@"
