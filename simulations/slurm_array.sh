#!/usr/bin/env bash
# One sweep as a SLURM job array: array task i runs shard i/N of the work units into one shared
# output directory (units are written atomically, so tasks never collide), then one dependent
# job checks that every unit is present and writes the results table.
#
#   jid=$(sbatch --parsable --array=0-31 simulations/slurm_array.sh simulations/minimax.toml runs/minimax)
#   sbatch --dependency=afterany:$jid --wrap "moe-lora merge runs/minimax"
#
# afterany (not afterok) so that the merge also runs, and names the missing units, when some array
# tasks failed or hit the time limit; use afterok to merge only after a clean run. A task that
# was killed resumes where it stopped: resubmit the same array (finished units are skipped), or
# only the failed indices with the shard count fixed by SHARDS, so that index i is still shard i/N:
#   sbatch --export=ALL,SHARDS=32 --array=3,17 simulations/slurm_array.sh CONFIG DIR
# Without SHARDS the array must be a contiguous range with no step (0-31, not 0-62:2): N is its
# task count and shard i is its i-th task. DIR must be on a file system every node sees.
# Expected throughput per task: docs/cluster.md.
#
#SBATCH --job-name=moe-lora
#SBATCH --array=0-31
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%A_%a.out
#
# Usage: sbatch [--array=0-N-1] simulations/slurm_array.sh CONFIG [DIR]
#   CONFIG  experiment config (TOML)
#   DIR     output directory, shared by all tasks (default runs/<config file stem>)
# Set MOE_LORA to the moe-lora command if it is not on PATH (e.g. MOE_LORA=~/venv/bin/moe-lora).
set -euo pipefail

config=${1:?usage: sbatch --array=0-N-1 slurm_array.sh CONFIG [DIR]}
out=${2:-runs/$(basename "$config" .toml)}
: "${SLURM_ARRAY_TASK_ID:?not an array task: submit with sbatch --array=0-N-1}"
: "${SLURM_ARRAY_TASK_COUNT:?not an array task: submit with sbatch --array=0-N-1}"
if [[ -n "${SHARDS:-}" ]]; then
  # Resubmitted indices: the array task id is the shard index, the shard count is SHARDS.
  shards=$SHARDS
  shard=$SLURM_ARRAY_TASK_ID
else
  # Shard index from 0 whatever the array's first index.
  shards=$SLURM_ARRAY_TASK_COUNT
  shard=$((SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}))
fi

echo "moe-lora shard $shard/$shards of $config into $out on $(hostname)" >&2
exec ${MOE_LORA:-moe-lora} run "$config" --out "$out" --shard "$shard/$shards" --quiet
