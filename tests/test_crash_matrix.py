"""No crash, ever: a matrix of bad inputs, each run in a child process.

A segfault, an abort or the OOM killer ends the *child*: the case fails with the signal
instead of taking the test run down.  Every case must end with its expected Python
exception (or succeed, where the input is legal).  Cheap cases share one child (a
crash there fails the crashing case and the rest go on in a fresh child); cases that
drive the kernels with extreme sizes get a child each.  Children run under an
address-space limit (``ulimit -v``), so a size that slipped through validation becomes
a MemoryError -- the wrong exception, so a failed case -- rather than a swapping machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

import grucy
from conftest import peer_missing, requires

ADDRESS_SPACE_LIMIT = 8 << 30
CHILD_TIMEOUT = 180

PRELUDE = textwrap.dedent("""
    import numpy as np
    import grucy
    from grucy import io, reference
    from grucy.nn import Linear, mse_loss
    from grucy.optim import Adam, clip_grad_norm

    def L(**kw):
        kw.setdefault("dtype", np.float64)
        return grucy.GRU(3, 4, num_layers=2, bidirectional=True, seed=0, **kw)

    def X(T=5, B=2, I=3, dtype=np.float64):
        return np.random.default_rng(0).standard_normal((T, B, I)).astype(dtype)

    def DY(T=5, B=2):
        return np.random.default_rng(1).standard_normal((T, B, 8))

    def trained(layer=None):
        layer = layer or L()
        layer.forward(X())
        return layer

    def saved(name="g.grucy"):
        path = os.path.join(TMP, name)
        grucy.save(L(), path)
        return path

    def onnx_file(name="m.onnx", external=None):
        # A GRU exported to ONNX in its own directory, optionally with its weights in an
        # external data file whose recorded location is then set to `external`.
        import onnx
        from grucy import interop
        d = os.path.join(TMP, name + ".d")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, name)
        model = interop.to_onnx(grucy.GRU(3, 8, seed=0))
        if external is None:
            onnx.save_model(model, path)
            return path
        onnx.save_model(model, path, save_as_external_data=True, location="w.bin",
                        size_threshold=128)
        model = onnx.load(path, load_external_data=False)
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = external
        onnx.save_model(model, path)
        return path

    XS = np.random.default_rng(0).standard_normal((12, 5))
    YS = np.arange(12) % 2
    SERIES = np.sin(np.arange(40) / 3)
    FIT = dict(epochs=1, hidden_size=3, random_state=0)
""")

CHILD = textwrap.dedent("""
    import faulthandler, json, os, resource, sys, tempfile, traceback
    faulthandler.enable()
    limit = int(os.environ["CRASH_MATRIX_AS_LIMIT"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cases = json.loads(sys.stdin.read())
    TMP = tempfile.mkdtemp(prefix="grucy-crash-")
    prelude = compile(os.environ["CRASH_MATRIX_PRELUDE"], "<prelude>", "exec")
    for case_id, code in cases:
        print("START", case_id, flush=True)
        ns = {"TMP": TMP, "os": os}
        try:
            exec(prelude, ns)
            exec(compile(code, case_id, "exec"), ns)
            result = {"raised": None}
        except BaseException as exc:
            result = {"raised": [c.__name__ for c in type(exc).__mro__],
                      "message": str(exc)[:500],
                      "where": traceback.format_exc().splitlines()[-3:]}
        print("RESULT", case_id, json.dumps(result), flush=True)
    print("DONE", flush=True)
""")

# (id, code, expected exception class name or None for success[, a regular expression
# the message must match: it names the argument and what was given])
CASES = [
    # -- GRU constructor ----------------------------------------------------------------
    ("ctor-zero-input", "grucy.GRU(0, 4)", "ValueError"),
    ("ctor-negative-hidden", "grucy.GRU(3, -1)", "ValueError"),
    ("ctor-float-size", "grucy.GRU(3.0, 4)", "TypeError"),
    ("ctor-string-size", "grucy.GRU('3', 4)", "TypeError"),
    ("ctor-none-size", "grucy.GRU(None, 4)", "TypeError"),
    ("ctor-zero-layers", "grucy.GRU(3, 4, num_layers=0)", "ValueError"),
    ("ctor-dropout-1", "grucy.GRU(3, 4, dropout=1.0)", "ValueError"),
    ("ctor-dropout-nan", "grucy.GRU(3, 4, dropout=float('nan'))", "ValueError"),
    ("ctor-dtype-int", "grucy.GRU(3, 4, dtype=np.int32)", "TypeError"),
    ("ctor-dtype-f16", "grucy.GRU(3, 4, dtype='float16')", "TypeError"),
    ("ctor-dtype-junk", "grucy.GRU(3, 4, dtype='junk')", "TypeError"),
    ("ctor-bias-string", "grucy.GRU(3, 4, bias='no')", "TypeError"),
    ("ctor-seed-string", "grucy.GRU(3, 4, seed='x')", "TypeError"),
    ("ctor-hidden-2e31", "grucy.GRU(3, 2**31)", "SizeLimitError"),
    ("ctor-input-2e62", "grucy.GRU(2**62, 4)", "SizeLimitError"),
    ("ctor-input-1e30", "grucy.GRU(10**30, 1)", "SizeLimitError"),
    ("ctor-too-much-memory", "grucy.GRU(8192, 8192, num_layers=8, bidirectional=True)",
     "SizeLimitError"),
    ("ctor-reference-huge", "reference.GRU(3, 2**31)", "SizeLimitError"),
    # -- forward: x -----------------------------------------------------------------------
    ("x-2d", "L().forward(X()[0])", "ValueError"),
    ("x-4d", "L().forward(X()[None])", "ValueError"),
    ("x-scalar", "L().forward(1.0)", "ValueError"),
    ("x-no-steps", "L().forward(X(T=0))", "ValueError"),
    ("x-no-batch", "L().forward(X(B=0))", "ValueError"),
    ("x-no-features", "L().forward(X(I=0))", "ValueError"),
    ("x-wrong-features", "L().forward(X(I=4))", "ValueError"),
    ("x-nan", "x = X(); x[1, 1, 1] = np.nan; L().forward(x)", "ValueError"),
    ("x-inf", "x = X(); x[0, 0, 0] = -np.inf; L().forward(x)", "ValueError"),
    ("x-f64-overflows-f32", "x = X(); x[0, 0, 0] = 1e300; L(dtype=np.float32).forward(x)",
     "ValueError"),
    ("x-complex", "L().forward(X().astype(complex))", "TypeError"),
    ("x-bool", "L().forward(X() > 0)", "TypeError"),
    ("x-object", "L().forward(X().astype(object))", "TypeError"),
    ("x-strings", "L().forward(np.full((5, 2, 3), 'a'))", "TypeError"),
    ("x-datetime", "L().forward(np.zeros((5, 2, 3), 'datetime64[s]'))", "TypeError"),
    ("x-none", "L().forward(None)", "TypeError"),
    ("x-dict", "L().forward({'a': 1})", "TypeError"),
    ("x-ragged", "L().forward([[[1.0, 2.0, 3.0]], [[1.0]]])", "ValueError"),
    ("x-int-ok", "L().forward(np.ones((5, 2, 3), np.int64))", None),
    ("x-uint8-ok", "L().forward(np.ones((5, 2, 3), np.uint8))", None),
    ("x-float16-ok", "L().forward(X().astype(np.float16))", None),
    ("x-fortran-ok", "L().forward(np.asfortranarray(X()))", None),
    ("x-negative-strides-ok", "L().forward(X()[::-1, ::-1, ::-1])", None),
    ("x-read-only-ok", "x = X(); x.flags.writeable = False; L().forward(x)", None),
    ("x-broadcast-ok", "L().forward(np.broadcast_to(X(T=1, B=1), (5, 2, 3)))", None),
    ("x-list-ok", "L().forward(X().tolist())", None),
    ("x-batch-first-wrong", "L(batch_first=True).forward(X(I=5))", "ValueError"),
    ("x-training-string", "L().forward(X(), training='yes')", "TypeError"),
    # -- forward: h0 ----------------------------------------------------------------------
    ("h0-wrong-shape", "L().forward(X(), h0=np.zeros((4, 2, 3)))", "ValueError"),
    ("h0-2d", "L().forward(X(), h0=np.zeros((2, 4)))", "ValueError"),
    ("h0-wrong-batch", "L().forward(X(), h0=np.zeros((4, 3, 4)))", "ValueError"),
    ("h0-nan", "L().forward(X(), h0=np.full((4, 2, 4), np.nan))", "ValueError"),
    ("h0-complex", "L().forward(X(), h0=np.zeros((4, 2, 4), complex))", "TypeError"),
    ("h0-scalar", "L().forward(X(), h0=0.0)", "ValueError"),
    ("h0-negative-strides-ok", "L().forward(X(), h0=np.zeros((4, 2, 8))[::-1, ::-1, ::2])",
     None),
    # -- forward: lengths -----------------------------------------------------------------
    ("lengths-zero", "L().forward(X(), lengths=[0, 5])", "ValueError"),
    ("lengths-too-long", "L().forward(X(), lengths=[6, 5])", "ValueError"),
    ("lengths-negative", "L().forward(X(), lengths=[-1, 5])", "ValueError"),
    ("lengths-int64-max", "L().forward(X(), lengths=[2**63 - 1, 5])", "ValueError"),
    ("lengths-uint64-max", "L().forward(X(), lengths=np.array([2**64 - 1, 5], np.uint64))",
     "ValueError"),
    ("lengths-python-huge", "L().forward(X(), lengths=[10**30, 5])", "TypeError"),
    ("lengths-fractional", "L().forward(X(), lengths=[1.5, 5])", "TypeError"),
    ("lengths-nan", "L().forward(X(), lengths=[np.nan, 5])", "TypeError"),
    ("lengths-count", "L().forward(X(), lengths=[5])", "ValueError"),
    ("lengths-2d", "L().forward(X(), lengths=[[5, 5]])", "ValueError"),
    ("lengths-strings", "L().forward(X(), lengths=['a', 'b'])", "TypeError"),
    ("lengths-bool", "L().forward(X(), lengths=[True, True])", "TypeError"),
    ("lengths-ragged", "L().forward(X(), lengths=[[1], [1, 2]])", "ValueError"),
    ("lengths-scalar", "L().forward(X(), lengths=5)", "ValueError"),
    ("lengths-unsorted-ok", "L().forward(X(), lengths=np.array([2, 5])[::-1])", None),
    # -- legal edge shapes through the kernels (bounds-checked under .ci/kernels-in-copy debug) --
    ("edge-all-ones", "g = grucy.GRU(1, 1); g.forward(np.ones((1, 1, 1))); "
                      "g.backward(np.ones((1, 1, 1)))", None),
    ("edge-lengths-all-one",
     "g = L(reset_after=False); g.forward(X(T=50, B=3), lengths=[1, 1, 1]); "
     "g.backward(np.ones((50, 3, 8)))", None),
    ("edge-one-long-many-short",
     "g = L(batch_first=True); g.forward(X(T=7, B=40).transpose(1, 0, 2), "
     "lengths=[7] + [1] * 39); g.backward(np.ones((40, 7, 8)))", None),
    ("edge-wide-batch", "g = grucy.GRU(2, 1, bidirectional=True); "
                        "g.forward(np.ones((2, 5000, 2))); g.backward(np.ones((2, 5000, 2)))",
     None),
    ("edge-wide-hidden", "g = grucy.GRU(1, 1000, dtype=np.float32); "
                         "g.forward(np.ones((2, 1, 1))); g.backward(np.ones((2, 1, 1000)))",
     None),
    ("edge-deep-stack", "g = grucy.GRU(2, 3, num_layers=12, bidirectional=True, dropout=0.5); "
                        "g.forward(np.ones((4, 2, 2))); g.backward(np.ones((4, 2, 6)))", None),
    # -- backward -------------------------------------------------------------------------
    ("bwd-no-forward", "L().backward(DY())", "RuntimeError"),
    ("bwd-twice", "g = trained(); g.backward(DY()); g.backward(DY())", "RuntimeError"),
    ("bwd-after-inference", "g = L(); g.forward(X(), training=False); g.backward(DY())",
     "RuntimeError"),
    ("bwd-after-failed-forward",
     "g = trained()\ntry:\n    g.forward(X(I=9))\nexcept ValueError:\n    pass\n"
     "g.backward(DY())", "RuntimeError"),
    ("bwd-dy-shape", "trained().backward(DY(T=4))", "ValueError"),
    ("bwd-dy-transposed", "trained().backward(DY().transpose(1, 0, 2))", "ValueError"),
    ("bwd-dy-nan", "dy = DY(); dy[0, 0, 0] = np.nan; trained().backward(dy)", "ValueError"),
    ("bwd-dy-bool", "trained().backward(DY() > 0)", "TypeError"),
    ("bwd-dh-shape", "trained().backward(DY(), dh_n=np.zeros((4, 2)))", "ValueError"),
    ("bwd-dh-inf", "trained().backward(DY(), dh_n=np.full((4, 2, 4), np.inf))",
     "ValueError"),
    ("bwd-dy-strided-ok", "trained().backward(np.zeros((5, 2, 16))[..., ::2])", None),
    ("bwd-other-thread",
     "import threading\ng = trained()\nbox = []\n"
     "t = threading.Thread(target=lambda: box.append(g.__class__))\n"
     "def other():\n    try:\n        g.backward(DY())\n    except RuntimeError as e:\n"
     "        box.append(e)\nt = threading.Thread(target=other); t.start(); t.join()\n"
     "raise box[0]", "RuntimeError"),
    # -- parameters tampered with in place -----------------------------------------------
    ("param-nan", "g = L(); g.parameters()[3][0] = np.nan; g.forward(X())", "ValueError"),
    ("param-inf", "g = L(); g.parameters()[0][0, 0] = np.inf; g.forward(X(), "
                  "training=False)", "ValueError"),
    ("param-resized-in-place",
     "g = L(); g.parameters()[1].resize((5, 5), refcheck=False); g.forward(X())",
     "ValueError"),
    ("grads-read-only",
     "g = trained()\nfor a in g.grads.values():\n    a.flags.writeable = False\n"
     "g.backward(DY())", "ValueError"),
    ("grads-replaced-wrong-dtype",
     "g = trained(L(dtype=np.float32)); g.grads['weight_ih_l0'] = np.zeros((12, 3)); "
     "g.backward(DY())", "ValueError"),
    # -- load_state_dict ------------------------------------------------------------------
    ("sd-not-mapping", "L().load_state_dict([1, 2])", "TypeError"),
    ("sd-missing", "g = L(); sd = g.state_dict(); sd.pop('bias_hh_l0'); "
                   "g.load_state_dict(sd)", "ValueError"),
    ("sd-shape", "g = L(); sd = g.state_dict(); sd['weight_hh_l0'] = np.zeros(3); "
                 "g.load_state_dict(sd)", "ValueError"),
    ("sd-nan", "g = L(); sd = g.state_dict(); sd['weight_hh_l0'][0, 0] = np.nan; "
               "g.load_state_dict(sd)", "ValueError"),
    ("sd-strings", "g = L(); sd = g.state_dict(); sd['weight_hh_l0'] = 'w'; "
                   "g.load_state_dict(sd)", "TypeError"),
    # -- Linear, mse_loss -----------------------------------------------------------------
    ("linear-zero", "Linear(0, 2)", "ValueError"),
    ("linear-huge", "Linear(2**40, 2**40)", "SizeLimitError"),
    ("linear-x-scalar", "Linear(3, 2).forward(1.0)", "ValueError"),
    ("linear-x-features", "Linear(3, 2).forward(np.zeros((4, 5)))", "ValueError"),
    ("linear-x-nan", "Linear(3, 2).forward(np.full((4, 3), np.nan))", "ValueError"),
    ("linear-x-complex", "Linear(3, 2).forward(np.zeros((4, 3), complex))", "TypeError"),
    ("linear-bwd-no-forward", "Linear(3, 2).backward(np.zeros((4, 2)))", "RuntimeError"),
    ("linear-bwd-shape", "l = Linear(3, 2); l.forward(np.zeros((4, 3))); "
                         "l.backward(np.zeros((4, 3)))", "ValueError"),
    ("linear-empty-batch-ok", "Linear(3, 2).forward(np.zeros((0, 3)))", None),
    ("mse-shapes", "mse_loss(np.zeros(3), np.zeros(4))", "ValueError"),
    ("mse-empty", "mse_loss(np.zeros(0), np.zeros(0))", "ValueError"),
    ("mse-nan", "mse_loss(np.zeros(3), np.full(3, np.nan))", "ValueError"),
    ("mse-strings", "mse_loss(np.zeros(3), ['a', 'b', 'c'])", "TypeError"),
    # -- optimizers -----------------------------------------------------------------------
    ("adam-empty", "Adam([], [])", "ValueError"),
    ("adam-mismatch", "Adam([np.zeros(2)], [np.zeros(3)])", "ValueError"),
    ("adam-not-arrays", "Adam([[0.0]], [[0.0]])", "TypeError"),
    ("adam-int-params", "Adam([np.zeros(2, int)], [np.zeros(2, int)])", "TypeError"),
    ("adam-single-array", "Adam(np.zeros(2), np.zeros(2))", "TypeError"),
    ("adam-lr-nan", "Adam([np.zeros(2)], [np.zeros(2)], lr=float('nan'))", "ValueError"),
    ("adam-lr-string", "Adam([np.zeros(2)], [np.zeros(2)], lr='fast')", "TypeError"),
    ("adam-betas", "Adam([np.zeros(2)], [np.zeros(2)], betas=(1.0, 0.9))", "ValueError"),
    ("adam-eps-zero", "Adam([np.zeros(2)], [np.zeros(2)], eps=0)", "ValueError"),
    ("adam-step-nan-grad", "Adam([np.zeros(2)], [np.array([0.0, np.nan])]).step()",
     "ValueError"),
    ("clip-zero", "clip_grad_norm([np.zeros(2)], 0)", "ValueError"),
    ("clip-not-list", "clip_grad_norm(5, 1.0)", "TypeError"),
    # -- save / load ----------------------------------------------------------------------
    ("load-missing", "grucy.load(os.path.join(TMP, 'nope.grucy'))", "FileNotFoundError"),
    ("load-directory", "grucy.load(TMP)", "IsADirectoryError"),
    ("load-none", "grucy.load(None)", "TypeError"),
    ("load-empty", "p = os.path.join(TMP, 'e'); open(p, 'wb').close(); grucy.load(p)",
     "FileFormatError"),
    ("load-garbage", "p = os.path.join(TMP, 'j'); open(p, 'wb').write(os.urandom(5000)); "
                     "grucy.load(p)", "FileFormatError"),
    ("load-truncated", "p = saved(); raw = open(p, 'rb').read(); "
                       "open(p, 'wb').write(raw[:len(raw) // 2]); grucy.load(p)",
     "FileFormatError"),
    ("load-flipped-bit", "p = saved(); raw = bytearray(open(p, 'rb').read()); "
                         "raw[-3] ^= 4; open(p, 'wb').write(raw); grucy.load(p)",
     "FileFormatError"),
    ("load-numpy-npy", "p = os.path.join(TMP, 'a.npy'); np.save(p, np.zeros(3)); "
                       "grucy.load(p)", "FileFormatError"),
    ("load-deep-json",
     "import hashlib\nhead = b'[' * 200000 + b']' * 200000\n"
     "p = os.path.join(TMP, 'deep')\n"
     "open(p, 'wb').write(io._PREFIX.pack(io.MAGIC, 1, len(head), "
     "hashlib.sha256(head).digest()) + head)\ngrucy.load(p)", "FileFormatError"),
    ("load-wrong-kind", "p = os.path.join(TMP, 'k'); io.write_archive(p, 'checkpoint', {}, "
                        "{}); io.read_archive(p, kind='grucy.GRU')", "FileFormatError"),
    ("save-object", "grucy.save(object(), os.path.join(TMP, 'o'))", "TypeError"),
    ("save-missing-dir", "grucy.save(L(), os.path.join(TMP, 'a', 'b', 'c'))",
     "FileNotFoundError"),
    ("save-nan-params", "g = L(); g.parameters()[0][0, 0] = np.nan; "
                        "grucy.save(g, os.path.join(TMP, 'n'))", "ValueError"),
    ("archive-object-array", "io.write_archive(os.path.join(TMP, 'x'), 'k', {}, "
                             "{'a': np.array([object()])})", "TypeError"),
    ("archive-nan-config", "io.write_archive(os.path.join(TMP, 'x'), 'k', "
                           "{'a': float('nan')}, {})", "TypeError"),
    ("archive-kind-empty", "io.write_archive(os.path.join(TMP, 'x'), '', {}, {})",
     "TypeError"),
    ("archive-arrays-list", "io.write_archive(os.path.join(TMP, 'x'), 'k', {}, [1])",
     "TypeError"),
    # -- streaming (GRU.stream / GRUStream.step / GRU.step) -------------------------------
    ("stream-bidirectional", "L().stream()", "ValueError"),
    ("stream-batch-zero", "grucy.GRU(3, 4).stream(0)", "ValueError"),
    ("stream-batch-float", "grucy.GRU(3, 4).stream(2.0)", "TypeError"),
    ("stream-batch-huge", "grucy.GRU(3, 4).stream(2**40)", "SizeLimitError"),
    ("stream-h0-shape", "grucy.GRU(3, 4).stream(2, np.zeros((1, 1, 4)))", "ValueError"),
    ("stream-h0-nan", "grucy.GRU(3, 4).stream(1, np.full((1, 1, 4), np.nan))", "ValueError"),
    ("stream-h0-strings", "grucy.GRU(3, 4).stream(1, np.full((1, 1, 4), 'a'))", "TypeError"),
    ("stream-nan-params", "g = grucy.GRU(3, 4); g.parameters()[0][0, 0] = np.nan; g.stream()",
     "ValueError"),
    ("stream-step-shape", "grucy.GRU(3, 4).stream(2).step(np.ones(3))", "ValueError"),
    ("stream-step-3d", "grucy.GRU(3, 4).stream().step(np.ones((1, 1, 3)))", "ValueError"),
    ("stream-step-scalar", "grucy.GRU(3, 4).stream().step(1.0)", "ValueError"),
    ("stream-step-nan", "grucy.GRU(3, 4).stream().step(np.array([1.0, np.nan, 0.0]))",
     "ValueError"),
    ("stream-step-inf-f32", "grucy.GRU(3, 4).stream().step(np.array([1e300, 0.0, 0.0]))",
     "ValueError"),
    ("stream-step-bool", "grucy.GRU(3, 4).stream().step(np.ones(3, bool))", "TypeError"),
    ("stream-step-complex", "grucy.GRU(3, 4).stream().step(np.ones(3, complex))", "TypeError"),
    ("stream-step-none", "grucy.GRU(3, 4).stream().step(None)", "TypeError"),
    ("stream-step-ragged", "grucy.GRU(3, 4).stream(2).step([[1.0, 2.0, 3.0], [1.0]])",
     "ValueError"),
    ("stream-h-setter-shape", "s = grucy.GRU(3, 4).stream(); s.h = np.zeros(4)", "ValueError"),
    ("stream-h-setter-bool", "s = grucy.GRU(3, 4).stream(); s.h = np.zeros((1, 1, 4), bool)",
     "TypeError"),
    ("stream-step-layouts-ok",
     "s = grucy.GRU(3, 4).stream(2)\nx = np.ones((2, 6))\ns.step(x[:, ::2])\n"
     "s.step(np.asfortranarray(np.ones((2, 3))))\ns.step(np.ones((2, 3))[::-1, ::-1])\n"
     "ro = np.ones((2, 3)); ro.flags.writeable = False; s.step(ro)\n"
     "s.step(np.broadcast_to(np.ones(3), (2, 3)))", None),
    ("step-1d", "grucy.GRU(3, 4).step(np.ones(3))", "ValueError"),
    ("step-empty-batch", "grucy.GRU(3, 4).step(np.ones((0, 3)))", "ValueError"),
    ("step-h-shape", "grucy.GRU(3, 4).step(np.ones((2, 3)), np.zeros((1, 3, 4)))",
     "ValueError"),
    ("step-nan-params", "g = grucy.GRU(3, 4); g.parameters()[1][0, 0] = np.inf; "
                        "g.step(np.ones((1, 3)))", "ValueError"),
    # -- threads --------------------------------------------------------------------------
    ("threads-zero", "grucy.set_num_threads(0)", "ValueError"),
    ("threads-string", "grucy.set_num_threads('2')", "TypeError"),
    ("threads-float", "grucy.set_num_threads(2.0)", "TypeError"),
    ("threads-huge", "grucy.set_num_threads(2**40)", "ValueError"),
    ("threads-100000",  # OpenMP cannot create them: used to abort or segfault the process
     "grucy.set_num_threads(100000)\n"
     "grucy.GRU(64, 256).forward(np.ones((5, 64, 64), np.float32))", "ValueError"),
    ("threads-max-ok", "from grucy._threads import MAX_THREADS\n"
                       "grucy.set_num_threads(MAX_THREADS)\n"
                       "grucy.GRU(64, 256).forward(np.ones((5, 64, 64), np.float32))", None),
    ("one-layer-two-threads",
     "import threading\ng = L()\nentered, go = threading.Event(), threading.Event()\n"
     "class Slow:\n    def __array__(self, dtype=None, copy=None):\n"
     "        entered.set(); go.wait(30); return X()\n"
     "t = threading.Thread(target=lambda: g.forward(Slow())); t.start(); entered.wait(30)\n"
     "try:\n    g.forward(X())\nfinally:\n    go.set(); t.join()", "RuntimeError"),
    # -- GRU.step's cached stream and bias=False's shared zeros ---------------------------
    ("step-cached-then-param-resized",
     "g = grucy.GRU(3, 4); x = np.ones((1, 3)); g.step(x)\n"
     "g.parameters()[1].resize((5, 5), refcheck=False); g.step(x)", "ValueError",
     r"parameter 'weight_hh_l0' is no longer a C-contiguous"),
    ("step-cached-then-param-replaced-wrong-dtype",
     "g = grucy.GRU(3, 4); x = np.ones((1, 3)); g.step(x)\n"
     "g._params['weight_ih_l0'] = np.zeros((12, 3)); g.step(x)", "ValueError",
     r"parameter 'weight_ih_l0' is no longer"),
    ("step-cached-then-batch-change-ok",
     "g = grucy.GRU(3, 4, 2)\nfor B in (1, 5, 1, 64, 2):\n    g.step(np.ones((B, 3)))", None),
    ("step-cached-then-nan-x-then-ok",
     "g = grucy.GRU(3, 4); g.step(np.ones((1, 3)))\ntry:\n"
     "    g.step(np.full((1, 3), np.nan))\nexcept ValueError:\n    pass\n"
     "g.step(np.ones((1, 3)))", None),
    ("bias-false-kernels-never-write-the-shared-zeros",
     "g = grucy.GRU(3, 4, 2, bias=False, bidirectional=True)\n"
     "y, _ = g.forward(np.ones((5, 2, 3))); g.backward(np.ones_like(y))\n"
     "z = g.layer_params(1, 1)[3]\nassert not z.flags.writeable and not z.any()\n"
     "s = grucy.GRU(3, 4, bias=False).stream(); s.step(np.ones(3))\n"
     "assert not z.any()", None),
    # -- grucy.nn ---------------------------------------------------------------------------
    ("embedding-huge", "from grucy.nn import Embedding\nEmbedding(2**40, 2**20)",
     "SizeLimitError"),
    ("embedding-broadcast-indices-beyond-memory",
     "from grucy.nn import Embedding\n"
     "Embedding(10, 1000).forward(np.broadcast_to(np.int64(1), (10**6, 10**4)))",
     "SizeLimitError"),
    ("embedding-uint64-max", "from grucy.nn import Embedding\n"
     "Embedding(4, 2).forward(np.array([2**64 - 1], np.uint64))", "ValueError",
     r"indices must lie in \[0, num_embeddings=4\)"),
    ("embedding-nan-row", "from grucy.nn import Embedding\ne = Embedding(4, 2)\n"
     "e.weight[3, 0] = np.nan; e.forward([3])", "ValueError", r"rows of weight looked up"),
    ("dropout-broadcast-beyond-memory",
     "from grucy.nn import Dropout\n"
     "Dropout(0.5).forward(np.broadcast_to(np.float32(1), (10**6, 10**5)))",
     "SizeLimitError"),
    ("sequential-gru", "from grucy.nn import Sequential\nSequential(grucy.GRU(3, 4))",
     "TypeError", r"whose forward returns \(y, h_n\)"),
    ("tbptt-repeated-rows", "from grucy.nn import TruncatedBPTT\n"
     "TruncatedBPTT(grucy.GRU(3, 4), 2).forward(np.ones((3, 2, 3)), rows=[1, 1])",
     "ValueError", r"rows must not repeat a stream"),
    ("tbptt-batch-mismatch", "from grucy.nn import TruncatedBPTT\n"
     "TruncatedBPTT(grucy.GRU(3, 4), 2).forward(np.ones((3, 5, 3)))", "ValueError",
     r"x has 5 sequences"),
    # -- training -------------------------------------------------------------------------
    ("task-index-past-end",
     "from grucy.training import ArrayTask\nfrom grucy.nn import Sequential\n"
     "ArrayTask(Sequential(Linear(5, 1)), XS, YS[:, None], mse_loss, np.arange(13))",
     "ValueError", r"train_idx must lie in \[0, 12\)"),
    ("trainer-nan-lr-assigned",
     "opt = Adam([np.zeros(2)], [np.ones(2)]); opt.lr = float('nan')", "ValueError",
     r"lr must be finite"),
    # -- models (compiled GRU inside) -----------------------------------------------------
    ("forecaster-empty", "grucy.Forecaster(**FIT).fit([])", "ValueError",
     r"y is empty"),
    ("forecaster-predict-empty-history",
     "grucy.Forecaster(**FIT).fit(SERIES).predict(np.zeros((0, 20)))", "ValueError",
     r"y is empty"),
    ("forecaster-predict-not-fitted", "grucy.Forecaster().predict(SERIES)",
     "NotFittedError"),
    ("forecaster-hidden-huge", "grucy.Forecaster(epochs=1, hidden_size=2**31).fit(SERIES)",
     "SizeLimitError"),
    ("classifier-hidden-beyond-memory",
     "grucy.GRUClassifier(epochs=1, hidden_size=60000, num_layers=4).fit(XS, YS)",
     "SizeLimitError"),
    ("classifier-wrong-features", "grucy.GRUClassifier(**FIT).fit(XS, YS).predict(XS[:, :3])",
     "ValueError", r"X has 3 features, but GRUClassifier is expecting 5"),
    ("classifier-3d-wrong-features",
     "grucy.GRUClassifier(**FIT).fit(XS[:, :, None], YS).predict(np.ones((2, 5, 2)))",
     "ValueError", r"X has 2 features per step"),
    ("classifier-nan", "grucy.GRUClassifier(**FIT).fit(np.full((12, 5), np.nan), YS)",
     "ValueError", r"NaN"),
    ("classifier-longer-sequences-3d-ok",
     "m = grucy.GRUClassifier(**FIT).fit(XS[:, :, None], YS)\n"
     "assert m.predict(np.ones((3, 50, 1))).shape == (3,)", None),
    ("regressor-score-short-y", "grucy.GRURegressor(**FIT).fit(XS, YS).score(XS, YS[:3])",
     "ValueError", r"X and y must have the same number of samples, got 12 and 3"),
    ("charlm-temperature", "m = grucy.CharLM(epochs=1, hidden_size=4, embedding_dim=2, "
                           "bptt=4, batch_size=2).fit('abcabcabcabc' * 3)\n"
                           "m.generate(temperature='hot')", "TypeError",
     r"temperature must be a real number"),
    # -- ONNX files (protobuf parsing, external data) -------------------------------------
    ("onnx-garbage-file", "from grucy import interop\np = os.path.join(TMP, 'x.onnx')\n"
     "open(p, 'wb').write(os.urandom(4096)); interop.from_onnx(p)", "ValueError"),
    ("onnx-garbage-bytes", "from grucy import interop\n"
     "interop.from_onnx(bytes(range(256)) * 16)", "ValueError"),
    ("onnx-truncated-file",
     "from grucy import interop\np = onnx_file()\nraw = open(p, 'rb').read()\n"
     "open(p, 'wb').write(raw[:len(raw) // 2]); interop.from_onnx(p)", "ValueError"),
    ("onnx-external-traversal",
     "from grucy import interop\nopen(os.path.join(TMP, 'secret'), 'wb').write(b'0' * 4096)\n"
     "interop.from_onnx(onnx_file('t.onnx', external='../secret'))", "ValueError",
     r"points outside the directory"),
    ("onnx-external-absolute",
     "from grucy import interop\n"
     "interop.from_onnx(onnx_file('a.onnx', external='/etc/passwd'))", "ValueError",
     r"should be a relative path"),
    ("onnx-external-missing",
     "from grucy import interop\n"
     "interop.from_onnx(onnx_file('n.onnx', external='nope.bin'))", "ValueError",
     r"not regular file"),
    ("onnx-external-truncated",
     "from grucy import interop\np = onnx_file('c.onnx', external='w.bin')\n"
     "open(os.path.join(os.path.dirname(p), 'w.bin'), 'r+b').truncate(5)\n"
     "interop.from_onnx(p)", "ValueError", r"exceeds"),
    ("onnx-external-in-memory",
     "import onnx\nfrom grucy import interop\n"
     "interop.from_onnx(open(onnx_file('m.onnx', external='w.bin'), 'rb').read())",
     "ValueError", r"keeps its data in an external file"),
    ("onnx-external-ok",
     "from grucy import interop\ng = interop.from_onnx(onnx_file('ok.onnx', external='w.bin'))\n"
     "g.forward(np.ones((2, 1, 3)))", None),
    # -- grucy.torch.GRU (torch tensors into the kernels) ---------------------------------
    ("torch-gru-huge", "import grucy.torch\ngrucy.torch.GRU(3, 2**20)", "SizeLimitError"),
    ("torch-gru-beyond-memory",
     "import grucy.torch\ngrucy.torch.GRU(4096, 4096, num_layers=64, bidirectional=True)",
     "SizeLimitError"),
    ("torch-gru-hx-ndarray",
     "import torch, grucy.torch\n"
     "grucy.torch.GRU(3, 4)(torch.ones(5, 2, 3), np.zeros((1, 2, 4)))", "TypeError",
     r"hx must be a torch.Tensor or None, got ndarray"),
    ("torch-gru-nan", "import torch, grucy.torch\n"
     "grucy.torch.GRU(3, 4)(torch.full((5, 2, 3), float('nan')))", "ValueError",
     r"x contains NaN"),
    ("torch-gru-no-steps", "import torch, grucy.torch\n"
     "grucy.torch.GRU(3, 4)(torch.ones(0, 2, 3))", "ValueError",
     r"at least one step and one sequence"),
    ("torch-gru-weight-resized",
     "import torch, grucy.torch\ng = grucy.torch.GRU(3, 4)\n"
     "g.weight_ih_l0 = torch.nn.Parameter(torch.ones(12, 5))\ng(torch.ones(5, 2, 3))",
     "ValueError", r"weight_ih_l0"),
    ("torch-gru-strided-ok", "import torch, grucy.torch\n"
     "y, h = grucy.torch.GRU(3, 4, batch_first=True)(torch.ones(3, 5, 2).permute(1, 2, 0))\n"
     "y.sum().item()", None),
]

# Extreme sizes through the kernels' public entry points: one child each.
ISOLATED = [
    ("huge-T-times-B-broadcast",
     "import os\nos.environ['GRUCY_MAX_MEMORY'] = '1P'\n"
     "grucy.GRU(1, 1).forward(np.broadcast_to(np.float32(0), (2**16, 2**15 + 1, 1)))",
     "SizeLimitError"),
    ("huge-B-times-3H-broadcast",
     "import os\nos.environ['GRUCY_MAX_MEMORY'] = '1P'\n"
     "grucy.GRU(1, 2**11).forward(np.broadcast_to(np.float32(0), (1, 2**19, 1)), "
     "training=False)", "SizeLimitError"),
    ("forward-beyond-memory",
     "grucy.GRU(1, 64).forward(np.broadcast_to(np.float32(0), (10**6, 10**3, 1)))",
     "SizeLimitError"),
    ("inference-beyond-memory",
     "grucy.GRU(8, 512, num_layers=3).forward(np.broadcast_to(np.float32(1), "
     "(10**5, 64, 8)), training=False)", "SizeLimitError"),
    ("reference-beyond-memory",
     "reference.GRU(1, 64).forward(np.broadcast_to(np.float32(0), (10**6, 10**3, 1)))",
     "SizeLimitError"),
    ("load-file-asking-for-huge-layer",
     "import hashlib, json\n"
     "head = json.dumps({'kind': 'grucy.GRU', 'config': {'input_size': 1, "
     "'hidden_size': 2**30}, 'arrays': [], 'byteorder': sys.byteorder}).encode()\n"
     "p = os.path.join(TMP, 'h')\n"
     "open(p, 'wb').write(io._PREFIX.pack(io.MAGIC, 1, len(head), "
     "hashlib.sha256(head).digest()) + head)\ngrucy.load(p)", "FileFormatError"),
    ("stream-beyond-memory", "grucy.GRU(8, 64).stream(10**7)", "SizeLimitError"),
    ("largest-legal-single-step",  # big but allowed: must run, not crash
     "grucy.GRU(4096, 4096, dtype=np.float32).forward(np.ones((1, 1, 4096), np.float32))",
     None),
]


def _run_child(cases):
    """Run ``cases`` [(id, code)] in one child; returns {id: result} for those that ran.

    A case the child started but never finished gets {"crashed": returncode, ...}; the
    cases after it are left out (the caller runs them in a new child).
    """
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(grucy.__file__))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["CRASH_MATRIX_AS_LIMIT"] = str(ADDRESS_SPACE_LIMIT)
    env["CRASH_MATRIX_PRELUDE"] = PRELUDE.replace("import numpy", "import sys\nimport numpy")
    env.pop("GRUCY_MAX_MEMORY", None)
    # BLAS thread pools reserve address space per thread; on a many-core machine that
    # alone could approach the limit.  (grucy's kernels run BLAS single-threaded anyway.)
    env["OPENBLAS_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT)
    results, started = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith("START "):
            started = line.split(" ", 1)[1]
        elif line.startswith("RESULT "):
            _, case_id, payload = line.split(" ", 2)
            results[case_id] = json.loads(payload)
            started = None
    if started is not None or proc.returncode != 0:
        victim = started if started is not None else cases[len(results)][0]
        results[victim] = {"crashed": proc.returncode, "stderr": proc.stderr[-3000:]}
    return results


def _run_all(cases):
    pending = [(c[0], c[1]) for c in cases]
    results = {}
    while pending:
        got = _run_child(pending)
        results.update(got)
        pending = [c for c in pending if c[0] not in results]
    return results


# Cases that drive an optional peer, by id prefix: skipped (with the package named) where
# it is not installed, run for real where it is.
NEEDS = {"onnx-": ("onnx",), "torch-gru-": ("torch",)}


def _needs(case_id):
    return next((mods for prefix, mods in NEEDS.items() if case_id.startswith(prefix)), ())


@pytest.fixture(scope="module")
def batched_results():
    return _run_all([c for c in CASES if not peer_missing(*_needs(c[0]))])


def _check(case_id, result, expected, match=None):
    assert "crashed" not in result, (
        f"{case_id}: the child process died with return code {result['crashed']} "
        f"(negative = killed by that signal)\n{result['stderr']}")
    raised = result["raised"]
    if expected is None:
        assert raised is None, f"{case_id}: expected success, got {raised[0]}: " \
                               f"{result['message']}\n{result['where']}"
    else:
        assert raised is not None, f"{case_id}: expected {expected}, nothing was raised"
        assert expected in raised, (f"{case_id}: expected {expected}, got {raised[0]}: "
                                    f"{result['message']}\n{result['where']}")
        if match is not None:
            assert re.search(match, result["message"]), (
                f"{case_id}: the message does not name what it should ({match!r}): "
                f"{result['message']}")


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES + ISOLATED]
    assert len(ids) == len(set(ids))


def test_cases_using_a_peer_declare_it():
    """A case that touches onnx or torch is skipped without it, not failed (NEEDS)."""
    for case_id, code, *_ in CASES + ISOLATED:
        used = {m for m in ("onnx", "torch") if re.search(rf"\b{m}\b", code)}
        assert used <= set(_needs(case_id)), (case_id, used)


def _params(cases):
    """(id, code, expected[, message regex]) -> parameters with the regex or None."""
    return [pytest.param(c[0], c[1], c[2], c[3] if len(c) > 3 else None, id=c[0],
                         marks=[requires(*_needs(c[0]))] if _needs(c[0]) else [])
            for c in cases]


@pytest.mark.parametrize("case_id, code, expected, match", _params(CASES))
def test_batched_case(batched_results, case_id, code, expected, match):
    _check(case_id, batched_results[case_id], expected, match)


@pytest.mark.parametrize("case_id, code, expected", ISOLATED, ids=[c[0] for c in ISOLATED])
def test_isolated_case(case_id, code, expected):
    _check(case_id, _run_child([(case_id, code)])[case_id], expected)


def test_a_crash_fails_only_its_own_case():
    """The harness itself: a segfaulting case is reported as crashed with its signal, the
    cases after it still run in a fresh child."""
    results = _run_all([
        ("fine-before", "1 + 1"),
        ("segfault", "import ctypes; ctypes.string_at(0)"),
        ("fine-after", "raise ValueError('still running')"),
    ])
    assert results["fine-before"] == {"raised": None}
    assert results["segfault"]["crashed"] < 0
    assert "Fatal Python error" in results["segfault"]["stderr"]
    assert "ValueError" in results["fine-after"]["raised"]
