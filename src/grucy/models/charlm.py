"""A character-level language model: :class:`CharLM`, trained with truncated BPTT."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Tuple

import numpy as np

from .._params import run_waiting
from .._validation import _positive_int, _real, _rng
from ..io import PathLike, register
from ..losses import cross_entropy_loss
from ..nn import TruncatedBPTT
from ..training import StreamTask
from .base import GRUModel, _check_fraction
from .nets import CharNet

__all__ = ["CharLM"]


@register(kind="grucy.CharLM")
@dataclass(eq=False, repr=False, kw_only=True)
class CharLM(GRUModel):
    """Character-level GRU language model trained with truncated BPTT.

    The training text is cut into ``batch_size`` parallel streams; every step trains on
    the next ``bptt`` characters of all streams, starting from the state the previous
    chunk ended in.  The last ``validation_fraction`` of the text is held out and its
    bits per character are reported after each epoch.

    Parameters
    ----------
    hidden_size, num_layers : int, default 256, 1
    embedding_dim : int, default 32
    dropout : float, default 0
    bptt : int, default 64
        Characters per truncated-BPTT chunk.
    batch_size : int, default 32
        Parallel streams.
    epochs, lr : default 4, 3e-3
    optimizer, weight_decay, schedule, max_grad_norm, patience, dtype, precision,
    random_state, verbose
        As in :class:`Forecaster`.
    validation_fraction : float, default 0.1

    Attributes
    ----------
    vocab_ : str
        The characters of the training text, sorted; other characters map to one
        "unknown" symbol.
    history_ : dict of lists
        Per-epoch ``loss`` (nats per character), ``lr``, ``val_loss`` and
        ``val_bits_per_char``.
    """

    hidden_size: int = 256
    embedding_dim: int = 32
    bptt: int = 64
    epochs: int = 4
    lr: float = 3e-3
    validation_fraction: float = 0.1

    input_kind: ClassVar[str] = "text"
    _net_class: ClassVar[Any] = CharNet

    def _after_load(self):
        if not isinstance(self.vocab_, str) or len(set(self.vocab_)) != len(self.vocab_):
            raise ValueError("fitted vocab_ must be a string of distinct characters")
        self._set_vocab(self.vocab_)

    def _check_fitted_state(self):
        if self.net_.config["vocab_size"] != len(self.vocab_) + 1:
            raise ValueError(f"the network has {self.net_.config['vocab_size']} symbols, "
                             f"vocab_ {len(self.vocab_)} (+1, unknown)")

    def _set_vocab(self, vocab):
        self.vocab_ = vocab
        self._lookup = {c: i for i, c in enumerate(vocab)}
        self._unknown = len(vocab)

    def encode(self, text: str) -> np.ndarray:
        """Character codes of ``text`` (int64); unseen characters get the unknown code."""
        self._check_is_fitted()
        return self._encode(text)

    def _encode(self, text):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        get, unk = self._lookup.get, self._unknown
        return np.fromiter((get(c, unk) for c in text), dtype=np.int64, count=len(text))

    def fit(self, text: str, *, checkpoint: Optional[PathLike] = None, checkpoint_every: int = 1, resume: Optional[PathLike] = None,
            distributed: Any = "auto") -> "CharLM":
        """Train on ``text``; returns self.

        Parameters
        ----------
        text : str
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        frac = _check_fraction("validation_fraction", self.validation_fraction)
        streams = _positive_int("batch_size", self.batch_size)
        bptt = _positive_int("bptt", self.bptt)
        n_val = int(len(text) * frac)
        train_text = text[:len(text) - n_val]
        if len(train_text) < 2 * streams:
            raise ValueError(f"text is too short: {len(train_text)} training characters "
                             f"for batch_size={streams} streams (need >= {2 * streams})")
        self._set_vocab("".join(sorted(set(train_text))))
        dtype = self._dtype()
        codes = self._encode(text)
        train_streams = TruncatedBPTT.split_streams(codes[:len(train_text)], streams)
        val_streams = None
        if n_val >= 2:
            n_val_streams = max(1, min(streams, n_val // max(bptt, 2)))
            val_streams = TruncatedBPTT.split_streams(codes[len(train_text):],
                                                      n_val_streams)
        seed = self._seed_for_fit(self.random_state, resume, distributed)
        rng = np.random.default_rng(seed)
        self.net_ = CharNet(len(self.vocab_) + 1,
                            _positive_int("embedding_dim", self.embedding_dim),
                            _positive_int("hidden_size", self.hidden_size),
                            num_layers=_positive_int("num_layers", self.num_layers),
                            dropout=self.dropout, dtype=dtype,
                            seed=int(rng.integers(2**63)), precision=self.precision)
        task = StreamTask(self.net_, train_streams, val_streams, cross_entropy_loss, bptt)
        self._run(task, seed, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  resume=resume, distributed=distributed)
        return self

    def bits_per_char(self, text: str, *, chunk: int = 1024) -> float:
        """Average bits per character of ``text`` under the model, read as one stream.

        The first character is predicted from the zero state; every later one from all
        characters before it.
        """
        codes = self.encode(text)
        if len(codes) < 2:
            raise ValueError("text needs at least 2 characters")
        chunk = _positive_int("chunk", chunk)
        net = self.net_

        def read():  # one stream through the network's state: one thread at a time
            net.reset_state(1)
            total = 0.0
            for s in TruncatedBPTT.chunk_slices(len(codes) - 1, chunk):
                logits = net.forward(codes[None, s], None, training=False)
                loss, _ = cross_entropy_loss(logits, codes[None, s.start + 1:s.stop + 1],
                                             normalizer=1.0)
                total += loss
            return total
        return run_waiting(net, read) / (len(codes) - 1) / math.log(2)

    def generate(self, prompt: str = "\n", n: int = 200, temperature: float = 1.0,
                 random_state: Any = None) -> str:
        """Continue ``prompt`` by ``n`` sampled characters; returns only the new ones.

        ``temperature`` scales the logits (lower: more conservative; 0: always the most
        probable character).  ``random_state`` seeds the sampling.
        """
        self._check_is_fitted()
        n = _positive_int("n", n)
        temperature = _real("temperature", temperature)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
        rng = _rng(random_state, "random_state")
        # one stream through the network's state: another thread's generate or
        # bits_per_char in between would reset it, so threads take turns
        return run_waiting(self.net_, self._generate, prompt, n, temperature, rng)

    def _generate(self, prompt, n, temperature, rng):
        net = self.net_
        net.reset_state(1)
        codes = self.encode(prompt)
        logits = net.forward(codes[None], None, training=False)[0, -1]
        # then one character at a time on a stream from the prompt's state: a
        # forward per character checked and packed the weights every time (5.8x
        # slower at 256 units, 7.2x at 2 x 512); the stream's steps are the forward's
        # numbers
        stream = net.gru.stream(1, net.tbptt.state)
        out = []
        V = len(self.vocab_)
        for _ in range(n):
            z = logits[:V].astype(np.float64)  # never emit the unknown symbol
            if temperature == 0:
                c = int(np.argmax(z))
            else:
                # shifted before the division: a tiny temperature (1e-310) made z / t
                # overflow to inf, and inf - inf is NaN; now the others go to -inf
                with np.errstate(over="ignore"):
                    p = np.exp((z - z.max()) / temperature)
                c = int(rng.choice(V, p=p / p.sum()))
            out.append(self.vocab_[c])
            x = net.embedding.forward(np.array([c]), training=False)
            logits = net.head.forward(stream.step(x), training=False)[0]
        return "".join(out)

    def network_inputs(self, x: str, y: None = None) -> Tuple[np.ndarray, Callable]:
        """See :meth:`GRUModel.network_inputs`.

        ``x``: a text, read as one stream from the zero state; the loss is the training
        loss, the mean cross-entropy of predicting each next character of ``x`` (so
        ``y`` must be None).  ``inputs`` are the character codes but the last.
        """
        if y is not None:
            raise ValueError("a CharLM's loss is predicting the next characters of x; "
                             "pass y=None")
        codes = self.encode(x)
        if len(codes) < 2:
            raise ValueError("text needs at least 2 characters")
        targets = codes[None, 1:]
        return codes[None, :-1], lambda logits: cross_entropy_loss(logits, targets)[1]

