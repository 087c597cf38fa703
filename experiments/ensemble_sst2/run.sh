#!/usr/bin/env bash
# Every ensembler against each teacher alone on real SST-2 validation (872 examples), from
# three all-MiniLM-L6-v2 teachers fine-tuned by sead (no student is trained):
#   minilm       seed 1, a 4,000-example slice of train (slice seed 1), 1 epoch
#   minilm_s2    seed 2, another 4,000-example slice (slice seed 2), 1 epoch
#   minilm_weak  seed 3, only 200 examples (slice seed 3), 10 epochs at lr 1e-4: deliberately
#                weak and over-confident
# Fitted strategies are scored by 5-fold cross-fitting on validation (ensemble.folds).
# The first run fine-tunes the teachers and caches their validation logits (train-split logits
# are not needed: no student); later runs read the cache and take seconds.
# Run from the repository root:  bash experiments/ensemble_sst2/run.sh [more overrides]
# Results go to experiments/ensemble_sst2/$NAME.{txt,json} (NAME defaults to "main").
set -euo pipefail
here=experiments/ensemble_sst2
name="${NAME:-main}"
flock /tmp/sead-cpu.lock time -p python -m sead.run stage=ensemble \
  task=sst2 \
  'teachers=[minilm,minilm_s2,minilm_weak]' \
  ++teachers.minilm.finetune_args.max_train_samples=4000 \
  ++teachers.minilm.finetune_args.train_subsample_seed=1 \
  teachers.minilm.finetune_args.epochs=1 \
  teachers.minilm_s2.finetune_args.max_train_samples=4000 \
  teachers.minilm_s2.finetune_args.epochs=1 \
  data.dir="${SEAD_GLUE_DIR:-../shared/data/glue}/sst2" \
  paths.cache_dir="${SEAD_CACHE:-/work/wt/sead-cache}" \
  hydra.run.dir="$here/run" \
  "$@" | tee "$here/run.log"
# Keep the table (the last block of stdout: Hydra logs there too) and its data.
sed -n '/^model /,$p' "$here/run.log" > "$here/$name.txt"
cp "$here/run/ensemble_comparison.json" "$here/$name.json"
