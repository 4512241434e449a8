#!/usr/bin/env bash
# The size-matched ablation of ablation_v2.sh on the generated demo data, sized to finish on a
# 2-core CPU in minutes: the same three variants at a tenth of the frames (nodr_80, dr_80 =
# the first 80 frames of train_dr, dr_160), 128x128 frames and an epoch cap of 20. The encoder
# starts random (pretrained=none): the demo runs offline, and nvidia/mit-b0 needs the hub. With
# no pretrained encoder to preserve, it trains at lr 6e-4, ten times the fine-tuning rate.
# The recipe's parameters are regolith.sweep's RECIPES["demo"]; this file only passes its arguments on.
#
#   python -m regolith.synth data/demo && bash experiments/ablation_demo.sh data/demo
#   bash experiments/ablation_demo.sh data/demo --seeds "0 1 2" [--epochs N] [--pretrained ID] [--real-images DIR]
#   mlflow run . --env-manager local -e ablation -P recipe=demo -P data=data/demo --experiment-name regolith-demo
#
# --seeds runs every variant once per seed (compare reports mean ± std); --epochs and --pretrained
# override the recipe's for a quick check; --real-images points every run at a folder of real
# photographs. Any other argument is refused. Runs go to the experiment MLflow resolves
# (MLFLOW_EXPERIMENT_NAME, or the mlflow run's).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec python -m regolith.sweep --recipe demo "$@"
