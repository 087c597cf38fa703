#!/usr/bin/env bash
# Every ensembler against each teacher alone on real SST-2 validation (872 examples), from
# three all-MiniLM-L6-v2 teachers fine-tuned by sead (no student is trained):
#   minilm       seed 1, a 4,000-example slice of train (slice seed 1), 1 epoch
#   minilm_s2    seed 2, another 4,000-example slice (slice seed 2), 1 epoch
#   minilm_weak  seed 3, only 200 examples (slice seed 3), 3 epochs: deliberately weak
# Fitted strategies are scored by 5-fold cross-fitting on validation (ensemble.folds).
# The first run fine-tunes the teachers (~2 x 2 min alone on 2 CPU cores) and caches their
# validation logits; later runs read the cache and take seconds.
# Run from the repository root:  bash experiments/ensemble_sst2/run.sh [more overrides]
set -euo pipefail
here=experiments/ensemble_sst2
flock /tmp/sead-cpu.lock python -m sead.ensemble \
  task=sst2 \
  'teachers=[minilm,minilm_s2,minilm_weak]' \
  ++teachers.minilm.finetune_args.max_train_samples=4000 \
  ++teachers.minilm.finetune_args.train_subsample_seed=1 \
  data.dir="${SEAD_GLUE_DIR:-../shared/data/glue}/sst2" \
  paths.cache_dir="${SEAD_CACHE:-/work/wt/sead-cache}" \
  hydra.run.dir="$here/run" \
  "$@" | tee "$here/run.log"
# Keep the table (the last block of stdout: Hydra logs there too) and its data.
sed -n '/^model /,$p' "$here/run.log" > "$here/table.txt"
cp "$here/run/ensemble_comparison.json" "$here/comparison.json"
