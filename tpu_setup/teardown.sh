#!/usr/bin/env bash
# Deletes the TPU VM slice (billing stops when it is gone). Fetch logs first if you need them.
# Settings: tpu_setup/config.sh (override with environment variables).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_setup/config.sh
source "$SCRIPT_DIR/config.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [-y] [--logs] [--dry-run]

Deletes TPU VM '$TPU_NAME' in $ZONE. Local files are untouched; files on the workers are lost.
  -y         do not ask for confirmation
  --logs     copy the workers' logs to ./$LOCAL_LOG_DIR/ first (launch.sh --logs)
  --dry-run  print the gcloud commands instead of running them (same as DRY_RUN=1)
USAGE
}

yes=0
logs=0
for arg in "$@"; do
  case "$arg" in
    -y | --yes) yes=1 ;;
    --logs) logs=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
require_gcloud

if [[ "$logs" == "1" ]]; then
  bash "$SCRIPT_DIR/launch.sh" --logs
fi
quiet=()
if [[ "$yes" == "1" ]]; then
  quiet+=(--quiet)
fi
run_gcloud compute tpus tpu-vm delete "$TPU_NAME" "${TPU_FLAGS[@]}" "${quiet[@]}"
if [[ "$DRY_RUN" != "1" ]]; then
  echo "Deleted $TPU_NAME. Check nothing is left: gcloud compute tpus tpu-vm list --zone=$ZONE"
fi
