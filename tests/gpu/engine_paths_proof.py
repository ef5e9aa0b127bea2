"""The FlashInfer paths SGLang and vLLM take on Hopper, guarded against the real kernels.

Run through the device tool on a Hopper GPU (see README "GPU checks")::

    bash tests/gpu/device_run.sh 'python -m tests.gpu.engine_paths_proof --out $OUT/engine_paths.json'

Each path is called the way the engines call it (forms taken from the CPU kits under
``tests/engines/``, which run the engines' own backends):

* ``paged-prefix``: SGLang's extend: ``BatchPrefillWithPagedKVCacheWrapper.begin_forward``
  over the cached prefix only (page size 1, 3-D token buffers ``(k[N, Hkv, D], v[N, Hkv, D])``,
  an index buffer larger than used) and ``forward_return_lse(..., causal=False)``;
* ``ragged``: the new tokens through ``BatchPrefillWithRaggedKVCacheWrapper.begin_forward`` /
  ``forward_return_lse(causal=True)``, merged with the prefix by ``flashinfer.cascade.merge_state``;
* ``paged-decode``: ``BatchDecodeWithPagedKVCacheWrapper.begin_forward`` / ``forward`` on 3-D
  token buffers;
* ``mla``: ``BatchMLAPagedAttentionWrapper.plan`` / ``run`` (ckv 512 + kpe 64, page size 1);
* ``xqa``: vLLM's Hopper decode, ``flashinfer.decode.xqa_batch_decode_with_kv_cache`` with a
  4-D NHD paged cache and a ``[R, 64]`` block table;
* ``fmha-v2``: SGLang 0.5.23's trtllm_mha extend on SM90, ``trtllm_fmha_v2_prefill`` with
  ``Q_PAGED_KV_NHD``.

For each path: the output with the guard not installed, then with ``FMHA_GUARD=values``
(installed through ``runtime_checks.install``): they must be bit-identical
(``torch.equal``). Then each seeded fault (a page id past the pool, a negative id, a
block table sliced by columns, DP padding after planning) must raise
``FmhaInvariantError`` before the launch, and a valid launch right after must still
match (the CUDA context is healthy). The report is JSON: per path ``bit_identical``,
per fault the invariant raised (``null`` when nothing was raised) and whether it is
the expected one, and any error text.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any, Callable

import torch

DEV = "cuda"
HEADS, KV_HEADS, HEAD_DIM = 8, 2, 128
PREFIX = [37, 17, 64, 100]
NEW = [5, 17, 1, 40]


def _indptr(lengths: list[int]) -> torch.Tensor:
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int32, device=DEV)


def _workspace() -> torch.Tensor:
    return torch.zeros(256 * 1024 * 1024, dtype=torch.uint8, device=DEV)


class TokenPool:
    """SGLang's page-size-1 KV pool: 3-D token buffers and token-slot indices."""

    def __init__(self, slots: int = 1024, seed: int = 0) -> None:
        g = torch.Generator(device="cpu").manual_seed(seed)
        self.k = torch.randn(slots, KV_HEADS, HEAD_DIM, generator=g).to(DEV, torch.bfloat16)
        self.v = torch.randn(slots, KV_HEADS, HEAD_DIM, generator=g).to(DEV, torch.bfloat16)
        self.slots = slots
        perm = torch.randperm(slots, generator=g).to(torch.int32)
        self.indices = torch.zeros(4 * slots, dtype=torch.int32, device=DEV)  # larger than used
        self.indices[:slots] = perm.to(DEV)


# --------------------------------------------------------------------------- paths


def paged_prefix(pool: TokenPool, faults: dict[str, Any] | None = None) -> torch.Tensor:
    import flashinfer

    f = faults or {}
    qo = _indptr(NEW)
    kv = _indptr(PREFIX)
    indices = f.get("indices", pool.indices)
    last = torch.ones(len(PREFIX), dtype=torch.int32, device=DEV)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(_workspace(), "NHD", backend="fa2")
    w.begin_forward(qo, kv, indices, last, HEADS, KV_HEADS, HEAD_DIM, 1, causal=False, q_data_type=torch.bfloat16)
    q = torch.randn(int(qo[-1]), HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(1)).to(DEV, torch.bfloat16)
    out, _lse = w.forward_return_lse(q, (pool.k, pool.v), causal=False)
    torch.cuda.synchronize()
    return out


def ragged(pool: TokenPool, faults: dict[str, Any] | None = None) -> torch.Tensor:
    import flashinfer

    f = faults or {}
    qo = _indptr(NEW)
    kv = f.get("kv_indptr", _indptr(NEW))
    g = torch.Generator().manual_seed(2)
    q = torch.randn(int(qo[-1]), HEADS, HEAD_DIM, generator=g).to(DEV, torch.bfloat16)
    k = torch.randn(int(qo[-1]), KV_HEADS, HEAD_DIM, generator=g).to(DEV, torch.bfloat16)
    v = torch.randn(int(qo[-1]), KV_HEADS, HEAD_DIM, generator=g).to(DEV, torch.bfloat16)
    w = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(_workspace(), "NHD", backend="fa2")
    w.begin_forward(qo, kv, HEADS, KV_HEADS, HEAD_DIM, q_data_type=torch.bfloat16)
    o1, s1 = w.forward_return_lse(q, k, v, causal=True)
    o2, s2 = paged_prefix_lse(pool)
    out, _ = flashinfer.cascade.merge_state(o1, s1, o2, s2)
    torch.cuda.synchronize()
    return out


def paged_prefix_lse(pool: TokenPool) -> tuple[torch.Tensor, torch.Tensor]:
    import flashinfer

    qo, kv = _indptr(NEW), _indptr(PREFIX)
    last = torch.ones(len(PREFIX), dtype=torch.int32, device=DEV)
    w = flashinfer.BatchPrefillWithPagedKVCacheWrapper(_workspace(), "NHD", backend="fa2")
    w.begin_forward(qo, kv, pool.indices, last, HEADS, KV_HEADS, HEAD_DIM, 1, causal=False, q_data_type=torch.bfloat16)
    q = torch.randn(int(qo[-1]), HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(2)).to(DEV, torch.bfloat16)
    return w.forward_return_lse(q, (pool.k, pool.v), causal=False)


def paged_decode(pool: TokenPool, faults: dict[str, Any] | None = None) -> torch.Tensor:
    import flashinfer

    f = faults or {}
    lens = [p + n for p, n in zip(PREFIX, NEW)]
    kv = _indptr(lens)
    indices = f.get("indices", pool.indices)
    last = torch.ones(len(lens), dtype=torch.int32, device=DEV)
    w = flashinfer.BatchDecodeWithPagedKVCacheWrapper(_workspace(), "NHD")
    w.begin_forward(kv, indices, last, HEADS, KV_HEADS, HEAD_DIM, 1, data_type=torch.bfloat16, q_data_type=torch.bfloat16)
    rows = f.get("rows", len(lens))
    q = torch.randn(rows, HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(3)).to(DEV, torch.bfloat16)
    out = w.forward(q, (pool.k, pool.v))
    torch.cuda.synchronize()
    return out


def mla(pool: TokenPool, faults: dict[str, Any] | None = None) -> torch.Tensor:
    import flashinfer

    f = faults or {}
    heads, ckv_dim, kpe_dim = 16, 512, 64
    g = torch.Generator().manual_seed(4)
    slots = pool.slots
    ckv = torch.randn(slots, 1, ckv_dim, generator=g).to(DEV, torch.bfloat16)
    kpe = torch.randn(slots, 1, kpe_dim, generator=g).to(DEV, torch.bfloat16)
    lens = [p + n for p, n in zip(PREFIX, NEW)]
    qo, kv = _indptr(NEW), _indptr(lens)
    kv_len = torch.tensor(lens, dtype=torch.int32, device=DEV)
    indices = f.get("indices", pool.indices)
    w = flashinfer.mla.BatchMLAPagedAttentionWrapper(_workspace(), backend="fa2")
    w.plan(qo, kv, indices, kv_len, heads, ckv_dim, kpe_dim, 1, True, 1.0 / (ckv_dim + kpe_dim) ** 0.5,
           torch.bfloat16, torch.bfloat16)
    q_nope = torch.randn(int(qo[-1]), heads, ckv_dim, generator=g).to(DEV, torch.bfloat16)
    q_pe = torch.randn(int(qo[-1]), heads, kpe_dim, generator=g).to(DEV, torch.bfloat16)
    out = w.run(q_nope, q_pe, ckv, kpe)
    torch.cuda.synchronize()
    return out


PAGE = 16


def _paged_cache(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    g = torch.Generator().manual_seed(seed)
    num_pages = 256
    k = torch.randn(num_pages, PAGE, KV_HEADS, HEAD_DIM, generator=g).to(DEV, torch.bfloat16)
    v = torch.randn(num_pages, PAGE, KV_HEADS, HEAD_DIM, generator=g).to(DEV, torch.bfloat16)
    perm = torch.randperm(num_pages, generator=g).to(torch.int32)
    return k, v, perm, num_pages


def xqa(_pool: TokenPool, faults: dict[str, Any] | None = None) -> torch.Tensor:
    import flashinfer.decode

    f = faults or {}
    k, v, perm, _ = _paged_cache(5)
    lens = [p + n for p, n in zip(PREFIX, NEW)]
    width = 64
    table = perm[: len(lens) * width].reshape(len(lens), width).contiguous().to(DEV)
    table = f.get("block_tables", lambda t: t)(table)
    seq_lens = torch.tensor(lens, dtype=torch.int32, device=DEV)
    q = torch.randn(len(lens), HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(6)).to(DEV, torch.bfloat16)
    out = flashinfer.decode.xqa_batch_decode_with_kv_cache(
        q, (k, v), _workspace(), table, seq_lens, max(lens), bmm1_scale=HEAD_DIM ** -0.5, kv_layout="NHD")
    torch.cuda.synchronize()
    return out


def fmha_v2(_pool: TokenPool, faults: dict[str, Any] | None = None) -> torch.Tensor:
    import flashinfer.prefill

    f = faults or {}
    k, v, perm, num_pages = _paged_cache(7)
    kv = torch.cat([k, v])  # one allocation: fmha_v2 counts V's block offsets from K's base pointer
    k, v = kv[:num_pages], kv[num_pages:]
    lens = [p + n for p, n in zip(PREFIX, NEW)]
    pages = max(-(-n // PAGE) for n in lens)
    table = perm[: len(lens) * pages].reshape(len(lens), pages).to(DEV)
    # [bs, 2 (k, v), pages] pre-expanded block offsets, as trtllm_mha builds them
    block_tables = torch.stack([table, table + num_pages], dim=1).contiguous()
    if "indices" in f:
        block_tables = f["indices"](block_tables)
    q = torch.randn(sum(NEW), HEADS, HEAD_DIM, generator=torch.Generator().manual_seed(8)).to(DEV, torch.bfloat16)
    out = flashinfer.prefill.trtllm_fmha_v2_prefill(
        (q, (k, v)), "Q_PAGED_KV_NHD", _workspace(), torch.tensor(lens, dtype=torch.int32, device=DEV),
        max(NEW), max(lens), HEAD_DIM ** -0.5, 1.0, f.get("batch_size", len(lens)), _indptr(NEW), _indptr(lens),
        block_tables=block_tables, mask_mode="causal")
    torch.cuda.synchronize()
    return out[0] if isinstance(out, tuple) else out


def _past_pool(pool: TokenPool) -> torch.Tensor:
    bad = pool.indices.clone()
    bad[3] = pool.slots + 2
    return bad


def _negative(pool: TokenPool) -> torch.Tensor:
    bad = pool.indices.clone()
    bad[1] = -1
    return bad


PATHS: dict[str, Callable[..., torch.Tensor]] = {
    "paged-prefix": paged_prefix,
    "ragged": ragged,
    "paged-decode": paged_decode,
    "mla": mla,
    "xqa": xqa,
    "fmha-v2": fmha_v2,
}

#: (path, fault name, fault arguments built from the pool, expected invariant id or ids)
FAULTS: list[tuple[str, str, Callable[[TokenPool], dict[str, Any]], "str | tuple[str, ...]"]] = [
    ("paged-prefix", "page id past the pool", lambda p: {"indices": _past_pool(p)}, "page-id-range"),
    ("paged-prefix", "negative page id", lambda p: {"indices": _negative(p)}, "page-id-range"),
    ("ragged", "kv_indptr past the k/v rows", lambda p: {"kv_indptr": _indptr([n + 3 for n in NEW])}, "cu-seqlens-monotone"),
    ("paged-decode", "page id past the pool", lambda p: {"indices": _past_pool(p)}, "page-id-range"),
    ("paged-decode", "DP-padded query rows after planning", lambda p: {"rows": len(PREFIX) + 2},
     ("query-rows", "batch-size")),
    ("mla", "page id past the pool", lambda p: {"indices": _past_pool(p)}, "page-id-range"),
    ("xqa", "block table sliced by columns (row stride 128, width 64)",
     lambda p: {"block_tables": lambda t: torch.cat([t, t], dim=1)[:, ::2]}, "metadata-dtype-device"),
    ("xqa", "page id past the pool", lambda p: {"block_tables": lambda t: t.index_fill(1, torch.tensor([0], device=DEV), 300)},
     "page-id-range"),
    ("fmha-v2", "DP-padded batch_size", lambda p: {"batch_size": len(NEW) + 2}, "batch-size"),
    ("fmha-v2", "page id past the pool", lambda p: {"indices": lambda t: t.index_fill(2, torch.tensor([0], device=DEV), 300)},
     "page-id-range"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of: " + ", ".join(PATHS))
    args = parser.parse_args(argv)
    chosen = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(chosen) - set(PATHS))
    if unknown:
        parser.error(f"unknown path(s) {unknown}; known: {list(PATHS)}")
    import flashinfer

    import runtime_checks
    from guardrails import FmhaInvariantError

    pool = TokenPool()
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "flashinfer": flashinfer.__version__, "paths": {}, "faults": []}
    unguarded: dict[str, torch.Tensor] = {}
    for name, path in PATHS.items():
        if name not in chosen:
            continue
        try:
            unguarded[name] = path(pool).clone()
            report["paths"][name] = {"ran": True}
        except Exception as exc:
            report["paths"][name] = {"ran": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    runtime_checks.install("values", "raise")
    from runtime_checks.state import STATE

    for name, path in PATHS.items():
        if name not in unguarded:
            continue
        entry = report["paths"][name]
        try:
            entry["bit_identical"] = bool(torch.equal(path(pool), unguarded[name]))
        except Exception as exc:
            entry["guarded_error"] = f"{type(exc).__name__}: {exc}"[:2000]
    for path_name, fault, build, expected in FAULTS:
        if path_name not in chosen:
            continue
        row: dict[str, Any] = {"path": path_name, "fault": fault, "expected": expected}
        if path_name not in unguarded:
            row["skipped"] = "path did not run unguarded"
            report["faults"].append(row)
            continue
        try:
            PATHS[path_name](pool, build(pool))
            row["raised"] = None
        except FmhaInvariantError as exc:
            row["raised"] = exc.invariant
            row["message"] = str(exc).splitlines()[0][:300]
        except Exception as exc:
            row["raised"] = None
            row["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        row["ok"] = row.get("raised") in ((expected,) if isinstance(expected, str) else expected)
        try:
            row["healthy_after"] = bool(torch.equal(PATHS[path_name](pool), unguarded[path_name]))
        except Exception as exc:
            row["healthy_after"] = False
            row["after_error"] = f"{type(exc).__name__}: {exc}"[:500]
        report["faults"].append(row)
    report["guard"] = {"launches": STATE.launches, "internal_errors": sorted(STATE.internal_errors)}
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    json.dump(report, sys.stdout, indent=1)
    print()
    bits = all(p.get("bit_identical") for p in report["paths"].values())
    caught = all(f.get("ok") for f in report["faults"])
    print(f"ALL OK: {bits and caught} (bit-identical: {bits}, faults caught: {caught})")
    return 0 if bits and caught else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(2)
