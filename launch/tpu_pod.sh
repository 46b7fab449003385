#!/usr/bin/env bash
# launch/tpu_pod.sh: train on every worker (host) of a Cloud TPU VM slice or pod at once.
#
# Usage:
#   launch/tpu_pod.sh [--dry-run] [--skip-install] [--project PROJECT] TPU_NAME ZONE CONFIG \
#       WORKDIR [--] [more ARGS of python -m jssl.main ...]
#
# Arguments:
#   TPU_NAME   the TPU VM (gcloud compute tpus tpu-vm list --zone ZONE)
#   ZONE       its zone, e.g. us-central2-b
#   CONFIG     the config and preset, e.g. configs/simclr.py:imagenet (a path in the repository)
#   WORKDIR    where checkpoints and logs go: storage every worker reaches, i.e. gs://BUCKET/...
#   ARGS       more flags for every worker, e.g. --config.batch_size=4096
# Options:
#   --dry-run          print the gcloud commands, run nothing (or DRY_RUN=1)
#   --skip-install     jssl is already installed on the workers: only train
#   --project PROJECT  passed to gcloud (default: gcloud's configured project)
# Environment: JAX_VERSION (default 0.10.2, the version jssl pins) for `jax[tpu]`; PYTHON, the
# workers' interpreter (default python3; jssl needs Python >= 3.11, so on an image that ships
# an older python3, install python3.11 there and set PYTHON=python3.11).
#
# What it runs (all through `gcloud compute tpus tpu-vm ... --worker=all`):
#   1. copies this checkout's committed tree (git archive HEAD) to every worker and installs it
#      with its pinned requirements and jax[tpu] (skipped with --skip-install);
#   2. runs on every worker `python3 -m jssl.main --config CONFIG --workdir WORKDIR
#      --coordinator auto ARGS`: each worker is one JAX process, jax.distributed finds the
#      others from the TPU metadata, the mesh spans every chip of the slice.
# Only worker 0 prints progress. If the ssh session drops, the workers stop; run this from a
# machine that stays up (or under tmux/screen). Rerunning the same command resumes from the
# last checkpoint in WORKDIR.
#
# Queued resources (how capacity, spot or reserved, is usually obtained now): request the slice,
# wait until it is ACTIVE, then run this script with the node's name:
#   gcloud compute tpus queued-resources create my-qr --node-id my-tpu --zone ZONE \
#     --accelerator-type v4-32 --runtime-version tpu-ubuntu2204-base [--spot]
#   gcloud compute tpus queued-resources describe my-qr --zone ZONE   # state: ACTIVE
#   launch/tpu_pod.sh my-tpu ZONE configs/simclr.py:imagenet gs://my-bucket/simclr-in1k
# A spot slice that is preempted sends SIGTERM: jssl saves and exits; once a new slice is
# ACTIVE, the same command resumes.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  if [ -n "${1:-}" ]; then echo "error: $1" >&2; fi
  exit 2
}

dry_run="${DRY_RUN:-0}"
install=1
project=()
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --skip-install) install=0; shift ;;
    --project)
      [ $# -ge 2 ] || usage '--project needs a value'
      project=(--project "$2"); shift 2 ;;
    --project=*) project=(--project "${1#--project=}"); shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*)
      if [ "${#positional[@]}" -lt 4 ]; then usage "unknown option $1"; fi
      break ;;
    *)
      if [ "${#positional[@]}" -lt 4 ]; then positional+=("$1"); shift; else break; fi ;;
  esac
done
names=(TPU_NAME ZONE CONFIG WORKDIR)
for i in 0 1 2 3; do
  [ "${#positional[@]}" -gt "$i" ] || usage "${names[$i]} is missing"
done
tpu="${positional[0]}"
zone="${positional[1]}"
config="${positional[2]}"
workdir="${positional[3]}"
case "$workdir" in
  gs://*) ;;
  *) echo "warning: WORKDIR '$workdir' is not on gs://: on a multi-host slice every worker" \
       "must see the same checkpoints" >&2 ;;
esac

jax_version="${JAX_VERSION:-0.10.2}"
ssh=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" "${project[@]}" --worker=all)
scp=(gcloud compute tpus tpu-vm scp --zone "$zone" "${project[@]}" --worker=all)
archive=jssl-src.tar.gz

# The arguments as one shell command line (single quotes where needed).
quote() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}
python="${PYTHON:-python3}"
train_command="cd jssl && $(quote "$python" -m jssl.main --config "$config" --workdir "$workdir" \
  --coordinator auto "$@")"
install_command="rm -rf jssl && mkdir jssl && tar -xzf $archive -C jssl && \
$python -m pip install -q \"jax[tpu]==$jax_version\" -r jssl/requirements.txt -e jssl"
repo="$(cd "$(dirname "$0")/.." && pwd)"

commands=()
if [ "$install" = 1 ]; then
  local_archive="${TMPDIR:-/tmp}/$archive"
  commands+=("$(quote git -C "$repo" archive --format=tar.gz -o "$local_archive" HEAD)")
  commands+=("$(quote "${scp[@]}" "$local_archive" "$tpu:$archive")")
  commands+=("$(quote "${ssh[@]}" --command "$install_command")")
fi
commands+=("$(quote "${ssh[@]}" --command "$train_command")")

for c in "${commands[@]}"; do
  if [ "$dry_run" = 1 ]; then
    echo "$c"
  else
    echo "+ $c" >&2
    eval "$c"
  fi
done
