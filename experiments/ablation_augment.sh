#!/usr/bin/env bash
# The augmentation lever (issue 20): the DR-750 variant of the v2 ablation (ablation_v2.sh) trained with
# each augmentation choice beside the original's plain hflip, then compare answers each one against hflip
# (compare --delta regolith.augment=hflip:regolith.augment=hflip,gray ...; by tag rather than by variant
# name, so PRETRAINED=nvidia/mit-b2, whose names end @b2, compares the same way): B - A paired by seed,
# with intervals over validation frames, seeds and, with REAL_IMAGES, photos. Written for the rendered sets: on the demo data the numbers say nothing.
#
#   bash experiments/ablation_augment.sh ROOT     # ROOT holds train_dr and test_photoreal
#   mlflow run . --env-manager local -e ablation -P recipe=augment -P data=ROOT -P seeds="0 1 2" \
#     -P real_images=PHOTOS --experiment-name augment
#
# Optional environment: SEEDS, EPOCHS, PRETRAINED and REAL_IMAGES as in ablation_v2.sh (experiments/common.sh);
# AUGMENTS, the space-separated choices each run adds to hflip (default: gray photometric noise blur).
set -euo pipefail
ROOT=$(cd "${1:?usage: bash experiments/ablation_augment.sh DATASETS_ROOT (with train_dr, test_photoreal)}" && pwd)
SEEDS=${SEEDS:-0}
EPOCHS=${EPOCHS:-40}
PRETRAINED=${PRETRAINED:-nvidia/mit-b0}
AUGMENTS=${AUGMENTS:-gray photometric noise blur}
cd "$(dirname "$0")/.."

source experiments/common.sh

DELTAS=""
for seed in $SEEDS; do
  train_run dr_750 "$seed" -P split="$ROOT/train_dr" -P frames=750 -P augment=hflip \
    -P epochs="$EPOCHS" -P lr=6e-5 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
  for choice in $AUGMENTS; do
    train_run "dr_750+$choice" "$seed" -P split="$ROOT/train_dr" -P frames=750 -P augment="hflip,$choice" \
      -P epochs="$EPOCHS" -P lr=6e-5 -P batch=8 -P patience=8 -P pretrained="$PRETRAINED"
  done
done
for choice in $AUGMENTS; do DELTAS="$DELTAS --delta regolith.augment=hflip:regolith.augment=hflip,$choice"; done
# shellcheck disable=SC2086  # one --delta per choice
python -m regolith.compare $DELTAS
