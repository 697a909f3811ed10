#!/usr/bin/env bash
# Puts the same code and the same Python environment on every worker of the slice.
# Settings: tpu_setup/config.sh (override with environment variables).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck source=tpu_setup/config.sh
source "$SCRIPT_DIR/config.sh"

usage() {
  cat <<USAGE
Usage: $(basename "$0") [--dry-run] [-h]

On every worker of '$TPU_NAME' (--worker=all):
  1. gets the code: git clone \$REPO_URL (if set) or scp of this checkout to ~/$REMOTE_DIR
  2. creates ~/$VENV_DIR with Python $PYTHON_VERSION (via uv) and runs
     pip install -e . "$JAX_SPEC" -f $LIBTPU_INDEX (then --no-deps: ${EXTRA_PIP_NO_DEPS:-nothing})
  3. checks that every worker has the same jax/jaxlib/libtpu versions and sees its TPU chips.
Re-run it after changing code (it re-copies the checkout and reinstalls).
  --dry-run  print the gcloud commands instead of running them (same as DRY_RUN=1)
Environment: REPO_URL REPO_REF JAX_SPEC EXTRA_PIP_NO_DEPS PYTHON_VERSION TPU_NAME ZONE PROJECT (see config.sh).
USAGE
}

parse_dry_run_and_help "$@"
require_gcloud

# 1. Code.
if [[ -n "$REPO_URL" ]]; then
  echo "Cloning $REPO_URL on all workers"
  on_all_workers "set -e; if [ -d ~/$REMOTE_DIR/.git ]; then git -C ~/$REMOTE_DIR fetch --all --quiet; else git clone --quiet $(printf %q "$REPO_URL") ~/$REMOTE_DIR; fi; if [ -n $(printf %q "$REPO_REF") ]; then git -C ~/$REMOTE_DIR checkout --quiet $(printf %q "$REPO_REF"); fi; git -C ~/$REMOTE_DIR log -1 --format='%h %s'"
else
  if [[ "$DRY_RUN" == "1" ]]; then
    archive="${TMPDIR:-/tmp}/jaxrl_llm-dry-run/jaxrl_llm.tar.gz"  # printed only, never written
  else
    archive="$(mktemp -d)/jaxrl_llm.tar.gz"
  fi
  echo "Copying $REPO_ROOT to ~/$REMOTE_DIR on all workers"
  run tar -C "$REPO_ROOT" -czf "$archive" \
    --exclude=.git --exclude=runs --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.venv --exclude=.pytest_cache --exclude="$LOCAL_LOG_DIR" .
  run_gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME":~/jaxrl_llm.tar.gz "${TPU_FLAGS[@]}" --worker=all
  on_all_workers "set -e; rm -rf ~/$REMOTE_DIR; mkdir -p ~/$REMOTE_DIR; tar -xzf ~/jaxrl_llm.tar.gz -C ~/$REMOTE_DIR"
  run rm -f "$archive"
fi

# 2. Python environment (the TPU images ship Python 3.10; the project needs >= 3.11).
extra_install=""
if [[ -n "$EXTRA_PIP_NO_DEPS" ]]; then
  extra_install="; ~/$VENV_DIR/bin/python -m pip install --quiet --no-deps $EXTRA_PIP_NO_DEPS"
fi
echo "Installing Python $PYTHON_VERSION, jaxrl_llm and $JAX_SPEC on all workers"
on_all_workers "set -e; export PATH=\$HOME/.local/bin:\$PATH; command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; uv venv --quiet --allow-existing --python $PYTHON_VERSION ~/$VENV_DIR; uv pip install --quiet --python ~/$VENV_DIR/bin/python pip; cd ~/$REMOTE_DIR; ~/$VENV_DIR/bin/python -m pip install --quiet -e . $(printf %q "$JAX_SPEC") -f $LIBTPU_INDEX$extra_install"

# 3. Same versions everywhere, chips visible. Importing jax does not start the TPU runtime,
# so this is safe to run on one worker at a time; the device check below uses all workers.
echo "Versions per worker:"
on_all_workers "\$HOME/$VENV_DIR/bin/python -c \"import jax, jaxlib, importlib.metadata as m, socket; print(socket.gethostname(), 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'libtpu', m.version('libtpu'))\""
echo "Devices (every worker joins the distributed runtime):"
on_all_workers "cd ~/$REMOTE_DIR && ~/$VENV_DIR/bin/python -c \"from jaxrl_llm.training import distributed; distributed.initialize(); print(distributed.process_info())\""
echo "Provisioned. Next: ./tpu_setup/launch.sh"
