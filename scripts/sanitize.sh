#!/usr/bin/env bash
# Runs the test suite under a sanitizer: scripts/sanitize.sh address|thread [swift test flags…].
# Each sanitizer builds into its own folder (.build/address, .build/thread), so the ordinary build
# stays as it is. The ONNX judges' tests need NNC_ONNX_VENV as in .ci/run (they skip without it).
set -eu
cd "$(dirname "$0")/.."
sanitizer=${1:?usage: scripts/sanitize.sh address|thread [swift test flags]}
shift
case "$sanitizer" in address | thread) ;; *) echo "unknown sanitizer '$sanitizer' (address, thread)" >&2; exit 2 ;; esac
# Leaks found at exit by the address sanitizer are the runtime's own caches, not nnc's: report
# memory errors only. The thread sanitizer reports every race and then fails the run (exit 66).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
swift build --build-tests --sanitize="$sanitizer" --scratch-path ".build/$sanitizer"
swift test --skip-build --sanitize="$sanitizer" --scratch-path ".build/$sanitizer" "$@"
