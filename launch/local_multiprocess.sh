#!/usr/bin/env bash
# launch/local_multiprocess.sh: N jssl processes on this one machine, each with its own
# emulated CPU devices, joined through jax.distributed on localhost: the multi-process path of
# a TPU pod or a GPU cluster (per-process input, collective checkpoints, process-0 logging),
# runnable anywhere.
#
# Usage:
#   launch/local_multiprocess.sh [--dry-run] [--port PORT] NUM_PROCESSES DEVICES_PER_PROCESS \
#       [--] [ARGS of python -m jssl.main ...]
#
# Arguments:
#   NUM_PROCESSES        how many processes to start (>= 1)
#   DEVICES_PER_PROCESS  emulated CPU devices of each process (>= 1); the mesh spans
#                        NUM_PROCESSES x DEVICES_PER_PROCESS devices
#   ARGS                 given unchanged to every `python -m jssl.main` (--config, --workdir,
#                        --config.KEY=VALUE); the script adds --coordinator localhost:PORT
#                        --num_processes N --process_id I
# Options:
#   --dry-run            print the command of each process, run nothing (or DRY_RUN=1)
#   --port PORT          the coordinator's port on localhost (default $JSSL_PORT or 8476)
# Environment: PYTHON (default python3); XLA_FLAGS is kept, the device count appended.
#
# Process 0 prints the progress and the final JSON line. SIGTERM or SIGINT to this script is
# passed on as SIGTERM to every process: they agree on a step, save a checkpoint there and
# exit; rerunning the same command resumes (a second signal kills them). If one process fails,
# the others are stopped. Exit status: the first failing process's, else 0.
#
# Example: 2 processes x 4 devices train exactly as 1 process with 8 devices:
#   launch/local_multiprocess.sh 2 4 -- --config configs/simclr.py:tiny --workdir runs/mp
set -euo pipefail

usage() {
  sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  if [ -n "${1:-}" ]; then echo "error: $1" >&2; fi
  exit 2
}

dry_run="${DRY_RUN:-0}"
port="${JSSL_PORT:-8476}"
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --port)
      [ $# -ge 2 ] || usage '--port needs a value'
      port="$2"; shift 2 ;;
    --port=*) port="${1#--port=}"; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *)
      if [ "${#positional[@]}" -lt 2 ]; then positional+=("$1"); shift; else break; fi ;;
  esac
done
[ "${#positional[@]}" -ge 1 ] || usage 'NUM_PROCESSES is missing'
[ "${#positional[@]}" -ge 2 ] || usage 'DEVICES_PER_PROCESS is missing'
num_processes="${positional[0]}"
devices="${positional[1]}"
[[ "$num_processes" =~ ^[1-9][0-9]*$ ]] || usage "NUM_PROCESSES must be a positive integer, got '$num_processes'"
[[ "$devices" =~ ^[1-9][0-9]*$ ]] || usage "DEVICES_PER_PROCESS must be a positive integer, got '$devices'"
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
  || usage "PORT must be in [1, 65535], got '$port'"

python="${PYTHON:-python3}"
xla_flags="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices"

# The arguments as one shell command line (single quotes where needed).
quote() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

# The command of process $id (with the jssl.main arguments "$@"), as the array cmd.
command_of() {
  cmd=(env "XLA_FLAGS=$xla_flags" JAX_PLATFORMS=cpu "$python" -m jssl.main "$@"
       --coordinator "localhost:$port" --num_processes "$num_processes" --process_id "$id")
}

if [ "$dry_run" = 1 ]; then
  for ((id = 0; id < num_processes; id++)); do
    command_of "$@"
    echo "$(quote "${cmd[@]}") &"
  done
  echo "wait"
  exit 0
fi

running=()  # the pids of the processes still running
termed=' '  # the pids already sent SIGTERM
stop_all() {  # $1: the signal
  for pid in "${running[@]}"; do kill "-$1" "$pid" 2>/dev/null || true; done
  if [ "$1" = TERM ]; then termed=" ${running[*]} "; fi
}
signals=0
# shellcheck disable=SC2329  # invoked by the trap below
on_signal() {  # the first SIGTERM/SIGINT asks the processes to save and stop; a second kills
  signals=$((signals + 1))
  if [ "$signals" -eq 1 ]; then stop_all TERM; else stop_all KILL; fi
}
trap on_signal TERM INT

for ((id = 0; id < num_processes; id++)); do
  command_of "$@"
  "${cmd[@]}" &
  running+=("$!")
done
# A signal that came while the processes were starting reached only those already listed.
if [ "$signals" -gt 0 ]; then
  for pid in "${running[@]}"; do
    [[ "$termed" == *" $pid "* ]] || kill -TERM "$pid" 2>/dev/null || true
  done
fi

status=0
while [ "${#running[@]}" -gt 0 ]; do
  finished=''
  rc=0
  wait -n -p finished "${running[@]}" || rc=$?
  if [ -z "${finished:-}" ]; then continue; fi  # a trapped signal interrupted the wait
  left=()
  for pid in "${running[@]}"; do [ "$pid" = "$finished" ] || left+=("$pid"); done
  running=("${left[@]}")
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    echo "local_multiprocess: process $finished exited with status $rc; stopping the others" >&2
    stop_all TERM
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      alive=0
      for pid in "${running[@]}"; do ! kill -0 "$pid" 2>/dev/null || alive=1; done
      [ "$alive" = 1 ] || break
      sleep 0.5
    done
    stop_all KILL  # one left waiting in a collective for the dead process would wait minutes
  fi
done
exit "$status"
