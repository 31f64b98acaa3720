"""The streaming case: the per-call cost of one step at B=1.

grucy's streaming API (``gru.stream(batch_size=1).step``), its ``gru.step(x, h)``, its
whole-sequence ``forward`` with T=1 (what streaming costs without a step API), PyTorch's
``GRUCell`` and a one-step ONNX Runtime session carrying ``initial_h``; each is checked
against grucy's whole-sequence forward before it is timed.
"""

from __future__ import annotations

import statistics

import numpy as np

from _bench_peers import OnnxRuntimePeer, Problem, TorchPeer, gru_onnx_model, ort_session
from _bench_timing import Entry, max_rel_diff, measure

__all__ = ["run_streaming", "stream_runners"]


class StreamRunner:
    """One streaming implementation fed the K inputs of ``xs`` (K, I), one call each.

    ``run()`` (timed) continues from the state the previous ``run()`` left;
    ``outputs()`` returns the K outputs (K, H) of a fresh run from h = 0, for the check.
    ``start()`` returns a fresh state, ``feed(state)`` runs all K steps and returns the
    state after them, ``feed_collect(state)`` also collects the outputs.
    """

    def __init__(self, name, detail, start, feed, feed_collect):
        self.name, self.detail = name, detail
        self._feed, self._feed_collect = feed, feed_collect
        self._start = start
        self._state = start()

    def run(self):
        self._state = self._feed(self._state)

    def outputs(self):
        return np.stack([np.reshape(y, -1) for y in self._feed_collect(self._start())])


def stream_runners(I, H, dtype, state, xs, threads, peers):
    """Runners for grucy's streaming API and the one-step peers; (runners, notes).

    ``notes`` maps a name to why it is not available.
    """
    from grucy import GRU

    runners, notes = [], {}
    gru = GRU(I, H, dtype=dtype, seed=0)
    gru.load_state_dict(state)
    xs_b = xs[:, None, :].copy()       # (K, 1, I): one (B=1, I) input per call
    xs_tb = xs[:, None, None, :].copy()  # (K, T=1, B=1, I)

    def feed(s):
        step = s.step
        for x in xs:
            step(x)
        return s

    def feed_collect(s):
        return [s.step(x) for x in xs]

    runners.append(StreamRunner(
        "grucy stream.step", "s = gru.stream(batch_size=1); y = s.step(x_t), x_t (I,)",
        lambda: gru.stream(batch_size=1), feed, feed_collect))

    def feed(h):
        step = gru.step
        for x in xs_b:
            _, h = step(x, h)
        return h

    def feed_collect(h):
        ys = []
        for x in xs_b:
            y, h = gru.step(x, h)
            ys.append(y)
        return ys

    runners.append(StreamRunner(
        "grucy step(x, h)", "y, h = gru.step(x_t, h), x_t (1, I), h (1, 1, H)",
        lambda: np.zeros((1, 1, H), dtype), feed, feed_collect))

    # The whole-sequence API with T = 1: what streaming costs without a step API.
    def feed(h):
        fwd = gru.forward
        for x in xs_tb:
            _, h = fwd(x, h, training=False)
        return h

    def feed_collect(h):
        ys = []
        for x in xs_tb:
            y, h = gru.forward(x, h, training=False)
            ys.append(y)
        return ys

    runners.append(StreamRunner(
        "grucy forward(T=1)", "y, h = gru.forward(x_t (1, 1, I), h, training=False)",
        lambda: np.zeros((1, 1, H), dtype), feed, feed_collect))

    if "torch" in peers:
        ok, detail = TorchPeer.status()
        if not ok:
            notes["torch GRUCell"] = detail
        else:
            import torch

            torch.set_num_threads(threads)
            tdtype = {np.dtype(np.float32): torch.float32,
                      np.dtype(np.float64): torch.float64}[np.dtype(dtype)]
            cell = torch.nn.GRUCell(I, H, dtype=tdtype)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(torch.from_numpy(state[f"{name}_l0"]))
            xs_t = [torch.from_numpy(x) for x in xs_b]  # (1, I) tensors

            def feed(h):
                with torch.inference_mode():
                    for x in xs_t:
                        h = cell(x, h)
                return h

            def feed_collect(h):
                ys = []
                with torch.inference_mode():
                    for x in xs_t:
                        h = cell(x, h)
                        ys.append(h.numpy().copy())
                return ys

            runners.append(StreamRunner(
                "torch GRUCell", "h = cell(x_t, h) in inference_mode, x_t tensor (1, I)",
                lambda: torch.zeros(1, H, dtype=tdtype), feed, feed_collect))

    if "onnxruntime" in peers:
        ok, detail = OnnxRuntimePeer.status()
        if not ok:
            notes["onnxruntime 1-step"] = detail
        else:
            model = gru_onnx_model(state, I, H, 1, False, dtype, initial_h=True)
            sess = ort_session(model, threads)
            out_names = ["Y_h_l0"]
            try:
                sess.run(out_names, {"X": xs_tb[0], "initial_h": np.zeros((1, 1, H), dtype)})
            except Exception as exc:
                notes["onnxruntime 1-step"] = f"unsupported: {str(exc).split(':')[-1].strip()}"
            else:
                def feed(h):
                    run = sess.run
                    for x in xs_tb:
                        h = run(out_names, {"X": x, "initial_h": h})[0]
                    return h

                def feed_collect(h):
                    ys = []
                    for x in xs_tb:
                        h = sess.run(out_names, {"X": x, "initial_h": h})[0]
                        ys.append(h)
                    return ys

                runners.append(StreamRunner(
                    "onnxruntime 1-step",
                    "h = sess.run(['Y_h'], {'X': x_t (1, 1, I), 'initial_h': h})[0]",
                    lambda: np.zeros((1, 1, H), dtype), feed, feed_collect))
    return runners, notes


def run_streaming(bench):
    """Per-call time of one step at B=1: grucy's streaming API and the one-step peers."""
    I, H = bench.args.stream_size
    steps = 100 if bench.args.quick else 200
    prob = Problem(1, steps, I, H, seed=bench.args.seed)
    xs = prob.x[:, 0, :].copy()
    runners, notes = stream_runners(I, H, np.float32, prob.state, xs, bench.threads,
                                    bench.available_peers())
    out = {"B": 1, "I": I, "H": H, "steps_per_sample": steps, "impls": {}, "notes": notes}
    # Reference: the whole sequence through grucy's forward.
    y_ref, _ = bench.subject(prob, bench.threads).layer.forward(prob.x, training=False)
    y_ref = y_ref[:, 0, :]
    entries = []
    for r in runners:
        try:
            err, _ = max_rel_diff({"y": r.outputs()}, {"y": y_ref})
        except Exception as exc:
            out["impls"][r.name] = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}
            continue
        tol = bench.tol(np.float32)
        res = out["impls"][r.name] = {"api": r.detail, "max_rel_diff": err, "check_tol": tol}
        if not err <= tol:
            res["status"] = "mismatch"
            res["detail"] = f"disagrees with grucy.forward: {err:.3g} > {tol:g}; not timed"
            bench.failures.append(f"streaming {r.name}: {res['detail']}")
            continue
        res["status"] = "ok"
        entries.append(Entry(r.name, r.run, calls=steps))
    times = measure(entries, bench.target, max(bench.min_repeats, 10), order=bench.args.order)
    for name, ts in times.items():
        out["impls"][name].update({"us_min": min(ts) * 1e6,
                                   "us_median": statistics.median(ts) * 1e6,
                                   "repeats": len(ts)})
    bench.log("  streaming: " + "  ".join(f"{n} {r['us_min']:.1f} us"
                                         for n, r in out["impls"].items() if "us_min" in r))
    return out
