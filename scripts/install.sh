#!/usr/bin/env bash
# Installs forgerytalker (with the extras in $FORGERYTALKER_EXTRAS, default "test") into the active Python
# environment, wherever pip works: only the public package index is needed.
#
# torch goes first. A torch that is already installed (a CUDA build, say) is kept; otherwise
# torch==$FORGERYTALKER_TORCH (default 2.13.0) is installed. Every later step is then constrained to exactly
# the torch now installed, so no dependency can swap it for another build or pull several GB of GPU packages.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${FORGERYTALKER_EXTRAS-test}"

python -m pip install --upgrade pip
if ! python -c "import torch" >/dev/null 2>&1; then
  python -m pip install "torch==${FORGERYTALKER_TORCH:-2.13.0}"
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
# the distribution's version, as pip sees it (torch.__version__ may add a local tag that pip cannot match)
python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > "$constraints"
echo "Keeping $(cat "$constraints") for every later install"
python -m pip install -c "$constraints" -e ".${extras:+[$extras]}"
