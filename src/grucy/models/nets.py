"""The networks inside the models: a GRU between the building blocks of :mod:`grucy.nn`.

- :class:`ReadoutNet`: GRU over a sequence, a linear readout of its final state
  (Forecaster, GRUClassifier, GRURegressor);
- :class:`SequenceNet`: GRU over a sequence, a linear readout at every step, or at its
  last few steps (GRUClassifier and GRURegressor with ``return_sequences=True``, a
  Forecaster with covariates);
- :class:`CharNet`: embedding, GRU carried across chunks, a linear readout per step
  (CharLM).

Each holds its parts as attributes (``gru``, ``head``, ...), its constructor arguments as
``config`` (what a saved model stores), and offers :meth:`gru_gradients` for diagnostics
that differentiate through the GRU itself (:func:`grucy.diagnostics.gradient_flow`).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .._params import ParameterHolder
from .._validation import _rng, check_dtype
from ..layer import GRU
from ..nn import Dropout, Embedding, Linear, Sequential, TruncatedBPTT

__all__ = ["ReadoutNet", "SequenceNet", "CharNet", "net_from_config"]


def _record_precision(config, gru):
    """A network's config names the GRU's precision when it is not the default (so the
    files of float32 networks stay as they were)."""
    if gru.precision != "fp32":
        config["precision"] = gru.precision


class _Net(ParameterHolder):
    """Parameters and gradients of named child modules, named ``"child.param"``."""

    def _adopt(self, **children):
        self._children = children
        self._params, self.grads = {}, {}
        for cname, child in children.items():
            for pname, arr in child._params.items():
                self._params[f"{cname}.{pname}"] = arr
                self.grads[f"{cname}.{pname}"] = child.grads[pname]

    def generators(self) -> List[np.random.Generator]:
        return [g for child in self._children.values() for g in child.generators()]

    def _gru_and_readout(self, input_size, hidden_size, output_size, num_layers, dropout,
                         bidirectional, dtype, seed, precision, **config):
        """The GRU, then dropout and a linear readout (ReadoutNet and SequenceNet), and
        the network's config, taken from what the layers accepted (they check the
        arguments); ``config`` adds the network's own entries."""
        seeds = _rng(seed).integers(2**63, size=3)
        self.dtype = check_dtype(dtype)
        self.gru = g = GRU(input_size, hidden_size, num_layers, batch_first=True,
                           dropout=dropout, bidirectional=bidirectional, dtype=dtype,
                           seed=seeds[0], precision=precision)
        self.head = Sequential(Dropout(dropout, seed=seeds[1]),
                               Linear(g.num_directions * hidden_size, output_size,
                                      dtype=dtype, seed=seeds[2]))
        self.config = dict(input_size=g.input_size, hidden_size=g.hidden_size,
                           output_size=self.head[1].out_features, num_layers=g.num_layers,
                           dropout=g.dropout, bidirectional=g.bidirectional, **config,
                           dtype=self.dtype.name)
        _record_precision(self.config, g)
        self._adopt(gru=self.gru, head=self.head)


class ReadoutNet(_Net):
    """GRU over a sequence, then dropout and a linear readout of its final state.

    (B, T, input_size) -> (B, output_size).  The final state is the top layer's ``h_n``
    (both directions concatenated when bidirectional); ``dropout`` applies between GRU
    layers and before the readout.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, *,
                 num_layers: int = 1, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: DTypeLike = np.float32, seed: Any = None,
                 precision: str = "fp32") -> None:
        self._gru_and_readout(input_size, hidden_size, output_size, num_layers, dropout,
                              bidirectional, dtype, seed, precision)

    def features(self, X: ArrayLike, training: bool = True,
                 lengths: Optional[ArrayLike] = None) -> np.ndarray:
        """The readout's input: the final state, (B, D*H) (with ``lengths``, each
        sequence's state at its last valid step; the reverse direction starts there)."""
        _, h_n = self.gru.forward(X, lengths=lengths, training=training)
        D = self.gru.num_directions
        return np.concatenate(list(h_n[-D:]), axis=1) if D > 1 else h_n[-1]

    def forward(self, X: ArrayLike, training: bool = True,
                lengths: Optional[ArrayLike] = None) -> np.ndarray:
        return self.head.forward(self.features(X, training, lengths), training=training)

    def backward(self, dout: ArrayLike) -> None:
        # Only the final state feeds the readout: the outputs' gradient is zero (dy=None).
        self.gru.backward(None, self._state_gradient(self.head.backward(dout)))

    def _state_gradient(self, dfeat):
        """dh_n (L*D, B, H) from the readout's input gradient (B, D*H)."""
        g = self.gru
        B, H, D = dfeat.shape[0], g.hidden_size, g.num_directions
        dh_n = np.zeros((g.num_layers * D, B, H), self.dtype)
        dh_n[-D:] = dfeat.reshape(B, D, H).transpose(1, 0, 2)
        return dh_n

    def gru_gradients(self, X: ArrayLike, output_gradient: Callable[[np.ndarray], Any]
                      ) -> Tuple[Any, Optional[np.ndarray], Optional[np.ndarray]]:
        """A training forward of ``X``, then backward through the readout only.

        ``output_gradient(out)`` gives dLoss/d(network output).  Returns ``(x, dy,
        dh_n)``: the GRU's input sequence (here ``X``), the gradient reaching its outputs
        (None: the readout reads only the final state) and the one reaching its final
        state (L*D, B, H).
        """
        out = self.forward(X, training=True)
        return X, None, self._state_gradient(self.head.backward(output_gradient(out)))


class SequenceNet(_Net):
    """GRU over a sequence, then dropout and a linear readout at every step.

    (B, T, input_size) -> (B, T, output_size); with ``last_steps=n`` only the last n
    steps are read out, (B, n, output_size) (a forecaster's future steps).  With
    ``lengths`` the outputs past each sequence's end are the readout of the GRU's zero
    output there (the loss must weigh them 0; they receive no gradient then).
    """

    def __init__(self, input_size, hidden_size, output_size, *, num_layers=1, dropout=0.0,
                 bidirectional=False, last_steps=None, dtype=np.float32, seed=None,
                 precision="fp32"):
        self.last_steps = None if last_steps is None else int(last_steps)
        self._gru_and_readout(input_size, hidden_size, output_size, num_layers, dropout,
                              bidirectional, dtype, seed, precision,
                              last_steps=self.last_steps)
        self._y_shape = None

    def _read(self, y):
        if self.last_steps is None:
            return y
        if y.shape[1] < self.last_steps:
            raise ValueError(f"X needs at least last_steps={self.last_steps} steps, got "
                             f"{y.shape[1]}")
        return y[:, y.shape[1] - self.last_steps:]

    def forward(self, X, training=True, lengths=None):
        y, _ = self.gru.forward(X, lengths=lengths, training=training)
        self._y_shape = y.shape
        return self.head.forward(self._read(y), training=training)

    def backward(self, dout):
        self.gru.backward(self._output_gradient(self.head.backward(dout)))

    def _output_gradient(self, dread):
        if self.last_steps is None:
            return dread
        dy = np.zeros(self._y_shape, self.dtype)
        dy[:, dy.shape[1] - self.last_steps:] = dread
        return dy

    def gru_gradients(self, X, output_gradient):
        """A forward of ``X``, then backward through the readout only.

        Returns ``(x, dy, dh_n)``: ``X``, the gradient reaching the GRU's outputs
        (B, T, D*H) and the one reaching its final state (None: nothing reads it).
        """
        y, _ = self.gru.forward(X, training=False)
        self._y_shape = y.shape
        out = self.head.forward(self._read(y), training=True)
        return X, self._output_gradient(self.head.backward(output_gradient(out))), None


class CharNet(_Net):
    """Embedding -> GRU (state carried across chunks) -> dropout -> linear, per step.

    Integer codes (B, t) -> logits (B, t, vocab_size).  :meth:`reset_state` starts
    ``n_streams`` fresh streams; :meth:`forward` continues the streams ``rows``.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, *,
                 num_layers: int = 1, dropout: float = 0.0, dtype: DTypeLike = np.float32,
                 seed: Any = None, precision: str = "fp32") -> None:
        seeds = _rng(seed).integers(2**63, size=4)
        self.dtype = check_dtype(dtype)
        self.embedding = Embedding(vocab_size, embedding_dim, dtype=dtype, seed=seeds[0])
        self.gru = GRU(embedding_dim, hidden_size, num_layers, batch_first=True,
                       dropout=dropout, dtype=dtype, seed=seeds[1], precision=precision)
        self.head = Sequential(Dropout(dropout, seed=seeds[2]),
                               Linear(hidden_size, vocab_size, dtype=dtype, seed=seeds[3]))
        g = self.gru
        self.config = dict(vocab_size=self.embedding.num_embeddings,
                           embedding_dim=g.input_size, hidden_size=g.hidden_size,
                           num_layers=g.num_layers, dropout=g.dropout, dtype=self.dtype.name)
        _record_precision(self.config, g)
        self._adopt(embedding=self.embedding, gru=self.gru, head=self.head)
        self.tbptt = TruncatedBPTT(self.gru, 1)

    def reset_state(self, n_streams: int) -> None:
        if self.tbptt.n_streams != n_streams:
            self.tbptt = TruncatedBPTT(self.gru, n_streams)
        self.tbptt.reset()

    def forward(self, codes: ArrayLike, rows: Optional[ArrayLike] = None,
                training: bool = True) -> np.ndarray:
        emb = self.embedding.forward(codes, training=training)
        y = self.tbptt.forward(emb, rows, training=training)
        return self.head.forward(y, training=training)

    def backward(self, dlogits: ArrayLike) -> None:
        dy = self.head.backward(dlogits)
        self.embedding.backward(self.tbptt.backward(dy))

    def gru_gradients(self, codes: ArrayLike, output_gradient: Callable[[np.ndarray], Any]
                      ) -> Tuple[Any, Optional[np.ndarray], Optional[np.ndarray]]:
        """``codes`` (B, t) read as one chunk from the zero state, then backward through
        the readout only.

        ``output_gradient(logits)`` gives dLoss/d(logits).  Returns ``(x, dy, dh_n)``:
        the GRU's input sequence (the embeddings), the gradient reaching its outputs
        (B, t, H) and the one reaching its final state (None: nothing reads it).
        """
        emb = self.embedding.forward(codes, training=False)
        y, _ = self.gru.forward(emb, training=False)
        logits = self.head.forward(y, training=True)
        return emb, self.head.backward(output_gradient(logits)), None



def net_from_config(**config):
    """The network a saved model rebuilds from its ``config``: a :class:`SequenceNet`
    (its config names ``last_steps``) or a :class:`ReadoutNet`."""
    return SequenceNet(**config) if "last_steps" in config else ReadoutNet(**config)
