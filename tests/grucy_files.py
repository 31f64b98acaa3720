"""Taking grucy files apart and putting them back together with a valid checksum: what
a malicious or buggy writer can produce.  Used by test_hostile_files.py, the fuzzers
(test_fuzz.py) and bench/fuzz.py; imports nothing but NumPy and grucy's format module.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from grucy import io


def parse(raw):
    """``(header, arrays)`` of the bytes of a grucy file: the header as a dict, the
    arrays as name -> ndarray (copies, in the file's order)."""
    magic, version, head_len, _ = io._PREFIX.unpack_from(raw)
    start = io._PREFIX.size
    header = json.loads(raw[start:start + head_len].decode("utf-8"))
    payload = raw[start + head_len:]
    arrays = {}
    for e in header["arrays"]:
        data = payload[e["offset"]:e["offset"] + e["nbytes"]]
        arrays[e["name"]] = np.frombuffer(data, e["dtype"]).reshape(e["shape"]).copy()
    return header, arrays


def build(header, arrays=None, *, payload=None, head=None, version=None):
    """The bytes of a file with a valid checksum.

    ``header`` (a dict, JSON-encoded; or ``head``, raw header bytes) with its
    ``"arrays"`` entries rewritten in the writer's layout from ``arrays`` (name ->
    array) unless ``payload`` (raw bytes, the entries left as they are) is given.
    """
    if payload is None:
        entries, blobs, offset = [], [], 0
        for name, a in (arrays or {}).items():
            a = np.ascontiguousarray(a)
            entries.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape),
                            "offset": offset, "nbytes": a.nbytes})
            blobs.append(a.tobytes())
            offset += a.nbytes
        header = dict(header, arrays=entries)
        payload = b"".join(blobs)
    if head is None:
        head = json.dumps(header).encode("utf-8")
    digest = hashlib.sha256(head + payload).digest()
    prefix = io._PREFIX.pack(io.MAGIC, io.FORMAT_VERSION if version is None else version,
                             len(head), digest)
    return prefix + head + payload


def samples(tmp_dir):
    """Real files of every kind grucy saves, small: name -> bytes (fitted quickly)."""
    import grucy
    from grucy import reference

    rng = np.random.default_rng(0)
    objects = {
        "gru": grucy.GRU(3, 4, num_layers=2, bidirectional=True, seed=0),
        "gru_nobias": grucy.GRU(2, 3, bias=False, reset_after=False, seed=1,
                                dtype=np.float64),
        "reference": reference.GRU(2, 3, seed=2),
        "forecaster": grucy.Forecaster(lookback=4, hidden_size=4, epochs=1,
                                       random_state=0).fit(np.sin(np.arange(40.0))),
        "classifier": grucy.GRUClassifier(hidden_size=4, epochs=1, random_state=0).fit(
            rng.standard_normal((12, 5, 2)), np.array(["a", "b", "c"] * 4)),
        "regressor": grucy.GRURegressor(hidden_size=4, epochs=1, random_state=0).fit(
            rng.standard_normal((12, 5)), rng.standard_normal((12, 2))),
        "charlm": grucy.CharLM(hidden_size=4, embedding_dim=3, bptt=4, batch_size=2,
                               epochs=1, random_state=0).fit("hello world, hello grucy"),
        "unfitted": grucy.GRURegressor(hidden_size=4),
        # issue 16's models: covariates, quantiles, many series, per-step outputs,
        # variable lengths, weights
        "forecaster_covariates": grucy.Forecaster(
            lookback=4, horizon=2, hidden_size=4, epochs=1, temporal_norm=True,
            random_state=0).fit(np.sin(np.arange(40.0)),
                                np.c_[np.cos(np.arange(40.0)), np.arange(40.0) % 7]),
        "forecaster_quantiles_many": grucy.Forecaster(
            lookback=4, horizon=2, hidden_size=4, epochs=1, quantiles=(0.1, 0.9),
            random_state=0).fit([rng.standard_normal((30, 2)),
                                 rng.standard_normal((36, 2)) + 5.0]),
        "classifier_tagging": grucy.GRUClassifier(
            hidden_size=4, epochs=1, return_sequences=True, class_weight="balanced",
            random_state=0).fit([rng.standard_normal((T, 2)) for T in (3, 5, 4, 6)],
                                [np.arange(T) % 3 for T in (3, 5, 4, 6)]),
        "regressor_variable": grucy.GRURegressor(
            hidden_size=4, epochs=1, bidirectional=True, random_state=0).fit(
                rng.standard_normal((8, 6, 2)), rng.standard_normal(8),
                sample_weight=np.arange(1.0, 9.0), lengths=[6, 2, 3, 6, 1, 4, 5, 6]),
        "regressor_per_step": grucy.GRURegressor(
            hidden_size=4, epochs=1, return_sequences=True, random_state=0).fit(
                [rng.standard_normal(T) for T in (4, 2, 5)],
                [rng.standard_normal((T, 2)) for T in (4, 2, 5)]),
        # issue 18: a bf16 layer, int8 layers and an int8 model
        "gru_bf16": grucy.GRU(3, 4, seed=3, precision="bf16"),
        "quantized": grucy.quantize(grucy.GRU(3, 4, num_layers=2, bidirectional=True,
                                              seed=4)),
        "quantized_nobias": grucy.quantize(grucy.GRU(2, 3, bias=False, reset_after=False,
                                                     batch_first=True, seed=5)),
    }
    objects["regressor_int8"] = grucy.quantize(objects["regressor"])
    out = {}
    for name, obj in objects.items():
        path = tmp_dir / f"{name}.grucy"
        grucy.save(obj, path)
        out[name] = path.read_bytes()
    return out
