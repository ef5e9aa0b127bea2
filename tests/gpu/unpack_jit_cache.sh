#!/usr/bin/env bash
# Turn the JIT-built FlashInfer modules a device run sent back (DIR/jit.tgz.part-*) into
# .jitcache/aot/<module>/<module>.so (git-ignored), which tests/gpu/device_run.sh installs
# as FlashInfer AOT modules on the next run. Same flashinfer version and GPU arch only.
set -euo pipefail
dir=$1
mkdir -p .jitcache/aot
tmp=$(mktemp -d)
cat "$dir"/jit.tgz.part-* | tar -xzf - -C "$tmp"
find "$tmp" -name '*.so' | while read -r so; do
  name=$(basename "$so" .so)
  mkdir -p ".jitcache/aot/$name" && cp "$so" ".jitcache/aot/$name/$name.so"
done
rm -rf "$tmp"
du -sh .jitcache
