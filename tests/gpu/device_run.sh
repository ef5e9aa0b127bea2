#!/usr/bin/env bash
# Run GPU checks on the device machine (see README "GPU checks"):
#   bash tests/gpu/device_run.sh 'python -m tests.gpu.reference_backend_proof --out $OUT/proof.json' ...
# with carry [".whl", ".jitcache"]. Each argument is one command, run in order with its
# output tee'd to $OUT/<n>.log. FlashInfer modules JIT-built here come back as
# $OUT/jit.tgz.part-*; `bash tests/gpu/unpack_jit_cache.sh DIR` turns them into
# .jitcache/aot/, which later runs load as FlashInfer AOT modules (no JIT).
set -uo pipefail
source .whl/device_setup.sh
export PYTHONPATH="$PWD:$PYTHONPATH"
if [ -d .jitcache/aot ]; then
  mkdir -p /tmp/site/flashinfer/data/aot && cp -r .jitcache/aot/. /tmp/site/flashinfer/data/aot/
  echo "device_run: $(ls .jitcache/aot | wc -l) cached FlashInfer modules"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
status=0
n=0
for cmd in "$@"; do
  n=$((n + 1))
  echo "== [$n] $cmd"
  start=$(date +%s)
  bash -c "$cmd" 2>&1 | tee "$OUT/$n.log" || status=1
  echo "== [$n] exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s"
done
if [ -d "${FLASHINFER_WORKSPACE_BASE:-/nonexistent}" ]; then
  (cd "$FLASHINFER_WORKSPACE_BASE" && find . -name '*.so' -path '*cached_ops*' | tar -cf - -T - | gzip -1 \
    | split -b 15m - "$OUT/jit.tgz.part-")
fi
exit $status
