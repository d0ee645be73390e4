#!/usr/bin/env bash
# Creates .build/onnx-venv with the outside judges of nnc's ONNX import and export: the onnx package
# (onnx.checker, the backend test data) and ONNX Runtime, from PyPI. Reused when already there.
set -eu
cd "$(dirname "$0")/.."
venv=.build/onnx-venv
if "$venv/bin/python" -c "import onnx, onnxruntime, numpy" 2>/dev/null; then exit 0; fi
rm -rf "$venv"
mkdir -p .build
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "onnx==1.23.2" "onnxruntime==1.32.0" numpy
"$venv/bin/python" -c "import onnx, onnxruntime; print('judges ready: onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__)"
