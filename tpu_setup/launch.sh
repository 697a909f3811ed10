#!/usr/bin/env bash
# Runs the same command on every worker of the slice (--worker=all), one log per worker.
# Settings: tpu_setup/config.sh (override with environment variables).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_setup/config.sh
source "$SCRIPT_DIR/config.sh"

DEFAULT_COMMAND="python tpu_setup/example_multihost.py --steps 20"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--dry-run] [--detach] [--] [COMMAND...]
       $(basename "$0") [--dry-run] --stop | --logs

Runs COMMAND (default: $DEFAULT_COMMAND) in ~/$REMOTE_DIR with ~/$VENV_DIR
activated on ALL workers of '$TPU_NAME' at once. Every worker must run it: the JAX
runtime waits until all processes of the slice have joined.
Each worker writes ~/$REMOTE_LOG_DIR/<hostname>.log; --logs copies them to ./$LOCAL_LOG_DIR/.

  --detach   start in the background (nohup) and return; follow with --logs
  --stop     stop a detached run (kills the process group recorded on each worker)
  --logs     copy every worker's log to ./$LOCAL_LOG_DIR/
  --dry-run  print the gcloud commands instead of running them (same as DRY_RUN=1)
Options are read up to the first word that is not one of them (or up to --); the rest
is COMMAND, passed on unchanged.

Examples:
  $(basename "$0")
  $(basename "$0") python tpu_setup/example_multihost.py --steps 100 --global-envs 256
  $(basename "$0") --detach python tpu_setup/example_multihost.py --steps 1000
  $(basename "$0") --dry-run jaxrl-llm lm-grpo --parallel shard_map --out runs/grpo
USAGE
}

fetch_logs() {
  count_workers
  run mkdir -p "$LOCAL_LOG_DIR"
  for ((w = 0; w < WORKERS; w++)); do
    run_gcloud compute tpus tpu-vm scp "$TPU_NAME":"$REMOTE_LOG_DIR/*.log" "$LOCAL_LOG_DIR/" \
      "${TPU_FLAGS[@]}" --worker="$w"
  done
  echo "Logs of $WORKERS workers in $LOCAL_LOG_DIR/"
}

action=run
detach=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --detach) detach=1 ;;
    --stop) action=stop ;;
    --logs) action=logs ;;
    --) shift; break ;;
    -*) echo "error: unknown option $1 (put the command after --)" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
if [[ "$action" != "run" && ( $# -gt 0 || "$detach" == "1" ) ]]; then
  echo "error: --$action takes no command and no --detach" >&2
  exit 2
fi
require_gcloud

case "$action" in
  stop)
    on_all_workers "if [ -f ~/$REMOTE_LOG_DIR/run.pid ]; then kill -- -\$(cat ~/$REMOTE_LOG_DIR/run.pid) 2>/dev/null || true; rm -f ~/$REMOTE_LOG_DIR/run.pid; fi"
    exit 0 ;;
  logs) fetch_logs; exit 0 ;;
esac

if [[ $# -gt 0 ]]; then
  user_command="$(printf '%q ' "$@")"
  user_command="${user_command% }"
else
  user_command="$DEFAULT_COMMAND"
fi

setup="set -e; mkdir -p ~/$REMOTE_LOG_DIR; cd ~/$REMOTE_DIR; source ~/$VENV_DIR/bin/activate"
log="\$HOME/$REMOTE_LOG_DIR/\$(hostname).log"
echo "Running on all workers of $TPU_NAME: $user_command"
if [[ "$detach" == "1" ]]; then
  on_all_workers "$setup; setsid nohup bash -c $(printf %q "$user_command") > $log 2>&1 < /dev/null & echo \$! > ~/$REMOTE_LOG_DIR/run.pid; echo \"\$(hostname): started pid \$(cat ~/$REMOTE_LOG_DIR/run.pid), log $log\""
else
  # Output of all workers streams here (process 0 prints the losses); every worker also keeps its log.
  on_all_workers "$setup; set -o pipefail; $user_command 2>&1 | tee $log"
fi
