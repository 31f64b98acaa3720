"""Sequence classification and regression: :class:`GRUClassifier` and
:class:`GRURegressor`, scikit-learn estimators on sequences.

``X`` is an array (n, T) or (n, T, F), the same padded array with ``lengths=`` (n,), or
a list of arrays (T_i,) or (T_i, F) of different lengths; the padding is never read
(the GRU's packed-sequence semantics).  With ``return_sequences=True`` there is a target
per step (sequence tagging, per-step regression), in the structure of ``X``.

scikit-learn is optional: the estimators implement ``get_params`` / ``set_params`` and
scikit-learn's tags themselves, so they work in ``Pipeline`` and ``GridSearchCV`` without
grucy importing scikit-learn.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .._params import run_waiting
from .._validation import (_as_real_array, _flag, _positive_int, check_finite,
                           check_result, first_missing)
from ..io import PathLike, register
from ..losses import LOSSES, cross_entropy_loss
from ..training import Packed, SequenceTask
from ._inputs import (SequenceInput, _finite_total, per_step_values, read_sequences,
                      restructure, sample_weights)
from ._series import is_pandas
from .base import (GRUModel, _check_fraction, _check_output, _fitted_array,
                   _fitted_check, _fitted_int, _mean_output_gradient, _standardization,
                   _validation_split)
from .nets import ReadoutNet, SequenceNet, net_from_config

__all__ = ["GRUClassifier", "GRURegressor"]

#: sequences per forward when predicting (sorted by length, each batch padded to its own
#: longest sequence)
_PREDICT_BATCH = 1024


@dataclass(eq=False, repr=False, kw_only=True)
class _SequenceEstimator(GRUModel):
    """What GRUClassifier and GRURegressor share: input checks, scaling, the network."""

    bidirectional: bool = False
    return_sequences: bool = False

    input_kind: ClassVar[str] = "sequences"
    _fitted_private: ClassVar[Tuple[str, ...]] = ("_input_ndim",)
    _net_class: ClassVar[Any] = staticmethod(net_from_config)

    def __sklearn_tags__(self):
        from sklearn.utils import (ClassifierTags, InputTags, RegressorTags, Tags,
                                   TargetTags)

        clf = self._estimator_type == "classifier"
        return Tags(
            estimator_type=self._estimator_type,
            target_tags=TargetTags(required=True, multi_output=not clf,
                                   single_output=True),
            classifier_tags=ClassifierTags() if clf else None,
            regressor_tags=None if clf else RegressorTags(),
            input_tags=InputTags(two_d_array=True, three_d_array=True),
        )

    # -- input ------------------------------------------------------------------------
    def _read_X(self, X, lengths, *, fitting) -> SequenceInput:
        """X as packed float64 steps; sets (fit) or checks (predict) the features."""
        name = type(self).__name__
        columns = _column_names(X)
        seqs = read_sequences(X, lengths, owner=name)
        F = seqs.n_features
        if fitting:
            self._input_ndim = seqs.array_ndim if seqs.form != "list" else 3
            self.n_features_in_ = seqs.width if self._input_ndim == 2 else F
            self.n_steps_ = int(seqs.lengths.max())
            if columns is not None:  # scikit-learn's convention for a DataFrame's names
                self.feature_names_in_ = columns
            else:
                self.__dict__.pop("feature_names_in_", None)
            return seqs
        fitted = getattr(self, "feature_names_in_", None)
        if (fitted is not None and columns is not None
                and not np.array_equal(columns, fitted)):
            # (as scikit-learn says it; taken by position, a reordered frame's columns
            # were read as other steps, silently: accuracy 0.975 fell to 0.475)
            unseen = [c for c in columns if c not in set(fitted)]
            missing = [c for c in fitted if c not in set(columns)]
            raise ValueError(
                "The feature names should match those that were passed during fit."
                + (f" Feature names unseen at fit time: {unseen[:5]}." if unseen else "")
                + (f" Feature names seen at fit time, yet now missing: {missing[:5]}."
                   if missing else "")
                + ("" if unseen or missing else
                   " The same names in another order: reorder X's columns as at fit."))
        if (seqs.form == "array" and seqs.array_ndim == 2 and self._input_ndim == 2
                and seqs.width != self.n_features_in_):
            raise ValueError(f"X has {seqs.width} features, but {name} is expecting "
                             f"{self.n_features_in_} features as input")
        expected_F = 1 if self._input_ndim == 2 else self.n_features_in_
        if F != expected_F:
            raise ValueError(f"X has {F} features per step, but {name} is expecting "
                             f"{expected_F} features per step as input")
        return seqs

    def _check_fitted_state(self):
        """What ``fit`` makes (see GRUModel._check_fitted_state): the input's shape, the
        standardisation of X per feature, and a network that reads those features and
        is the one ``return_sequences`` asks for (a readout of the final state, or one
        at every step)."""
        _fitted_check(self._input_ndim in (2, 3), f"fitted _input_ndim is "
                                                  f"{self._input_ndim!r}")
        n_in, _ = _fitted_int(self, "n_features_in_"), _fitted_int(self, "n_steps_")
        F = 1 if self._input_ndim == 2 else n_in
        _fitted_array(self, "x_mean_", (F,))
        _fitted_check(np.all(_fitted_array(self, "x_scale_", (F,)) > 0),
                      "fitted x_scale_ must be positive")
        net = self.net_.config
        _fitted_check(net["input_size"] == F,
                      f"the network reads {net['input_size']} features per step, the "
                      f"fitted X has {F}")
        per_step = self._per_step()
        _fitted_check(isinstance(self.net_, SequenceNet) == per_step
                      and net.get("last_steps") is None,
                      f"the network ({type(self.net_).__name__}, last_steps="
                      f"{net.get('last_steps')!r}) is not what return_sequences="
                      f"{per_step} makes")

    def _check_y_present(self, n, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                             f"target y is None")
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != n:
            raise ValueError(f"X and y must have the same number of samples, got "
                             f"{n} and {0 if y.ndim == 0 else len(y)}")
        return y

    def _per_step(self):
        return _flag("return_sequences", self.return_sequences)

    @staticmethod
    def _keep_weighted(seqs, w, *targets):
        """Drop the sequences of weight 0 (as if they were not given); per-step targets
        (packed like seqs) and per-sequence targets are cut alike."""
        if w is None or len(w) != seqs.n or np.all(w > 0):
            return seqs, w, targets
        keep = np.flatnonzero(w > 0)
        rows = seqs.packed.rows(keep)
        lengths = seqs.lengths[keep]
        packed = Packed(seqs.packed.values[rows], np.concatenate([[0], np.cumsum(lengths)]))
        per_step = len(seqs.packed.values)
        cut = [t[rows] if len(t) == per_step and len(t) != seqs.n else t[keep]
               for t in targets]
        # (an array stays an array: the sequences kept have the full length still)
        return (SequenceInput(packed, seqs.form, seqs.array_ndim, seqs.width), w[keep],
                tuple(cut))

    @staticmethod
    def _step_weights(seqs, w):
        """Weights of the packed steps: per-sequence weights repeated, or as given."""
        if w is None:
            return None
        return np.repeat(w, seqs.lengths) if len(w) == seqs.n else w

    def _scaled(self, values):
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = ((values - self.x_mean_) / self.x_scale_).astype(self.net_.dtype)
        check_result("X standardised (with x_mean_ and x_scale_)", scaled)
        return scaled

    def _task_inputs(self, seqs):
        """What the training task reads: a plain array when every sequence has the full
        length and the readout is of the final state (the fixed-length path), else
        packed steps."""
        values = self._scaled(seqs.packed.values)
        if seqs.form == "array" and not self._per_step():
            return values.reshape(seqs.n, seqs.width, -1)
        return Packed(values, seqs.packed.offsets)

    def _fit_network(self, seqs, Y, w, output_size, loss, metrics, *, sample_w,
                     checkpoint, checkpoint_every, resume, distributed):
        """Standardise X (weighted by ``sample_w``), build ``net_`` and train it on
        targets ``Y`` (per step: packed like X) with loss-term weights ``w``."""
        frac = _check_fraction("validation_fraction", self.validation_fraction)
        # (the standardised values are made and checked by _scaled, in the net's dtype)
        self.x_mean_, self.x_scale_, _ = _standardization(
            "X", seqs.packed.values, 0, self._step_weights(seqs, sample_w))
        dtype = self._dtype()
        seed = self._seed_for_fit(self.random_state, resume, distributed)
        rng = np.random.default_rng(seed)
        train_idx, val_idx = _validation_split(seqs.n, frac, rng)
        per_step = self._per_step()
        Net = SequenceNet if per_step else ReadoutNet
        self.net_ = Net(seqs.n_features, _positive_int("hidden_size", self.hidden_size),
                        output_size, num_layers=_positive_int("num_layers", self.num_layers),
                        dropout=self.dropout,
                        bidirectional=_flag("bidirectional", self.bidirectional),
                        dtype=dtype, seed=int(rng.integers(2**63)),
                        precision=self.precision)
        if per_step:
            Y = Packed(Y, seqs.packed.offsets)
            if w is not None:
                w = Packed(self._step_weights(seqs, w), seqs.packed.offsets)
        task = SequenceTask(self.net_, self._task_inputs(seqs), Y, loss, train_idx,
                            val_idx, metrics=metrics, weight=w)
        self._run(task, seed, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  resume=resume, distributed=distributed)

    def _outputs(self, X, lengths=None):
        """Network outputs as float64: (n, output_size), or with ``return_sequences``
        (N, output_size) for the packed valid steps; and the SequenceInput."""
        self._check_is_fitted()
        seqs = self._read_X(X, lengths, fitting=False)
        values = self._scaled(seqs.packed.values)
        per_step = isinstance(self.net_, SequenceNet)
        if seqs.form == "array" and not per_step:
            X3 = values.reshape(seqs.n, seqs.width, -1)
            out = [run_waiting(self.net_, self.net_.forward, X3[i:i + 4096],
                               training=False) for i in range(0, seqs.n, 4096)]
            return np.concatenate(out).astype(np.float64), seqs
        packed = Packed(values, seqs.packed.offsets)
        order = np.argsort(seqs.lengths, kind="stable")  # similar lengths share a batch
        C = self.net_.head[1].out_features
        result = np.empty((len(values) if per_step else seqs.n, C))
        for start in range(0, seqs.n, _PREDICT_BATCH):
            idx = order[start:start + _PREDICT_BATCH]
            batch, lens = packed.padded(idx)
            # (threads sharing the model take turns: a layer serves one at a time)
            out = run_waiting(self.net_, self.net_.forward, batch, training=False,
                              lengths=lens)
            if per_step:
                mask = np.arange(batch.shape[1])[None, :] < lens[:, None]
                result[packed.rows(idx)] = out[mask]
            else:
                result[idx] = out
        return result, seqs

    def network_inputs(self, x: ArrayLike,
                       y: Optional[ArrayLike] = None) -> Tuple[np.ndarray, Callable]:
        """See :meth:`GRUModel.network_inputs`.

        ``x``: sequences of one length as :meth:`predict` takes them; ``y``: their labels
        (GRUClassifier, cross-entropy) or targets (GRURegressor, its loss on standardised
        targets), per step with ``return_sequences``.
        """
        self._check_is_fitted()
        seqs = self._read_X(x, None, fitting=False)
        if np.any(seqs.lengths != seqs.width):
            raise ValueError("network_inputs needs sequences of one length")
        with np.errstate(over="ignore", invalid="ignore"):
            X = (seqs.packed.values - self.x_mean_) / self.x_scale_
        check_result("X standardised (with x_mean_ and x_scale_)", X)
        X = np.ascontiguousarray(X.reshape(seqs.n, seqs.width, -1), dtype=np.float64)
        if y is None:
            return X, _mean_output_gradient
        return X, lambda out: self._loss_gradient(out, np.asarray(y))

    def _loss_gradient(self, out, y):  # pragma: no cover - each estimator has its own
        raise NotImplementedError


@register(kind="grucy.GRUClassifier")
@dataclass(eq=False, repr=False, kw_only=True)
class GRUClassifier(_SequenceEstimator):
    """Sequence classifier: a GRU reads each sequence, a linear readout of its final
    state gives the class scores (softmax cross-entropy); with
    ``return_sequences=True``, a readout at every step gives a label per step (sequence
    tagging).

    A scikit-learn estimator (``fit``, ``predict``, ``predict_proba``, ``score``,
    ``get_params`` / ``set_params``); scikit-learn itself is optional.

    Parameters
    ----------
    hidden_size, num_layers : int, default 32, 1
    bidirectional : bool, default False
        Read both directions; the readout sees both final states (or both outputs of
        each step).
    return_sequences : bool, default False
        A label per step: ``y`` holds one label per valid step (a list of (T_i,) arrays,
        or (n, T) padded like X); the loss is summed over the valid steps (divided by
        their total weight); ``predict`` returns labels in the structure of ``X``.
    class_weight : None, "balanced" or dict, default None
        Weights of the classes, multiplying ``sample_weight``: "balanced" weighs class c
        by ``n / (n_classes * count(c))`` (counts of the labels fitted on, per step with
        ``return_sequences``), a dict maps labels to weights (1 for labels not in it).
    dropout : float, default 0
    epochs, batch_size, lr : default 60, 32, 1e-2
    optimizer, weight_decay, schedule, max_grad_norm
        As in :class:`Forecaster`.
    validation_fraction : float, default 0
        Random share of the training sequences held out for validation; its loss and
        accuracy are in ``history_`` and early stopping watches its loss.  Both are
        weighted as the training loss is (``sample_weight`` times ``class_weight``):
        with ``class_weight="balanced"`` the accuracy is close to the balanced
        accuracy (the weights come from all the training labels), not what
        :meth:`score` reports.
    patience : int or None, default None
        Early stopping: stop after ``patience`` epochs without improvement of the
        validation loss (the training loss without validation data), restoring the best
        weights.  None trains all ``epochs``.
    dtype : {"float32", "float64"}, default "float32"
    precision : {"fp32", "bf16"}, default "fp32"
        As in :class:`Forecaster`.
    random_state : int, Generator or None
    verbose : int, default 0

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted.
    class_weight_ : ndarray (n_classes,)
        The weight of each class (ones without ``class_weight``).
    n_features_in_ : int
        Columns of a 2-D X (its steps), or features per step otherwise.
    n_steps_ : int
        The longest sequence seen in ``fit``.
    history_ : dict of lists
        Per-epoch ``loss``, ``lr``, ``val_loss`` and ``val_accuracy``.

    Notes
    -----
    X is (n_samples, n_steps) for univariate sequences, (n_samples, n_steps,
    n_features), either padded with ``lengths=``, or a list of arrays of different
    lengths.  Each feature is standardised with its (weighted) mean and standard
    deviation over the valid steps of the training sequences.  With a 2-D X without
    lengths the number of steps is fixed (it is scikit-learn's number of features); a
    3-D X, ``lengths=`` or a list predict on any lengths.  A sequence's result depends
    on its own steps only: not on its padding, its position or its neighbours.
    ``sample_weight`` 0 drops a sequence, as if it was not given.
    """

    _estimator_type: ClassVar[Optional[str]] = "classifier"

    class_weight: Any = None

    def fit(self, X: Any, y: Any, sample_weight: Optional[ArrayLike] = None, *,
            lengths: Optional[ArrayLike] = None, checkpoint: Optional[PathLike] = None,
            checkpoint_every: int = 1, resume: Optional[PathLike] = None,
            distributed: Any = "auto") -> "GRUClassifier":
        """Train on sequences ``X`` with labels ``y``; returns self.

        Parameters
        ----------
        X : array (n, T) / (n, T, F), padded with ``lengths``, or list of arrays
        y : array_like (n_samples,), or per step with ``return_sequences``
            Labels of any sortable type (at least two distinct among the weighted ones).
        sample_weight : array_like (n_samples,), optional
            Weight of each sequence (with ``return_sequences`` also one per step, as y).
        lengths : array_like of int (n_samples,), optional
            Valid steps of each row of a padded X.
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        seqs = self._read_X(X, lengths, fitting=True)
        per_step = self._per_step()
        if per_step:
            if y is None:
                self._check_y_present(seqs.n, y)
            labels, _ = per_step_values("y", y, seqs, numeric=False)
            if labels.ndim != 1:
                raise ValueError(f"y must hold one label per step, got {labels.shape[1:]} "
                                 f"values per step")
        else:
            labels = self._labels_1d(self._check_y_present(seqs.n, y))
        w = sample_weights(sample_weight, seqs, seqs.n, per_step=per_step)
        seqs, w, (labels,) = self._keep_weighted(seqs, w, labels)
        w = None if w is None or np.all(w == 1.0) else w
        if labels.dtype.kind == "O":  # (np.unique would keep NaN as classes, unsorted)
            _check_no_missing_label(labels)
        if labels.dtype.kind == "f":
            check_finite("y", labels, hint="every sample needs a class label")
            if np.any(labels != np.round(labels)):
                raise ValueError("Unknown label type: continuous. GRUClassifier needs "
                                 "discrete class labels; use GRURegressor for continuous "
                                 "targets.")
        counted = labels if w is None or len(w) != len(labels) else labels[w > 0]
        try:
            classes = np.unique(counted)
        except TypeError:  # classes_ are sorted: labels that do not compare cannot be
            kinds = sorted({type(v).__name__ for v in counted.ravel().tolist()})
            raise TypeError(f"y mixes labels of types {kinds}; class labels must be of "
                            f"one comparable kind (all strings or all numbers, no None)"
                            ) from None
        if len(classes) < 2:
            raise ValueError(f"GRUClassifier needs samples of at least 2 classes; got 1 "
                             f"class ({classes[0]!r})")
        self.classes_ = classes
        y_enc = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
        if w is not None and len(w) == len(labels):  # per-step weights: unknown labels
            y_enc = np.where(classes[y_enc] == labels, y_enc, 0)  # only where w == 0
        self.class_weight_ = self._class_weights(classes, np.searchsorted(classes,
                                                                          counted))
        term_w = self._combined_weights(seqs, w, y_enc, per_step)

        def accuracy(out, target, wt, _):
            return float(np.sum(wt * (np.argmax(out, axis=-1) == target))), float(wt.sum())

        self._fit_network(seqs, y_enc.astype(np.int64), term_w, len(classes),
                          cross_entropy_loss, {"accuracy": accuracy}, sample_w=w,
                          checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                          resume=resume, distributed=distributed)
        return self

    def _labels_1d(self, labels):
        if labels.ndim == 2 and labels.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. "
                          "Please change the shape of y to (n_samples,), for example "
                          "using ravel().", _sklearn_warning("DataConversionWarning"),
                          stacklevel=3)
            labels = labels.ravel()
        if labels.ndim != 1:
            raise ValueError(f"y should be a 1d array of labels, got shape {labels.shape} "
                             f"(one label per step needs return_sequences=True)")
        return labels

    def _class_weights(self, classes, counted_enc):
        cw = self.class_weight
        if cw is None:
            return np.ones(len(classes))
        if isinstance(cw, str):
            if cw != "balanced":
                raise ValueError(f"class_weight must be None, 'balanced' or a dict of "
                                 f"label -> weight, got {cw!r}")
            counts = np.bincount(counted_enc, minlength=len(classes)).astype(np.float64)
            return len(counted_enc) / (len(classes) * counts)
        if not isinstance(cw, dict):
            raise TypeError(f"class_weight must be None, 'balanced' or a dict of label -> "
                            f"weight, got {type(cw).__name__}")
        unknown = [k for k in cw if not np.any(classes == k)]
        if unknown:
            raise ValueError(f"class_weight names labels that are not among the classes of "
                             f"y {classes.tolist()}: {unknown}")
        out = np.ones(len(classes))
        for k, v in cw.items():
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) \
                    or not np.isfinite(v) or v < 0:
                raise ValueError(f"class_weight[{k!r}] must be a finite number >= 0, got "
                                 f"{v!r}")
            out[np.flatnonzero(classes == k)[0]] = float(v)
        return out

    def _combined_weights(self, seqs, w, y_enc, per_step):
        """sample_weight times class weight per loss term; None when all are 1 (the
        unweighted loss, bit for bit)."""
        cw = self.class_weight_[y_enc]
        if per_step:
            w = self._step_weights(seqs, w)
        if w is None:
            term = cw
        else:
            with np.errstate(over="ignore", under="ignore"):
                term = w * cw
            if not np.all(np.isfinite(term)) or np.any((term == 0) & (w > 0) & (cw > 0)):
                # (1e200 x 1e200 overflowed, 1e-200 x 1e-200 vanished: only ratios matter)
                term = (w / w.max()) * (cw / cw.max())
        term = _finite_total(term)
        return None if np.all(term == 1.0) else term

    def _check_fitted_state(self):
        super()._check_fitted_state()
        classes, C = self.classes_, self.net_.config["output_size"]
        _fitted_check(isinstance(classes, np.ndarray) and classes.ndim == 1
                      and len(classes) == C >= 2,
                      f"fitted classes_ must be the {C} labels the network scores")
        # sorted and distinct, as np.unique made them (predict's labels, score and the
        # gradients of diagnostics look labels up by bisection)
        _fitted_check(bool(np.all(classes[1:] > classes[:-1])),
                      "fitted classes_ must be sorted and distinct")
        cw = _fitted_array(self, "class_weight_", (C,))
        _fitted_check(bool(np.all(cw >= 0)), "fitted class_weight_ must be >= 0")

    def predict_proba(self, X: Any, *, lengths: Optional[ArrayLike] = None) -> Any:
        """Class probabilities, (n_samples, n_classes), columns in ``classes_`` order;
        with ``return_sequences`` per step, in the structure of X (NaN past each end of
        a padded X)."""
        out, seqs = self._outputs(X, lengths)
        out -= out.max(axis=1, keepdims=True)
        p = np.exp(out)
        p /= p.sum(axis=1, keepdims=True)
        return self._structured(p, seqs, np.nan)

    def predict_log_proba(self, X: Any, *, lengths: Optional[ArrayLike] = None) -> Any:
        """Log of :meth:`predict_proba`, computed stably."""
        out, seqs = self._outputs(X, lengths)
        out -= out.max(axis=1, keepdims=True)
        return self._structured(out - np.log(np.exp(out).sum(axis=1, keepdims=True)),
                                seqs, np.nan)

    def predict(self, X: Any, *, lengths: Optional[ArrayLike] = None) -> Any:
        """The most probable label of each sequence; with ``return_sequences`` of each
        step, in the structure of X (past each end of a padded X: -1, or "" for string
        labels ("<pad>" when "" is a class), or None; never a class)."""
        out, seqs = self._outputs(X, lengths)
        return self._structured(self.classes_[np.argmax(out, axis=1)], seqs,
                                _label_padding(self.classes_))

    def _structured(self, values, seqs, fill):
        if not isinstance(self.net_, SequenceNet):
            return values
        return restructure(values, seqs, fill)

    def score(self, X: Any, y: Any, sample_weight: Optional[ArrayLike] = None, *,
              lengths: Optional[ArrayLike] = None) -> float:
        """Mean accuracy of :meth:`predict` on (X, y) (optionally weighted); per step
        with ``return_sequences`` (over the valid steps)."""
        out, seqs = self._outputs(X, lengths)
        pred = self.classes_[np.argmax(out, axis=1)]
        if isinstance(self.net_, SequenceNet):
            labels, _ = per_step_values("y", y, seqs, numeric=False)
            w = sample_weights(sample_weight, seqs, seqs.n, per_step=True)
            w = self._step_weights(seqs, w)
        else:
            labels = self._check_y_present(len(pred), y).reshape(len(pred), -1)
            if labels.shape[1] != 1:
                raise ValueError(f"y should be a 1d array of labels, got shape "
                                 f"{np.shape(y)}")
            labels = labels[:, 0]
            w = sample_weights(sample_weight, None, len(pred))
        _check_label_kind(labels, self.classes_)
        return float(np.average(pred == labels, weights=w))

    def _loss_gradient(self, out, y):
        idx = np.searchsorted(self.classes_, y.reshape(-1))
        if np.any(idx >= len(self.classes_)) or np.any(self.classes_[
                np.minimum(idx, len(self.classes_) - 1)] != y.reshape(-1)):
            raise ValueError("y holds labels the classifier was not trained on")
        return cross_entropy_loss(out, idx.reshape(out.shape[:-1]))[1]


@register(kind="grucy.GRURegressor")
@dataclass(eq=False, repr=False, kw_only=True)
class GRURegressor(_SequenceEstimator):
    """Sequence regressor: a GRU reads each sequence, a linear readout of its final
    state predicts one or several real targets (MSE by default; ``loss`` "mae",
    "huber"); with ``return_sequences=True`` a readout at every step predicts targets
    per step.

    A scikit-learn estimator; parameters and attributes as in :class:`GRUClassifier`
    (without ``class_weight``), plus ``loss`` and the target standardisation ``y_mean_``
    and ``y_scale_``.  ``history_`` has ``val_rmse`` in target units.  With
    ``return_sequences`` y holds (T_i,) or (T_i, n_targets) values per sequence (a list,
    or (n, T) / (n, T, n_targets) padded like X); the loss is summed over the valid
    steps; ``predict`` returns the same structure (NaN past each end of a padded X).
    """

    _estimator_type: ClassVar[Optional[str]] = "regressor"
    _fitted_private: ClassVar[Tuple[str, ...]] = ("_input_ndim", "_y_ndim")

    loss: str = "mse"

    def fit(self, X: Any, y: Any, sample_weight: Optional[ArrayLike] = None, *,
            lengths: Optional[ArrayLike] = None, checkpoint: Optional[PathLike] = None,
            checkpoint_every: int = 1, resume: Optional[PathLike] = None,
            distributed: Any = "auto") -> "GRURegressor":
        """Train on sequences ``X`` with targets ``y``; returns self.

        Parameters
        ----------
        X : array (n, T) / (n, T, F), padded with ``lengths``, or list of arrays
        y : array_like (n_samples,) or (n_samples, n_targets); per step with
            ``return_sequences``
        sample_weight : array_like (n_samples,), optional
            Weight of each sequence (with ``return_sequences`` also one per step).
        lengths : array_like of int (n_samples,), optional
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        seqs = self._read_X(X, lengths, fitting=True)
        per_step = self._per_step()
        if per_step:
            if y is None:
                self._check_y_present(seqs.n, y)
            target, ndim = per_step_values("y", y, seqs)
            self._y_ndim = ndim
        else:
            target = self._check_y_present(seqs.n, y)
            if target.dtype.kind not in "biufO":
                raise ValueError(f"y must hold real numbers, got dtype {target.dtype}")
            target = target.astype(np.float64)
            if target.ndim not in (1, 2):
                raise ValueError(f"y must be (n_samples,) or (n_samples, n_targets), got "
                                 f"shape {target.shape} (targets per step need "
                                 f"return_sequences=True)")
            check_finite("y", target, hint="every sample needs a finite target")
            self._y_ndim = target.ndim
        if target.ndim == 2 and target.shape[1] == 0:
            raise ValueError(f"y has no targets (shape {target.shape}); it needs at least "
                             f"one column")
        w = sample_weights(sample_weight, seqs, seqs.n, per_step=per_step)
        seqs, w, (target,) = self._keep_weighted(seqs, w, target)
        w = None if w is None or np.all(w == 1.0) else w
        Y = target.reshape(len(target), -1)
        yw = self._step_weights(seqs, w) if per_step else w
        self.y_mean_, self.y_scale_, Y_scaled = _standardization("y", Y, 0, yw)
        y_scale = self.y_scale_

        # (in units of the largest scale, multiplied back after the root: squared in
        # data units, targets near 1e160 overflowed and fit called it divergence)
        top = float(np.max(y_scale))

        def rmse(out, target, wt, _):
            return (float(np.sum(wt * np.square((out - target) * (y_scale / top)))),
                    float(wt.sum()))
        rmse.unit = top  # type: ignore[attr-defined]

        self._fit_network(seqs, Y_scaled.astype(self._dtype()), w,
                          Y.shape[1], LOSSES[self.loss], {"rmse": rmse}, sample_w=w,
                          checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                          resume=resume, distributed=distributed)
        return self

    def _check_fitted_state(self):
        super()._check_fitted_state()
        n = self.net_.config["output_size"]
        _fitted_array(self, "y_mean_", (n,))
        _fitted_check(np.all(_fitted_array(self, "y_scale_", (n,)) > 0),
                      "fitted y_scale_ must be positive")
        # y's dimensions: (n,) / (n, k) for a target per sequence, (n, T) / (n, T, k)
        # (or lists of (T_i,) / (T_i, k)) per step; one target without the k
        ndims = (2, 3) if isinstance(self.net_, SequenceNet) else (1, 2)
        _fitted_check(self._y_ndim in ndims and (self._y_ndim == ndims[1] or n == 1),
                      f"fitted _y_ndim is {self._y_ndim!r} for {n} targets")

    def _predictions(self, out):
        """The network's outputs in target units (checked: finite)."""
        with np.errstate(over="ignore", invalid="ignore"):
            pred = out * self.y_scale_ + self.y_mean_
        return _check_output("GRURegressor's predictions", pred, "y_scale_ plus y_mean_")

    def predict(self, X: Any, *, lengths: Optional[ArrayLike] = None) -> Any:
        """Predicted targets, (n_samples,) or (n_samples, n_targets), float64; with
        ``return_sequences`` per step in the structure of X."""
        out, seqs = self._outputs(X, lengths)
        pred = self._predictions(out)
        if self._y_ndim in (1, 2) and not isinstance(self.net_, SequenceNet):
            return pred[:, 0] if self._y_ndim == 1 else pred
        return restructure(pred[:, 0] if self._y_ndim == 2 else pred, seqs, np.nan)

    def score(self, X: Any, y: Any, sample_weight: Optional[ArrayLike] = None, *,
              lengths: Optional[ArrayLike] = None) -> float:
        """Coefficient of determination R^2 (averaged uniformly over targets; over the
        valid steps with ``return_sequences``)."""
        out, seqs = self._outputs(X, lengths)
        pred = self._predictions(out)
        if isinstance(self.net_, SequenceNet):
            y2, _ = per_step_values("y", y, seqs)
            y2 = y2.reshape(len(y2), -1)
            if y2.shape[1] != pred.shape[1]:
                raise ValueError(f"y must have {pred.shape[1]} targets per step, got "
                                 f"{y2.shape[1]}")
            w = self._step_weights(seqs, sample_weights(sample_weight, seqs, seqs.n,
                                                        per_step=True))
        else:
            pred = pred[:, 0] if self._y_ndim == 1 else pred
            target = _as_real_array("y", self._check_y_present(len(pred), y)
                                    ).astype(np.float64)
            check_finite("y", target)
            if target.shape == pred.shape + (1,) or target.shape + (1,) == pred.shape:
                target = target.reshape(pred.shape)  # (n, 1) for (n,), as r2_score takes
            if target.shape != pred.shape:
                raise ValueError(f"y must have the shape of the predictions, {pred.shape}, "
                                 f"got {target.shape}")
            y2 = target.reshape(len(target), -1)
            pred = pred.reshape(len(target), -1)
            w = sample_weights(sample_weight, None, len(target))
        mean = np.average(y2, axis=0, weights=w)
        # residuals and deviations in units of each target's largest deviation: R^2 does
        # not change, and their squares neither overflow (targets near 1e160) nor
        # underflow to 0 (near 1e-170)
        unit = np.max(np.abs(y2 - mean), axis=0)
        unit = np.where(unit > 0, unit, 1.0)
        with np.errstate(over="ignore"):
            ss_res = np.average(np.square((y2 - pred) / unit), axis=0, weights=w)
        ss_tot = np.average(np.square((y2 - mean) / unit), axis=0, weights=w)
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
                      np.where(ss_res > 0, 0.0, 1.0))
        return float(np.mean(r2))

    def _loss_gradient(self, out, y):
        target = (y.astype(np.float64).reshape(out.shape) - self.y_mean_) / self.y_scale_
        return LOSSES[self.loss](out, target)[1]


def _label_padding(classes):
    """A value that is no class, for the steps past each end of padded predictions:
    -1 (or min - 1) for integers, NaN for floats, "" for strings (or, when "" is a
    class, the first of "<pad>", "<pad><pad>", ... that is not one), None otherwise."""
    if classes.dtype.kind in "iu":
        return -1 if not np.any(classes == -1) else int(classes.min()) - 1
    if classes.dtype.kind == "f":
        return np.nan
    if classes.dtype.kind in "US":
        make = classes.dtype.type  # str or bytes, as the labels
        fill, k = make(""), 0
        while np.any(classes == fill):
            k += 1
            fill = make("<pad>" * k)
        return fill
    return None


def _sklearn_warning(category_name):
    """scikit-learn's warning class when it is installed, else UserWarning."""
    try:
        from sklearn import exceptions
    except ImportError:  # pragma: no cover - depends on the environment
        return UserWarning
    return getattr(exceptions, category_name, UserWarning)


def _check_no_missing_label(labels):
    """ValueError for a missing value (None, NaN, pandas' NA or NaT) among object labels,
    as float labels with NaN get."""
    miss = first_missing(labels)
    if miss is not None:
        raise ValueError(f"y contains a missing label ({miss[1]!r}, first at index "
                         f"{miss[0]}); every sample needs a class label")


def _check_label_kind(labels, classes):
    """ValueError for numbers scored against string classes or the reverse (no label
    would ever match: the accuracy came back 0.0, where scikit-learn refuses)."""
    def kind(a):
        a = np.asarray(a)
        return "numbers" if a.dtype.kind in "biuf" else "strings" if a.dtype.kind in "US" \
            else None
    got, want = kind(labels), kind(classes)
    if got and want and got != want:
        raise ValueError(f"y holds {got}, but the classifier's classes_ are {want} "
                         f"({classes[:3].tolist()}...): no label could match")


def _column_names(X):
    """A 2-D pandas DataFrame's column names when all are strings (scikit-learn's
    ``feature_names_in_``), else None."""
    if not is_pandas(X) or getattr(X, "ndim", 0) != 2:
        return None
    names = list(X.columns)
    if not names or not all(isinstance(c, str) for c in names):
        return None
    return np.asarray(names, dtype=object)
