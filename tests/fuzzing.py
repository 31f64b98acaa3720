"""Property-based fuzzing of ``grucy.load`` and ``grucy.interop.from_onnx`` (issue 15).

Hypothesis draws structured mutations of real files: a grucy file is taken apart
(``grucy_files.parse``), its header values, keys, arrays (data, dtype, shape, names) and
array layout are changed, and it is put back together with a *valid* checksum; an ONNX
model made by ``to_onnx`` gets its nodes rewired (cycles included), op types,
attributes (any name, any type), initializers (dims, data types, data, external data
with data files of any size), graph inputs and opsets changed.

Each case runs in a child process forked from a warm server (grucy, and onnx, already
imported), under a memory limit (``resource.setrlimit(RLIMIT_AS)``: what the server maps
plus ``MEMORY_HEADROOM``) and a time limit.  A case fails on:

- an exit by a signal (a crash), or any other abnormal exit;
- an exception outside the documented family: ``grucy.FileFormatError`` for
  ``grucy.load``, ``ValueError`` for ``from_onnx`` (a bare MemoryError counts as
  outside: sizes are to be refused before they are allocated);
- a run past ``CASE_SECONDS``;
- an error message longer than ``MAX_MESSAGE`` characters;
- an object returned that does not work: a loaded layer or model must compute on a
  small input (or refuse it as an overflow), save again, and that file load again.

``run(fuzzer, seconds)`` runs batches of hypothesis examples until ``seconds`` are
spent and returns the cases tried and the failures; ``tests/test_fuzz.py`` runs each
fuzzer for ``GRUCY_FUZZ_SECONDS`` (60 by default) in CI, ``bench/fuzz.py`` for an hour.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grucy_files import build, parse

CASE_SECONDS = 15.0
MEMORY_HEADROOM = 1 << 30
MAX_MESSAGE = 10_000

# -- the fork server ------------------------------------------------------------------------
_SERVER = textwrap.dedent(r'''
    import os, pickle, resource, select, shutil, signal, struct, sys, tempfile, time
    import traceback, warnings
    import numpy as np
    warnings.simplefilter("ignore")  # (overflow warnings of hostile numbers)
    import grucy
    from grucy import io as gio
    from grucy._limits import SizeLimitError
    from grucy._validation import NumericOverflowError
    try:
        import onnx
        from grucy import interop
    except ImportError:
        onnx = None

    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # nothing a case prints can reach the channel
    ALLOWED_AFTER = (NumericOverflowError, SizeLimitError)

    def mapped():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")

    def smoke(obj, workdir):
        """A returned object must work: compute on a small input (or refuse it as an
        overflow), save again, and that file load again."""
        try:
            if isinstance(obj, (grucy.GRUBase, grucy.QuantizedGRU)):
                obj.forward(np.zeros((2, 1, obj.input_size), obj.dtype), training=False)
            elif getattr(obj, "input_kind", "") and hasattr(obj, "net_"):
                kind = obj.input_kind
                S = obj.n_fitted_series_ if kind == "series" else None
                if (kind == "series" and obj.lookback_ <= 1000 and (S or 1) <= 100
                        and obj.n_covariates_ <= 1000):
                    shape = ((obj.lookback_,) if obj._univariate
                             else (obj.lookback_, obj.n_series_))
                    y, X = np.zeros(shape), None
                    if obj.n_covariates_:  # the history's steps and the 2 ahead
                        X = np.zeros((obj.lookback_ + 2, obj.n_covariates_))
                    if S is not None:  # a global model: one history per series
                        y, X = [y] * S, None if X is None else [X] * S
                    obj.predict(y, horizon=2, X=X)
                    if obj.quantiles_ is not None:
                        obj.predict_quantiles(y, horizon=2, X=X)
                elif kind == "sequences":
                    F = 1 if obj._input_ndim == 2 else obj.n_features_in_
                    if obj._input_ndim == 2:
                        X = np.zeros((2, obj.n_features_in_))
                    else:
                        X = np.zeros((2, 3, F))
                    obj.predict(X)
                    # sequences of different lengths (packed, per-step outputs)
                    obj.predict([np.zeros((3, F)), np.zeros((1, F))] if obj._input_ndim
                                == 3 else [np.zeros(3), np.zeros(1)])
                elif kind == "text":
                    obj.generate("ab", n=3, random_state=0)
        except ALLOWED_AFTER:
            pass
        except BaseException as exc:
            return f"returned an object that fails: {type(exc).__name__}: {exc}"[:2000]
        if isinstance(obj, grucy.GRUBase) or hasattr(obj, "_grucy_kind"):
            again = os.path.join(workdir, "again.grucy")
            try:
                grucy.save(obj, again)
            except (ValueError, TypeError):
                return None  # refusing to save is allowed; writing a bad file is not
            try:
                grucy.load(again)
            except BaseException as exc:
                return (f"saved a file that does not load again: {type(exc).__name__}: "
                        f"{exc}")[:2000]
        return None

    def case_load(req, workdir):
        path = os.path.join(workdir, "case.grucy")
        with open(path, "wb") as f:
            f.write(req["data"])
        try:
            obj = grucy.load(path)
        except gio.FileFormatError as exc:
            return {"status": "refused", "type": type(exc).__name__, "message": str(exc)}
        return {"status": "returned", "type": type(obj).__name__,
                "problem": smoke(obj, workdir)}

    def case_onnx(req, workdir):
        for name, spec in req.get("files", {}).items():
            full = os.path.join(workdir, name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if isinstance(spec, bytes):
                with open(full, "wb") as f:
                    f.write(spec)
            elif isinstance(spec, int):
                with open(full, "wb") as f:
                    f.truncate(spec)  # sparse
            elif spec == "symlink":
                os.symlink("/etc/hostname", full)
        source = req["data"]
        if req.get("as_path"):
            source = os.path.join(workdir, "model.onnx")
            with open(source, "wb") as f:
                f.write(req["data"])
        try:
            layer = interop.from_onnx(source)
        except ValueError as exc:
            return {"status": "refused", "type": type(exc).__name__, "message": str(exc)}
        return {"status": "returned", "type": type(layer).__name__,
                "problem": smoke(layer, workdir)}

    CASES = {"load": case_load, "onnx": case_onnx}

    def child(req, w, workdir):
        limit = mapped() + req["headroom"]
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            outcome = CASES[req["kind"]](req, workdir)
        except BaseException as exc:
            outcome = {"status": "undocumented", "type": type(exc).__name__,
                       "message": str(exc)[:5000],
                       "traceback": traceback.format_exc()[-5000:]}
        data = pickle.dumps(outcome)
        os.write(w, struct.pack("<Q", len(data)))
        view = memoryview(data)
        while view:
            view = view[os.write(w, view):]

    def run(req):
        workdir = tempfile.mkdtemp(prefix="grucy-fuzz-")
        try:
            return run_in(req, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def run_in(req, workdir):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                child(req, w, workdir)
            finally:
                os._exit(0)
        os.close(w)
        deadline = time.monotonic() + req["seconds"]
        chunks = []
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([r], [], [], max(left, 0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(r)
                return {"status": "timeout"}
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return {"status": "signal", "signal": os.WTERMSIG(status)}
        if os.WEXITSTATUS(status) != 0:
            return {"status": "exit", "code": os.WEXITSTATUS(status)}
        data = b"".join(chunks)
        if len(data) < 8:
            return {"status": "exit", "code": 0, "message": "no outcome reported"}
        return pickle.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])

    while True:
        head = channel_in.read(8)
        if len(head) < 8:
            break
        req = pickle.loads(channel_in.read(struct.unpack("<Q", head)[0]))
        out = pickle.dumps(run(req))
        channel_out.write(struct.pack("<Q", len(out)) + out)
        channel_out.flush()
''')


class ForkServer:
    """A warm Python process that runs each case in a forked child (see the module
    docstring); ``run`` returns the child's outcome as a dict."""

    def __init__(self):
        # (the environment, PYTHONPATH included, decides which grucy is fuzzed)
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, kind, *, seconds=CASE_SECONDS, headroom=MEMORY_HEADROOM, **req):
        req.update(kind=kind, seconds=seconds, headroom=headroom)
        data = pickle.dumps(req)
        self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
        self.proc.stdin.flush()
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise RuntimeError(f"the fork server died (exit {self.proc.poll()})")
        return pickle.loads(self.proc.stdout.read(struct.unpack("<Q", head)[0]))

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def problem(outcome):
    """What is wrong with an outcome (None: a documented result)."""
    status = outcome["status"]
    if status == "refused":
        if len(outcome["message"]) > MAX_MESSAGE:
            return f"a {len(outcome['message'])}-character message"
        return None
    if status == "returned":
        return outcome.get("problem")
    if status == "signal":
        return f"killed by signal {outcome['signal']}"
    if status == "timeout":
        return f"ran past {CASE_SECONDS} s"
    if status == "undocumented":
        return (f"undocumented {outcome['type']}: {outcome['message'][:1000]}\n"
                f"{outcome.get('traceback', '')[-3000:]}")
    return f"abnormal exit: {outcome}"


# -- values a hostile writer puts anywhere ----------------------------------------------------
NASTY_INTS = [0, 1, -1, 2, 3, 7, 255, 256, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63,
              2**64, 10**8, 2 * 10**6, 8000, 10**30, -(2**63)]
scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(NASTY_INTS), st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["float32", "float64", "float16", "object", "int64", "<f4", ">f4",
                     "grucy.GRU", "grucy.Forecaster", "grucy.reference.GRU", "mse",
                     "adam", "big", "little", ""]))
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=8)


def _paths(value, prefix=()):
    """Every path (tuple of keys and indices) into a JSON value."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:16]):
            out += _paths(v, prefix + (i,))
    return out


def _get(value, path):
    for key in path:
        value = value[key]
    return value


# -- grucy files ----------------------------------------------------------------------------
ARRAY_DTYPES = ["float32", "float64", "int8", "int32", "int64", "uint8", "uint32",
                "uint64", "bool"]


@st.composite
def load_cases(draw, samples):
    """The bytes of a mutated grucy file (valid checksum)."""
    with np.errstate(all="ignore"):  # (hostile values cast into small dtypes)
        return _load_case(draw, samples)


def _load_case(draw, samples):
    name = draw(st.sampled_from(sorted(samples)))
    header, arrays = parse(samples[name])
    layout = None
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "delete", "add", "values", "dtype",
                                   "shape", "drop_array", "add_array", "kind", "layout",
                                   "header_text"]))
        if op in ("set", "delete", "add"):
            paths = [p for p in _paths(header) if p]
            path = draw(st.sampled_from(paths))
            parent = _get(header, path[:-1])
            if op == "set":
                parent[path[-1]] = draw(json_values)
            elif op == "delete":
                if isinstance(parent, dict):
                    del parent[path[-1]]
                else:
                    parent.pop(path[-1])
            else:
                target = _get(header, path) if isinstance(_get(header, path), dict) \
                    else parent
                if isinstance(target, dict):
                    key = draw(st.sampled_from(["n_iter_", "predict", "__class__", "net_",
                                                "_univariate", "vocab_", "extra",
                                                "colour", "quantiles_", "n_fitted_series_",
                                                "covariate_names_", "columns_",
                                                "class_weight_", "last_steps"])
                               | st.text(max_size=6))
                    target[key] = draw(json_values)
                else:
                    target.append(draw(json_values))
        elif op in ("values", "dtype", "shape", "drop_array") and arrays:
            key = draw(st.sampled_from(sorted(arrays)))
            a = arrays[key]
            if op == "values" and a.size:
                flat = a.reshape(-1).copy()
                i = draw(st.integers(0, flat.size - 1))
                if flat.dtype.kind == "f":
                    flat[i] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e38, -1e38,
                                                    3e38, 1e308, 0.0, -0.0, 5e-324]))
                elif flat.dtype.kind in "iu":
                    # (cast as C does, wrapping: 2**31 - 1 into a uint8 or int8 array,
                    # an earlier "dtype" mutation's, raised OverflowError in the
                    # generator instead of making a case)
                    flat[i] = np.array(draw(st.sampled_from([0, 1, 2**31 - 1, 255, -128])))\
                        .astype(flat.dtype)
                arrays[key] = flat.reshape(a.shape)
            elif op == "dtype":
                arrays[key] = a.astype(draw(st.sampled_from(ARRAY_DTYPES)))
            elif op == "shape":
                choice = draw(st.sampled_from(["flat", "transpose", "slice", "tile",
                                               "scalar", "empty"]))
                if choice == "flat":
                    arrays[key] = a.reshape(-1)
                elif choice == "transpose":
                    arrays[key] = np.ascontiguousarray(a.T)
                elif choice == "slice" and a.ndim:
                    arrays[key] = a[:max(0, a.shape[0] - 1)]
                elif choice == "tile":
                    arrays[key] = np.concatenate([a, a]) if a.ndim else a.reshape(1)
                elif choice == "scalar":
                    arrays[key] = np.asarray(a.reshape(-1)[:1].sum(), a.dtype)
                else:
                    arrays[key] = np.zeros((0,) + a.shape[1:], a.dtype)
            else:
                del arrays[key]
        elif op == "add_array":
            key = draw(st.sampled_from(["net/gru.weight_hh_l5", "fitted/predict",
                                        "fitted/__class__", "fitted/mean_", "weight_ih_l9",
                                        "optimizer/m/0", "x", "fitted/quantiles_",
                                        "fitted/covariate_scale_", "fitted/class_weight_"])
                                       | st.text(max_size=10))
            arrays[key] = np.zeros(draw(st.integers(0, 5)),
                                   draw(st.sampled_from(ARRAY_DTYPES)))
        elif op == "kind":
            header["kind"] = draw(st.sampled_from(
                ["grucy.GRU", "grucy.reference.GRU", "grucy.Forecaster", "grucy.CharLM",
                 "grucy.QuantizedGRU",
                 "grucy.GRUClassifier", "grucy.GRURegressor", "grucy.checkpoint",
                 "grucy.nn.Linear", "grucy._base.GRUBase", "os.system", "grucy.io.load",
                 "grucy.models.base.GRUModel"]) | st.text(max_size=12))
        elif op == "layout":
            layout = draw(st.sampled_from(["offset", "nbytes", "shape", "dtype", "name",
                                           "entry", "trailing", "overlap"]))
        elif op == "header_text":
            text = build(header, arrays)  # the real header text, then damaged
            head_len = struct.unpack_from("<Q", text, 12)[0]
            head = bytearray(text[52:52 + head_len])
            i = draw(st.integers(0, max(0, len(head) - 1)))
            j = draw(st.integers(i, min(len(head), i + 16)))
            head[i:j] = draw(st.binary(max_size=16) | st.sampled_from(
                [b"[", b"{", b"]", b'"', b"NaN", b"1e999", b"[" * 200, b"9" * 400]))
            payload = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())
            return build(None, head=bytes(head), payload=payload)
    if layout is None:
        return build(header, arrays)
    entries, blobs, offset = [], [], 0
    for key, a in arrays.items():
        a = np.ascontiguousarray(a)
        entries.append({"name": key, "dtype": a.dtype.name, "shape": list(a.shape),
                        "offset": offset, "nbytes": a.nbytes})
        blobs.append(a.tobytes())
        offset += a.nbytes
    payload = b"".join(blobs)
    if entries:
        e = entries[draw(st.integers(0, len(entries) - 1))]
        if layout == "entry":
            entries[entries.index(e)] = draw(json_values)
        elif layout == "trailing":
            payload += draw(st.binary(min_size=1, max_size=64))
        elif layout == "overlap":
            for other in entries:
                other.update(offset=0, nbytes=e["nbytes"], shape=e["shape"],
                             dtype=e["dtype"])
        else:
            e[layout] = draw(json_values)
    header = dict(header, arrays=entries)
    return build(header, payload=payload)


# -- ONNX models ---------------------------------------------------------------------------
def onnx_samples():
    """Serialized ONNX models of several layers (to_onnx), name -> bytes."""
    import grucy
    from grucy import interop

    layers = {
        "one": (grucy.GRU(3, 4, seed=0), {}),
        "stack": (grucy.GRU(3, 4, num_layers=2, seed=1), {}),
        "bidi": (grucy.GRU(2, 3, num_layers=2, bidirectional=True, seed=2),
                 dict(h0=True, lengths=True)),
        "batch_first": (grucy.GRU(2, 3, num_layers=2, batch_first=True, bias=False,
                                  reset_after=False, seed=3), dict(batch_size=2)),
        "float64": (grucy.GRU(2, 2, dtype=np.float64, seed=4), dict(seq_len=5)),
    }
    return {name: interop.to_onnx(layer, **kw).SerializeToString()
            for name, (layer, kw) in layers.items()}


OPS = ["GRU", "Identity", "Squeeze", "Unsqueeze", "Transpose", "Reshape", "Concat", "Relu",
       "Constant", "Slice", "Cast", "LSTM"]
ATTRIBUTES = ["hidden_size", "layout", "direction", "linear_before_reset", "activations",
              "clip", "activation_alpha", "activation_beta", "perm", "axes", "allowzero",
              "value", "to", "axis", "x"]
attribute_values = st.one_of(
    st.sampled_from([n for n in NASTY_INTS if -2**63 <= n < 2**63]),
    st.floats(allow_nan=True, width=32),
    st.text(max_size=10), st.sampled_from(["forward", "reverse", "bidirectional",
                                           "Sigmoid", "Tanh"]),
    st.lists(st.integers(-5, 5), min_size=1, max_size=5),
    st.lists(st.floats(-2, 2, width=32), min_size=1, max_size=3),
    st.lists(st.sampled_from(["Sigmoid", "Tanh", "Relu", "x"]), min_size=1, max_size=4),
    st.just("TENSOR"))
EXTERNAL_LOCATIONS = ["w.bin", "../w.bin", "/etc/hostname", "", ".", "sub/../w.bin",
                      "missing.bin", "link.bin", "sub/w.bin"]


@st.composite
def onnx_cases(draw, samples):
    """A request for the ONNX child: the mutated model's bytes, whether it is passed as
    a path, and the data files to create beside it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    name = draw(st.sampled_from(sorted(samples)))
    model = onnx.load_from_string(samples[name])
    graph = model.graph
    files, as_path = {}, draw(st.booleans())

    def tensor_names():
        names = {t.name for t in graph.initializer} | {i.name for i in graph.input}
        for n in graph.node:
            names |= set(n.input) | set(n.output)
        return sorted(names)

    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["rewire", "rewire", "op_type", "attribute",
                                   "attribute", "drop_attribute", "drop_node",
                                   "copy_node", "drop_io", "dims", "data_type", "data",
                                   "external", "external", "input_dims", "constant",
                                   "opset"]))
        nodes = list(graph.node)
        if op in ("rewire", "op_type", "attribute", "drop_attribute", "drop_node",
                  "copy_node", "drop_io") and nodes:
            i = draw(st.integers(0, len(nodes) - 1))
            node = graph.node[i]
            if op == "rewire":
                choices = tensor_names() + list(node.output) + ["", "nowhere"]
                new = draw(st.sampled_from(choices))
                if node.input and draw(st.booleans()):
                    node.input[draw(st.integers(0, len(node.input) - 1))] = new
                else:
                    node.input.append(new)
            elif op == "op_type":
                node.op_type = draw(st.sampled_from(OPS))
            elif op == "attribute":
                attr_name = draw(st.sampled_from(ATTRIBUTES))
                value = draw(attribute_values)
                if value == "TENSOR":
                    value = numpy_helper.from_array(
                        np.zeros(draw(st.integers(0, 4)), np.float32))
                for j, a in enumerate(node.attribute):
                    if a.name == attr_name:
                        del node.attribute[j]
                        break
                node.attribute.append(helper.make_attribute(attr_name, value))
            elif op == "drop_attribute" and node.attribute:
                del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
            elif op == "drop_node":
                del graph.node[i]
            elif op == "copy_node":
                graph.node.insert(draw(st.integers(0, len(nodes))), node)
            elif op == "drop_io":
                field = node.input if draw(st.booleans()) else node.output
                if field:
                    del field[draw(st.integers(0, len(field) - 1)):]
        elif op in ("dims", "data_type", "data", "external") and graph.initializer:
            t = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
            if op == "dims":
                del t.dims[:]
                t.dims.extend(draw(st.lists(st.sampled_from(
                    [0, 1, 2, 3, 4, 6, 12, -1, 2**31, 2**40, 2**62]), max_size=4)))
            elif op == "data_type":
                t.data_type = draw(st.integers(0, 30))
            elif op == "data":
                raw = _raw(t)
                t.ClearField("float_data")
                t.ClearField("double_data")
                t.ClearField("int64_data")
                cut = draw(st.integers(0, len(raw) + 8))
                t.raw_data = (raw + b"\0" * 8)[:cut]
            else:  # external data, with a data file of any size beside the model
                raw = _raw(t)
                for field in ("raw_data", "float_data", "double_data", "int64_data",
                              "int32_data"):
                    t.ClearField(field)
                t.data_location = TensorProto.EXTERNAL
                location = draw(st.sampled_from(EXTERNAL_LOCATIONS))
                entries = {"location": location}
                if draw(st.booleans()):
                    entries["offset"] = str(draw(st.sampled_from([0, 4, 2**40, -4])))
                if draw(st.booleans()):
                    entries["length"] = str(draw(st.sampled_from(
                        [len(raw), 0, len(raw) - 4, 2**31, 1_500_000_000, -1])))
                del t.external_data[:]
                for k, v in entries.items():
                    t.external_data.add(key=k, value=v)
                as_path = True
                size = draw(st.sampled_from(["exact", 0, 3, 1_500_000_000, 2**34]))
                target = "w.bin" if location in ("w.bin", "sub/../w.bin") else "sub/w.bin"
                files[target] = raw if size == "exact" else size
                if location == "link.bin":
                    files["link.bin"] = "symlink"
        elif op == "input_dims" and graph.input:
            vi = graph.input[draw(st.integers(0, len(graph.input) - 1))]
            dims = vi.type.tensor_type.shape.dim
            if dims:
                d = dims[draw(st.integers(0, len(dims) - 1))]
                d.dim_value = draw(st.sampled_from([0, 1, 2**31 - 1, 2**62, 10**12]))
            vi.type.tensor_type.elem_type = draw(st.sampled_from([1, 1, 1, 11, 7, 0]))
        elif op == "constant":
            value = numpy_helper.from_array(
                np.zeros(draw(st.lists(st.integers(0, 3), max_size=3)),
                         draw(st.sampled_from([np.float32, np.int64, np.float64]))))
            out = draw(st.sampled_from(tensor_names() + ["c_new"]))
            graph.node.insert(draw(st.integers(0, len(nodes))),
                              helper.make_node("Constant", [], [out], value=value))
        elif op == "opset":
            model.opset_import[0].version = draw(st.sampled_from([1, 7, 13, 14, 17, 99]))
    return {"data": model.SerializeToString(), "as_path": as_path, "files": files}


def _raw(tensor):
    """A tensor's bytes as the generator can get them (b"" when it cannot: an earlier
    mutation may have made it unreadable)."""
    from onnx import numpy_helper

    if tensor.raw_data:
        return tensor.raw_data
    try:
        return numpy_helper.to_array(tensor).tobytes()
    except Exception:
        return b""


# -- running ------------------------------------------------------------------------------
def run(fuzzer, seconds, *, stop_at_first=True, progress=None):
    """Run ``fuzzer`` ("load" or "onnx") for ``seconds``: hypothesis batches of cases,
    each case in a forked child.  Returns ``(cases, failures)``, failures as text (the
    shrunk example and what went wrong).  With ``stop_at_first`` the first failing batch
    ends the run."""
    if fuzzer == "load":
        from pathlib import Path

        from grucy_files import samples
        with tempfile.TemporaryDirectory(prefix="grucy-fuzz-samples-") as tmp:
            cases = load_cases(samples(Path(tmp)))

        def request(case):
            return {"data": case}
    elif fuzzer == "onnx":
        cases = onnx_cases(onnx_samples())

        def request(case):
            return case
    else:
        raise ValueError(f"fuzzer must be 'load' or 'onnx', got {fuzzer!r}")
    server = ForkServer()
    counter = {"cases": 0}
    failures = []

    def body(case):
        counter["cases"] += 1
        outcome = server.run(fuzzer, **request(case))
        wrong = problem(outcome)
        assert wrong is None, wrong

    start = time.monotonic()
    batch = 0
    try:
        while time.monotonic() - start < seconds:
            batch += 1
            test = settings(max_examples=40, deadline=None, database=None,
                            suppress_health_check=list(HealthCheck),
                            print_blob=True)(given(cases)(body))
            try:
                test()
            except Exception as exc:  # hypothesis re-raises the shrunk failure
                failures.append(f"batch {batch}: {type(exc).__name__}: {exc}"[:6000])
                if stop_at_first:
                    break
            if progress is not None:
                progress(counter["cases"], len(failures), time.monotonic() - start)
    finally:
        server.close()
    return counter["cases"], failures
