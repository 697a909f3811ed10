#!/usr/bin/env bash
# Creates a Cloud TPU VM slice with the plain gcloud CLI (no Pathways, no GKE).
# Settings: tpu_setup/config.sh (override with environment variables).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tpu_setup/config.sh
source "$SCRIPT_DIR/config.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--dry-run] [-h]

Creates TPU VM '$TPU_NAME' ($ACCELERATOR_TYPE, image $RUNTIME_VERSION) in $ZONE.
  Single host:  ACCELERATOR_TYPE=v4-8 $(basename "$0")
  Multi-host:   ACCELERATOR_TYPE=v5litepod-16 RUNTIME_VERSION=v2-alpha-tpuv5-lite ZONE=us-west4-a $(basename "$0")
  --dry-run  print the gcloud commands instead of running them (same as DRY_RUN=1)
Environment: PROJECT TPU_NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION SPOT=1 (see config.sh).
Next: ./tpu_setup/provision.sh
USAGE
}

parse_dry_run_and_help "$@"
require_gcloud

extra=()
if [[ "$SPOT" == "1" ]]; then
  extra+=(--spot)
fi

echo "Creating $TPU_NAME: $ACCELERATOR_TYPE, $RUNTIME_VERSION, zone $ZONE, project ${PROJECT:-<gcloud default>}"
run_gcloud compute tpus tpu-vm create "$TPU_NAME" "${TPU_FLAGS[@]}" \
  --accelerator-type="$ACCELERATOR_TYPE" \
  --version="$RUNTIME_VERSION" \
  "${extra[@]}"

count_workers
echo "Workers: $WORKERS"
run_gcloud compute tpus tpu-vm describe "$TPU_NAME" "${TPU_FLAGS[@]}" \
  --format='table(name.basename(), acceleratorType, state, networkEndpoints[].ipAddress)'
