#!/usr/bin/env python
"""How accurate grucy's low precision is: the layer's error against float64, per shape.

For each shape (the benchmark's core shapes by default: same weights, from
``grucy.reference.GRU(I, H, seed=0)``, and the same standard-normal data as
``bench_gru.py --seed 0``), the output y of one layer is computed in float64 and
compared with grucy float32, grucy bf16 (``GRU(precision="bf16")``), grucy int8
(``grucy.quantize``) and, when torch is installed, PyTorch's dynamic int8 GRU
(``torch.ao.nn.quantized.dynamic.GRU`` from the same ``torch.nn.GRU``, torch's default
dynamic qconfig).  Reported: the largest absolute error of y (y lies in (-1, 1)), its
root mean square, and for bf16 training the largest error of dx and of the weight
gradients relative to the largest float64 value of each.

    python bench/lowp_accuracy.py [--shapes 1,2 | BxTxIxH,...] [--markdown] [--json PATH]

Deterministic: the same figures on any CPU (the kernels give the same bits everywhere;
torch's may differ between its own kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _bench_args import output_path, parse_shapes  # noqa: E402
from _bench_peers import DEFAULT_SHAPES, Problem  # noqa: E402


def _layers(p, grucy):
    out = {}
    for name, kwargs in (("float64", dict(dtype=np.float64)), ("fp32", {}),
                         ("bf16", dict(precision="bf16"))):
        g = grucy.GRU(p.I, p.H, seed=0, **kwargs)
        g.load_state_dict(p.state)
        out[name] = g
    out["int8"] = grucy.quantize(out["fp32"], "int8")
    return out


def _torch_int8(p):
    try:
        import torch
    except ImportError:
        return None
    m = torch.nn.GRU(p.I, p.H)
    with torch.no_grad():
        for name, param in m.named_parameters():
            param.copy_(torch.from_numpy(np.ascontiguousarray(p.state[name])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.qconfig = torch.ao.quantization.default_dynamic_qconfig
        qm = torch.ao.nn.quantized.dynamic.GRU.from_float(m)
        with torch.inference_mode():
            y, _ = qm(torch.from_numpy(p.x))
    return y.numpy()


def _err(y, ref):
    d = np.asarray(y, np.float64) - ref
    return {"max_abs": float(np.abs(d).max()), "rms": float(np.sqrt(np.mean(d * d)))}


def measure(shape, grucy):
    p = Problem(*shape, seed=0)
    layers = _layers(p, grucy)
    y64, _ = layers["float64"](p.x.astype(np.float64), training=False)
    row = {"shape": "x".join(map(str, shape))}
    for name in ("fp32", "bf16"):
        row[name] = _err(layers[name](p.x, training=False)[0], y64)
    row["int8"] = _err(layers["int8"](p.x)[0], y64)
    yt = _torch_int8(p)
    row["torch_int8"] = None if yt is None else _err(yt, y64)
    # bf16 training: the gradients of sum(y * dy)
    g64, gb = layers["float64"], layers["bf16"]
    g64(p.x.astype(np.float64))
    dx64, _ = g64.backward(p.dy.astype(np.float64))
    gb(p.x)
    dxb, _ = gb.backward(p.dy)
    rel = {"dx": float(np.abs(dxb - dx64).max() / np.abs(dx64).max())}
    rel["dW"] = max(float(np.abs(gb.grads[k] - g).max() / np.abs(g).max())
                    for k, g in g64.grads.items() if k.startswith("weight"))
    row["bf16_grads"] = rel
    return row


def markdown(rows, torch_version):
    head = ("| B x T x I x H | fp32 max / rms | bf16 max / rms | int8 max / rms | "
            f"torch int8{' ' + torch_version if torch_version else ''} max / rms | "
            "bf16 training: dx, dW (rel.) |")
    out = [head, "|:---|---:|---:|---:|---:|---:|"]

    def cell(e):
        return "-" if e is None else f"{e['max_abs']:.1e} / {e['rms']:.1e}"
    for r in rows:
        out.append(f"| {r['shape']} | {cell(r['fp32'])} | {cell(r['bf16'])} | "
                   f"{cell(r['int8'])} | {cell(r['torch_int8'])} | "
                   f"{r['bf16_grads']['dx']:.1e}, {r['bf16_grads']['dW']:.1e} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=parse_shapes, default=None,
                   help="1-based indices into the core shapes and/or BxTxIxH, "
                        "comma-separated (default: the five core shapes)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", type=output_path(), default=None, metavar="PATH",
                   help="also write JSON there")
    args = p.parse_args(argv)

    import grucy
    shapes = args.shapes or DEFAULT_SHAPES
    rows = []
    for shape in shapes:
        rows.append(measure(shape, grucy))
        r = rows[-1]
        print(f"{r['shape']:>16}: max |y - y_float64|  fp32 {r['fp32']['max_abs']:.1e}  "
              f"bf16 {r['bf16']['max_abs']:.1e}  int8 {r['int8']['max_abs']:.1e}  torch int8 "
              + ("-" if r["torch_int8"] is None else f"{r['torch_int8']['max_abs']:.1e}")
              + f"  (bf16 dx {r['bf16_grads']['dx']:.1e}, dW {r['bf16_grads']['dW']:.1e})",
              flush=True)
    try:
        import torch
        tv = torch.__version__
    except ImportError:
        tv = None
    if args.markdown:
        print()
        print(markdown(rows, tv))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "torch": tv, "kernels": grucy._gru.lowp_kernels()}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
