#!/usr/bin/env bash
# Builds one libFuzzer harness under the address sanitizer: Fuzz/build.sh NAME → .build/fuzz/NAME.
# The modules it exercises are compiled with coverage for the fuzzer (static libraries in
# .build/fuzz), then the harness Fuzz/NAME.swift is linked with them.
set -eu
cd "$(dirname "$0")/.."
name=$1
out=.build/fuzz
mkdir -p "$out"
flags=(-O -sanitize=fuzzer,address -parse-as-library -swift-version 6 -enable-testing -I "$out" -I Sources/CZlib -I Sources/CPrefetch)
module() {  # module NAME SOURCES…
  local m=$1; shift
  swiftc "${flags[@]}" -module-name "$m" -emit-module -emit-module-path "$out/$m.swiftmodule" -emit-library -static -o "$out/lib$m.a" "$@"
}
# Static libraries link in dependency order: the harness's modules first, Parser last.
modules=(IR Parser)
module Parser Sources/Parser/*.swift
module IR Sources/IR/*.swift
case "$name" in
  onnx) module ONNX Sources/ONNX/*.swift; modules=(ONNX "${modules[@]}") ;;
  model | nnc) ;;
  data) module Runtime Sources/Runtime/*.swift Sources/Runtime/Kernels/*.swift Sources/Runtime/Data/*.swift; modules=(Runtime "${modules[@]}") ;;
  *) echo "unknown harness '$name' (onnx, model, data, nnc)" >&2; exit 2 ;;
esac
swiftc "${flags[@]}" -module-name Fuzz "Fuzz/$name.swift" -L "$out" "${modules[@]/#/-l}" -lz -o "$out/$name"
echo "$out/$name"
