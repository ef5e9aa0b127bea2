"""Summarise recorded vLLM kernel calls into an inventory: per backend, per entry point,
the argument forms the guard's specs have to accept.

For each (backend, entry point): the batch kinds and phases it was called in, how many
calls, the compiled launches under it, and per argument its *form*: kind (tensor,
tuple of tensors, scalar), dtype, device, rank, shapes seen per batch kind, strides,
whether it is a view into a larger storage (``storage_numel > numel`` or a non-zero
offset: a slice of a persistent buffer), which Triton kernels were handed the same
storage earlier in the step (buffers filled in place), and whether its storage is
shared with another argument of the same call (e.g. K and V views of one KV cache).
"""

from __future__ import annotations

from collections import defaultdict
from math import prod
from typing import Any


def _is_tensor(d: Any) -> bool:
    return isinstance(d, dict) and d.get("tensor") is True


def _is_shared_tensor(d: Any) -> bool:  # tests.engines.kernel_calls.describe form
    return isinstance(d, dict) and isinstance(d.get("tensor"), list)


def _tensor_form(d: dict[str, Any]) -> dict[str, Any]:
    numel = prod(d["shape"]) if d["shape"] else 1
    return {
        "dtype": d["dtype"],
        "device": d["device"],
        "rank": len(d["shape"]),
        "contiguous": d["contiguous"],
        "view_of_larger_buffer": d["storage_numel"] > numel or d["storage_offset"] > 0,
    }


def _form(d: Any) -> tuple[str, dict[str, Any]]:
    if _is_tensor(d):
        return "tensor", _tensor_form(d)
    if _is_shared_tensor(d):
        return "tensor", {"dtype": d["dtype"], "device": d["device"], "rank": len(d["tensor"]),
                          "contiguous": d.get("contiguous")}
    if isinstance(d, dict) and "sequence" in d:
        items = d["items"]
        if items and all(_is_tensor(i) for i in items):
            return f"{d['sequence']} of {len(items)} tensors", _tensor_form(items[0])
        return d["sequence"], {}
    if isinstance(d, dict) and ("tuple" in d or "list" in d):
        return "sequence", {}
    if d is None:
        return "None", {}
    if isinstance(d, bool):
        return "bool", {}
    if isinstance(d, int):
        return "int", {}
    if isinstance(d, float):
        return "float", {}
    if isinstance(d, str):
        return "str", {}
    return "object", {}


def _shape(d: Any) -> Any:
    if _is_tensor(d):
        return {"shape": d["shape"], "stride": d["stride"], "storage_numel": d["storage_numel"],
                "storage_offset": d["storage_offset"], **({"values": d["values"]} if "values" in d else {})}
    if _is_shared_tensor(d):
        return {"shape": d["tensor"], "stride": d["stride"], **({"values": d["values"]} if "values" in d else {})}
    if isinstance(d, dict) and "sequence" in d:
        return [_shape(i) for i in d["items"]]
    return d


def build_inventory(calls: list[dict[str, Any]], triton_launches: list[dict[str, Any]]) -> dict[str, Any]:
    inventory: dict[str, dict[str, Any]] = defaultdict(dict)
    for call in calls:
        backend, entry = call.get("backend", "?"), call["entry"]
        slot = inventory[backend].setdefault(entry, {
            "layer": call.get("layer"), "calls": 0, "batches": set(), "phases": set(),
            "graph": set(), "launches": set(), "args": {}, "shared_storage": set(),
            "terminal": bool(call.get("terminal")), "source": call.get("source", "vllm_recorders"),
        })
        slot["calls"] += 1
        slot["batches"].add(call.get("batch"))
        slot["phases"].add(call.get("phase"))
        if call.get("graph"):
            slot["graph"].add(call["graph"])
        for launch in call.get("launches", ()):
            slot["launches"].add(launch["kernel"].split(":")[-1] if ":" in launch["kernel"] else launch["kernel"])
        storages: dict[int, list[str]] = defaultdict(list)
        for name, desc in call["args"].items():
            kind, form = _form(desc)
            arg = slot["args"].setdefault(name, {"kinds": set(), "dtypes": set(), "devices": set(),
                                                 "ranks": set(), "contiguous": set(),
                                                 "view_of_larger_buffer": False,
                                                 "triton_kernels": set(), "examples": {}})
            arg["kinds"].add(kind)
            for key in ("dtype", "device", "rank", "contiguous"):
                if key in form and form[key] is not None:
                    arg[key + ("s" if key != "contiguous" else "")].add(form[key])
            if form.get("view_of_larger_buffer"):
                arg["view_of_larger_buffer"] = True
            items = desc["items"] if isinstance(desc, dict) and "sequence" in desc else [desc]
            for item in items:
                if _is_tensor(item):
                    arg["triton_kernels"].update(item.get("triton_kernels", ()))
                    storages[item["storage"]].append(name)
            example_key = f"{call.get('batch')}" + (f"/{call['graph']}" if call.get("graph") else "")
            if example_key not in arg["examples"] and kind != "None":
                arg["examples"][example_key] = _shape(desc)
        for names in storages.values():
            if len(set(names)) > 1:
                slot["shared_storage"].add(" = ".join(sorted(set(names))))
    out: dict[str, Any] = {}
    for backend, entries in inventory.items():
        out[backend] = {}
        for entry, slot in entries.items():
            args = {}
            for name, arg in slot["args"].items():
                args[name] = {
                    "kinds": sorted(arg["kinds"]),
                    **({"dtypes": sorted(arg["dtypes"])} if arg["dtypes"] else {}),
                    **({"devices": sorted(arg["devices"])} if arg["devices"] else {}),
                    **({"ranks": sorted(arg["ranks"])} if arg["ranks"] else {}),
                    **({"contiguous": sorted(arg["contiguous"])} if arg["contiguous"] else {}),
                    **({"view_of_larger_buffer": True} if arg["view_of_larger_buffer"] else {}),
                    **({"triton_kernels": sorted(arg["triton_kernels"])} if arg["triton_kernels"] else {}),
                    "examples": arg["examples"],
                }
            out[backend][entry] = {
                "layer": slot["layer"],
                "source": slot["source"],
                "terminal": slot["terminal"],
                "calls": slot["calls"],
                "batches": sorted(b for b in slot["batches"] if b),
                "phases": sorted(p for p in slot["phases"] if p),
                **({"cudagraph": sorted(slot["graph"])} if slot["graph"] else {}),
                **({"launches": sorted(slot["launches"])} if slot["launches"] else {}),
                **({"shared_storage": sorted(slot["shared_storage"])} if slot["shared_storage"] else {}),
                "args": args,
            }
    triton: dict[str, set[str]] = defaultdict(set)
    for launch in triton_launches:
        triton[launch.get("backend", "?")].add(launch["kernel"])
    for backend, kernels in triton.items():
        out.setdefault(backend, {})["<triton kernels run in the interpreter>"] = sorted(kernels)
    return out
