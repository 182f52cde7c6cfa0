#!/usr/bin/env bash
# Installs forgerytalker with its test extras into the active Python environment.
# The CPU build of torch goes first and stays pinned through constraints.txt: otherwise a dependency would
# pull the newest CUDA build of torch and several GB of GPU packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip
python -m pip install "torch==2.13.0"
python -m pip install -c constraints.txt -e ".[test]"
