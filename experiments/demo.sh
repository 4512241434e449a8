#!/usr/bin/env bash
# The README's main command (`make demo`): the whole size-matched ablation on CPU, offline, in
# under ten minutes on two cores.
#   1. generate the demo splits into data/demo (python -m regolith.synth; small procedural
#      stand-ins for the rendered sets, so the numbers say nothing about the real domain gap), and
#      six rock-free photographic JPEGs in data/demo/photos (other sizes, grayscale among them);
#   2. run the ablation entry point with the demo recipe (experiments/ablation_demo.sh): nodr_80,
#      dr_80 and dr_160, each watching the photos while it trains and measured on them after, then
#      compare, all in the experiment regolith-demo of ./mlflow.db;
#   3. the photo step: dr_160 against nodr_80 on the photos (python -m regolith.photos); any rock
#      there is false rock, the study's rock flood in miniature;
#   4. print the deltas, the figures' paths and how to open the MLflow UI on it.
# Running it again adds new runs beside the old ones; compare counts the latest per variant and seed.
#
#   bash experiments/demo.sh       # from anywhere; uses the python and mlflow first on PATH
set -euo pipefail
cd "$(dirname "$0")/.."

EXPERIMENT=regolith-demo
DATA=data/demo
export HF_HUB_OFFLINE=1                          # nothing here needs the hub
export MLFLOW_TRACKING_URI=sqlite:///mlflow.db   # MLflow's default store; artifacts under ./mlruns
unset MLFLOW_RUN_ID MLFLOW_EXPERIMENT_ID MLFLOW_EXPERIMENT_NAME

started=$SECONDS
echo "== 1/4 demo data: $DATA (python -m regolith.synth)"
rm -rf "$DATA"  # generated, deterministic: regenerating is cheaper than checking a half-written copy
python -m regolith.synth "$DATA" --size 128 --seed 0 --dr-frames 160 --nodr-frames 80 --test-frames 32 --photos 6

echo "== 2/4 ablation: nodr_80, dr_80, dr_160, then compare (experiment $EXPERIMENT)"
echo "   pretrained=none: the encoder starts random, because the hub (nvidia/mit-b0) is not reachable"
echo "   offline; the real study fine-tunes the ImageNet encoder (experiments/ablation_v2.sh)."
mlflow run . --env-manager local -e ablation --experiment-name "$EXPERIMENT" -P recipe=demo -P data="$DATA" \
  -P real_images="$DATA/photos"

results=$(ls -d "experiments/results/$EXPERIMENT"/*/ | sort | tail -n 1)
echo "== 3/4 sim-to-real: dr_160 against nodr_80 on $DATA/photos (rock-free: every rock pixel is false rock)"
echo "   these are generated stand-ins in a photographic style, not lunar photographs"
# The runs compare counted (a second demo adds runs of the same names beside the first ones).
read -r dr_160 nodr_80 < <(python -c 'import json, sys; v = json.load(open(sys.argv[1]))["variants"]
print(v["dr_160"]["run_ids"][0], v["nodr_80"]["run_ids"][0])' "${results}ablation-results.json")
python -m regolith.photos --run "$dr_160" --compare "$nodr_80" --images "$DATA/photos"

echo "== 4/4 the answer ($(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s)"
cat "${results}ablation.txt"
echo
echo "figure:  ${results}ablation.png"
echo "results: ${results}ablation-results.json"
echo "photos:  the contact sheet and panels are in the dr_160 run's artifacts, in the folder named above"
url=$(python -c 'import sys, mlflow; from regolith import store
print(store.experiment_url(mlflow.MlflowClient().get_experiment_by_name(sys.argv[1]).experiment_id))' "$EXPERIMENT")
echo "Trained from random init (pretrained=none) on small generated frames: a demo of the pipeline,"
echo "not the study's numbers. Browse the three training runs, their val/iou_rock curves side by side,"
echo "and the compare run 'ablation' in the MLflow UI:"
echo "  mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db"
echo "  then open $url"
