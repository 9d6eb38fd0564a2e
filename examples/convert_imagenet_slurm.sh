#!/bin/bash
# Convert an ImageFolder tree (ImageNet's train/ or val/) into N torchpack shards, one SLURM array task per shard.
#
#   sbatch --array=0-63 examples/convert_imagenet_slurm.sh /datasets/imagenet/train /data/imagenet-torchpack/train
#
# Task i writes OUT/NAME-0000i-of-000N.lmdb (NAME defaults to the tree's folder name) and nothing
# else, so the tasks never touch each other's files. Read the finished folder as one dataset:
# torchpack.LMDBImageFolder("/data/imagenet-torchpack/train"). See examples/imagenet_at_scale.md.
#
# Arguments: SRC OUT [NUM_SHARDS]  (NUM_SHARDS defaults to the array's size: keep it equal to it)
# Environment: EXT (.lmdb, or .h5 for HDF5), NAME (shard file stem), STORAGE (encoded | reencode),
#              SHORT_SIDE (with STORAGE=reencode), TORCHPACK (the command, default: torchpack on PATH).
#
# A task that is requeued or rerun continues its shard where it stopped (--resume); a task whose
# shard is already complete exits at once, so rerunning the whole array finishes the missing ones.
#SBATCH --job-name=torchpack-convert
#SBATCH --array=0-63
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=02:00:00
#SBATCH --requeue
#SBATCH --output=torchpack-convert-%A_%a.out

set -euo pipefail

SRC=${1:?usage: convert_imagenet_slurm.sh SRC OUT [NUM_SHARDS]}
OUT=${2:?usage: convert_imagenet_slurm.sh SRC OUT [NUM_SHARDS]}
NUM_SHARDS=${3:-${SLURM_ARRAY_TASK_COUNT:?run as an array job (sbatch --array=0-N) or pass NUM_SHARDS}}
TASK=${SLURM_ARRAY_TASK_ID:?run as an array job: sbatch --array=0-$((NUM_SHARDS - 1)) $0 SRC OUT}
WORKERS=${SLURM_CPUS_PER_TASK:-1}
EXT=${EXT:-.lmdb}
NAME=${NAME:-$(basename "$SRC")}
STORAGE=${STORAGE:-encoded}
TORCHPACK=${TORCHPACK:-torchpack}

# HDF5's file locks fail on many NFS and Lustre mounts, and each task writes its own file anyway.
export HDF5_USE_FILE_LOCKING=FALSE

if (( TASK < 0 || TASK >= NUM_SHARDS )); then
    echo "task $TASK is outside the $NUM_SHARDS shards; make --array=0-$((NUM_SHARDS - 1)) match NUM_SHARDS" >&2
    exit 2
fi

mkdir -p "$OUT"
DST="$OUT/$NAME$EXT"
if (( NUM_SHARDS == 1 )); then
    SHARD=$DST
else
    SHARD=$(printf '%s/%s-%05d-of-%05d%s' "$OUT" "$NAME" "$TASK" "$NUM_SHARDS" "$EXT")
fi
if [[ -f "$SHARD" ]]; then
    echo "$SHARD is already complete (a finished shard exists only under its final name)"
    exit 0
fi

OPTIONS=(--num-shards "$NUM_SHARDS" --shard-index "$TASK" --workers "$WORKERS" --storage "$STORAGE" --resume --quiet)
if [[ -n "${SHORT_SIDE:-}" ]]; then
    OPTIONS+=(--short-side "$SHORT_SIDE")
fi

echo "task $TASK of $NUM_SHARDS on $(hostname): $SRC -> $SHARD with $WORKERS workers"
"$TORCHPACK" convert "$SRC" "$DST" "${OPTIONS[@]}"
