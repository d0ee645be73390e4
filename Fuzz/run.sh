#!/usr/bin/env bash
# Builds and runs one harness for a time: Fuzz/run.sh NAME SECONDS [more libFuzzer flags].
# The corpus starts from the project's own files (models/, Tests/Data/onnx and the ONNX backend
# data when the judges' environment exists) and grows in .build/fuzz/corpus-NAME; a finding is
# written to .build/fuzz/ and the script exits non-zero. Inputs are capped at 2 GB of memory.
set -eu
cd "$(dirname "$0")/.."
name=$1 seconds=$2
shift 2
bash Fuzz/build.sh "$name" > /dev/null
corpus=.build/fuzz/corpus-$name
mkdir -p "$corpus"
case "$name" in
  onnx)
    cp Tests/Data/onnx/*.onnx Tests/Data/fuzz/onnx/*.onnx "$corpus"/
    for d in .build/onnx-venv/lib/python3*/site-packages/onnx/backend/test/data/pytorch-converted/*/; do
      [ -f "$d/model.onnx" ] && cp "$d/model.onnx" "$corpus/$(basename "$d").onnx"
    done ;;
  model) cp models/*.nn "$corpus"/ ;;
  data)  # the first byte picks the kind: 0 CSV, 1 IDX, 2 NPY, 3 NPZ, 4 gzipped CSV, 5 gzipped IDX
    for f in models/data/*.csv; do { printf '\000'; cat "$f"; } > "$corpus/$(basename "$f")"; done ;;
  nnc)  # the first byte picks the repair (0 none, 1 CRC, 2 length and CRC): compiled and trained files
    nnc=$(swift build --show-bin-path)/nnc
    swift build --product nnc > /dev/null
    seeds=$(mktemp -d)
    "$nnc" compile models/xor.nn -o "$seeds/xor.nnc" > /dev/null
    "$nnc" train models/xor.nn --epochs 3 --validation 0.25 --keep-best -o "$seeds/xor-trained.nnc" > /dev/null
    "$nnc" train models/trask3.nn --epochs 1 --dtype f64 -o "$seeds/trask3-f64.nnc" > /dev/null
    for f in "$seeds"/*.nnc; do for r in 0 1 2; do { printf "\\00$r"; cat "$f"; } > "$corpus/$r-$(basename "$f")"; done; done
    rm -r "$seeds" ;;
esac
".build/fuzz/$name" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=200000 -artifact_prefix=".build/fuzz/$name-" "$@" "$corpus"
