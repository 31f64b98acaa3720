"""Sequence classification and regression: :class:`GRUClassifier` and
:class:`GRURegressor`, scikit-learn estimators on sequences ``X`` of shape (n, T) or
(n, T, F).

scikit-learn is optional: the estimators implement ``get_params`` / ``set_params`` and
scikit-learn's tags themselves, so they work in ``Pipeline`` and ``GridSearchCV`` without
grucy importing scikit-learn.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .._validation import _as_real_array, _flag, _positive_int, check_finite
from ..io import register
from ..losses import LOSSES, cross_entropy_loss
from ..training import ArrayTask
from .._validation import check_result
from .base import (GRUModel, _check_fraction, _check_output, _fitted_array,
                   _fitted_check, _fitted_int, _mean_output_gradient, _standardization,
                   _validation_split)
from .nets import ReadoutNet

__all__ = ["GRUClassifier", "GRURegressor"]


@dataclass(eq=False, repr=False, kw_only=True)
class _SequenceEstimator(GRUModel):
    """What GRUClassifier and GRURegressor share: input checks, scaling, the network."""

    bidirectional: bool = False

    input_kind: ClassVar[str] = "sequences"
    _fitted_private: ClassVar[Tuple[str, ...]] = ("_input_ndim",)
    _net_class: ClassVar[Any] = ReadoutNet

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
    def _check_X(self, X, *, fitting):
        """X as float64 (n, T, F); sets or checks the fitted shape."""
        name = type(self).__name__
        if hasattr(X, "toarray") or hasattr(X, "tocsr"):
            raise TypeError(f"{name} does not accept sparse input; convert X to a dense "
                            f"array first")
        X = np.asarray(X)
        if X.dtype.kind == "c":
            raise ValueError("Complex data not supported")
        if X.dtype.kind == "O":
            X = X.astype(np.float64)  # numbers pass, anything else raises TypeError
        elif X.dtype.kind not in "biuf":
            raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
        X = X.astype(np.float64)
        if X.ndim not in (2, 3):
            raise ValueError(f"X must be 2-D (n_samples, n_steps) or 3-D (n_samples, "
                             f"n_steps, n_features), got a {X.ndim}-D array of shape "
                             f"{X.shape}. Reshape your data, e.g. X.reshape(-1, 1) for "
                             f"one step per sample.")
        if X.shape[0] == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a "
                             f"minimum of 1 is required.")
        if X.shape[1] == 0 or (X.ndim == 3 and X.shape[2] == 0):
            raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a "
                             f"minimum of 1 is required.")
        check_finite("X", X, hint="fill or drop missing values first")
        if fitting:
            self._input_ndim = X.ndim
            self.n_features_in_ = X.shape[1] if X.ndim == 2 else X.shape[2]
            self.n_steps_ = X.shape[1]
        else:
            if X.ndim == 2 and self._input_ndim == 2 and X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                                 f"{self.n_features_in_} features as input")
            F = 1 if X.ndim == 2 else X.shape[2]
            expected_F = 1 if self._input_ndim == 2 else self.n_features_in_
            if F != expected_F:
                raise ValueError(f"X has {F} features per step, but {name} is expecting "
                                 f"{expected_F} features per step as input")
        return X if X.ndim == 3 else X[:, :, None]

    def _check_fitted_state(self):
        _fitted_check(self._input_ndim in (2, 3), f"fitted _input_ndim is "
                                                  f"{self._input_ndim!r}")
        n_in, _ = _fitted_int(self, "n_features_in_"), _fitted_int(self, "n_steps_")
        F = 1 if self._input_ndim == 2 else n_in
        _fitted_array(self, "x_mean_", (F,))
        _fitted_check(np.all(_fitted_array(self, "x_scale_", (F,)) > 0),
                      "fitted x_scale_ must be positive")
        _fitted_check(self.net_.config["input_size"] == F,
                      f"the network reads {self.net_.config['input_size']} features per "
                      f"step, the fitted X has {F}")

    def _check_y_present(self, X, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                             f"target y is None")
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(X):
            raise ValueError(f"X and y must have the same number of samples, got "
                             f"{len(X)} and {0 if y.ndim == 0 else len(y)}")
        return y

    def _scaled(self, X3):
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = ((X3 - self.x_mean_) / self.x_scale_).astype(self.net_.dtype)
        check_result("X standardised (with x_mean_ and x_scale_)", scaled)
        return scaled

    def _fit_network(self, X3, Y, output_size, loss, metrics, *, stratify=None,
                     checkpoint, checkpoint_every, resume, distributed):
        frac = _check_fraction("validation_fraction", self.validation_fraction)
        self.x_mean_, self.x_scale_, _ = _standardization("X", X3, (0, 1))
        dtype = self._dtype()
        seed = self._seed_for_fit(self.random_state, resume, distributed)
        rng = np.random.default_rng(seed)
        train_idx, val_idx = _validation_split(len(X3), frac, rng)
        self.net_ = ReadoutNet(X3.shape[2], _positive_int("hidden_size", self.hidden_size),
                               output_size,
                               num_layers=_positive_int("num_layers", self.num_layers),
                               dropout=self.dropout,
                               bidirectional=_flag("bidirectional", self.bidirectional),
                               dtype=dtype, seed=int(rng.integers(2**63)))
        task = ArrayTask(self.net_, self._scaled(X3), Y, loss, train_idx, val_idx,
                         metrics=metrics)
        self._run(task, seed, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                  resume=resume, distributed=distributed)

    def _outputs(self, X):
        """Network outputs (n, output_size) as float64, computed in batches."""
        self._check_is_fitted()
        X3 = self._scaled(self._check_X(X, fitting=False))
        step = 4096
        return np.concatenate([self.net_.forward(X3[i:i + step], training=False)
                               for i in range(0, len(X3), step)]).astype(np.float64)

    def network_inputs(self, x: ArrayLike,
                       y: Optional[ArrayLike] = None) -> Tuple[np.ndarray, Callable]:
        """See :meth:`GRUModel.network_inputs`.

        ``x``: an X as :meth:`predict` takes it; ``y``: its labels (GRUClassifier,
        cross-entropy) or targets (GRURegressor, its loss on standardised targets).
        """
        self._check_is_fitted()
        X = (self._check_X(x, fitting=False) - self.x_mean_) / self.x_scale_
        X = np.ascontiguousarray(X, dtype=np.float64)
        if y is None:
            return X, _mean_output_gradient
        return X, lambda out: self._loss_gradient(out, np.asarray(y))

    def _loss_gradient(self, out, y):  # pragma: no cover - each estimator has its own
        raise NotImplementedError



@register(kind="grucy.GRUClassifier")
class GRUClassifier(_SequenceEstimator):
    """Sequence classifier: a GRU reads each sequence, a linear readout of its final
    state gives the class scores (softmax cross-entropy).

    A scikit-learn estimator (``fit``, ``predict``, ``predict_proba``, ``score``,
    ``get_params`` / ``set_params``); scikit-learn itself is optional.

    Parameters
    ----------
    hidden_size, num_layers : int, default 32, 1
    bidirectional : bool, default False
        Read both directions; the readout sees both final states.
    dropout : float, default 0
    epochs, batch_size, lr : default 60, 32, 1e-2
    optimizer, weight_decay, schedule, max_grad_norm
        As in :class:`Forecaster`.
    validation_fraction : float, default 0
        Random share of the training samples held out for validation; its loss and
        accuracy are in ``history_`` and early stopping watches its loss.
    patience : int or None, default None
        Early stopping: stop after ``patience`` epochs without improvement of the
        validation loss (the training loss without validation data), restoring the best
        weights.  None trains all ``epochs``.
    dtype : {"float32", "float64"}, default "float32"
    random_state : int, Generator or None
    verbose : int, default 0

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted.
    n_features_in_ : int
        Columns of a 2-D X (its steps), or features per step of a 3-D X.
    n_steps_ : int
        Steps per sequence seen in ``fit``.
    history_ : dict of lists
        Per-epoch ``loss``, ``lr``, ``val_loss`` and ``val_accuracy``.

    Notes
    -----
    X is (n_samples, n_steps) for univariate sequences or (n_samples, n_steps,
    n_features).  Each feature is standardised with its mean and standard deviation over
    the training samples and steps.  With a 2-D X the number of steps is fixed (it is
    scikit-learn's number of features); pass 3-D arrays to predict on other lengths.
    """

    _estimator_type: ClassVar[Optional[str]] = "classifier"

    def fit(self, X: ArrayLike, y: ArrayLike, *, checkpoint=None,
            checkpoint_every: int = 1, resume=None,
            distributed: Any = "auto") -> "GRUClassifier":
        """Train on sequences ``X`` with labels ``y``; returns self.

        Parameters
        ----------
        X : array_like, (n_samples, n_steps) or (n_samples, n_steps, n_features)
        y : array_like, (n_samples,)
            Labels of any sortable type (at least two distinct).
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        X3 = self._check_X(X, fitting=True)
        labels = self._check_y_present(X3, y)
        if labels.ndim == 2 and labels.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. "
                          "Please change the shape of y to (n_samples,), for example "
                          "using ravel().", _sklearn_warning("DataConversionWarning"),
                          stacklevel=2)
            labels = labels.ravel()
        if labels.ndim != 1:
            raise ValueError(f"y should be a 1d array of labels, got shape {labels.shape}")
        if labels.dtype.kind == "f":
            check_finite("y", labels, hint="every sample needs a class label")
            if np.any(labels != np.round(labels)):
                raise ValueError("Unknown label type: continuous. GRUClassifier needs "
                                 "discrete class labels; use GRURegressor for continuous "
                                 "targets.")
        classes, y_enc = np.unique(labels, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"GRUClassifier needs samples of at least 2 classes; got 1 "
                             f"class ({classes[0]!r})")
        self.classes_ = classes

        def accuracy(out, target):
            return float(np.sum(np.argmax(out, axis=1) == target)), float(target.size)

        self._fit_network(X3, y_enc.astype(np.int64), len(classes), cross_entropy_loss,
                          {"accuracy": accuracy}, checkpoint=checkpoint,
                          checkpoint_every=checkpoint_every, resume=resume,
                          distributed=distributed)
        return self

    def _check_fitted_state(self):
        super()._check_fitted_state()
        classes = self.classes_
        _fitted_check(isinstance(classes, np.ndarray) and classes.ndim == 1
                      and len(classes) == self.net_.config["output_size"] >= 2,
                      f"fitted classes_ must be the {self.net_.config['output_size']} "
                      f"labels the network scores")

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, (n_samples, n_classes), columns in ``classes_`` order."""
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Log of :meth:`predict_proba`, computed stably."""
        logits = self._outputs(X)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable label of each sequence."""
        scores = self._outputs(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X: ArrayLike, y: ArrayLike,
              sample_weight: Optional[ArrayLike] = None) -> float:
        """Mean accuracy of :meth:`predict` on (X, y) (optionally weighted)."""
        pred = self.predict(X)
        labels = self._check_y_present(pred, y).reshape(len(pred), -1)
        if labels.shape[1] != 1:
            raise ValueError(f"y should be a 1d array of labels, got shape "
                             f"{np.shape(y)}")
        correct = pred == labels[:, 0]
        return float(np.average(correct, weights=_sample_weight(sample_weight, len(pred))))

    def _loss_gradient(self, out, y):
        idx = np.searchsorted(self.classes_, y.reshape(-1))
        if np.any(idx >= len(self.classes_)) or np.any(self.classes_[
                np.minimum(idx, len(self.classes_) - 1)] != y.reshape(-1)):
            raise ValueError("y holds labels the classifier was not trained on")
        return cross_entropy_loss(out, idx)[1]



@register(kind="grucy.GRURegressor")
@dataclass(eq=False, repr=False, kw_only=True)
class GRURegressor(_SequenceEstimator):
    """Sequence regressor: a GRU reads each sequence, a linear readout of its final
    state predicts one or several real targets (MSE by default; ``loss`` "mae", "huber").

    A scikit-learn estimator; parameters and attributes as in :class:`GRUClassifier`,
    plus ``loss`` and the target standardisation ``y_mean_`` and ``y_scale_``.
    ``history_`` has ``val_rmse`` in target units.
    """

    _estimator_type: ClassVar[Optional[str]] = "regressor"
    _fitted_private: ClassVar[Tuple[str, ...]] = ("_input_ndim", "_y_ndim")

    loss: str = "mse"

    def fit(self, X: ArrayLike, y: ArrayLike, *, checkpoint=None,
            checkpoint_every: int = 1, resume=None,
            distributed: Any = "auto") -> "GRURegressor":
        """Train on sequences ``X`` with targets ``y`` (n,) or (n, n_targets); returns self.

        Parameters
        ----------
        X : array_like, (n_samples, n_steps) or (n_samples, n_steps, n_features)
        y : array_like, (n_samples,) or (n_samples, n_targets)
        checkpoint, checkpoint_every, resume, distributed
            See :class:`grucy.training.Trainer`.
        """
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        X3 = self._check_X(X, fitting=True)
        target = self._check_y_present(X3, y)
        if target.dtype.kind not in "biufO":
            raise ValueError(f"y must hold real numbers, got dtype {target.dtype}")
        target = target.astype(np.float64)
        if target.ndim not in (1, 2):
            raise ValueError(f"y must be (n_samples,) or (n_samples, n_targets), got shape "
                             f"{target.shape}")
        check_finite("y", target, hint="every sample needs a finite target")
        if target.ndim == 2 and target.shape[1] == 0:
            raise ValueError(f"y has no targets (shape {target.shape}); it needs at least "
                             f"one column")
        self._y_ndim = target.ndim
        Y = target.reshape(len(target), -1)
        self.y_mean_, self.y_scale_, Y_scaled = _standardization("y", Y, 0)
        y_scale = self.y_scale_

        def rmse(out, target):
            return float(np.sum(np.square((out - target) * y_scale))), float(target.size)

        self._fit_network(X3, Y_scaled.astype(self._dtype()),
                          Y.shape[1], LOSSES[self.loss], {"rmse": rmse},
                          checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                          resume=resume, distributed=distributed)
        return self

    def _check_fitted_state(self):
        super()._check_fitted_state()
        n = self.net_.config["output_size"]
        _fitted_array(self, "y_mean_", (n,))
        _fitted_check(np.all(_fitted_array(self, "y_scale_", (n,)) > 0),
                      "fitted y_scale_ must be positive")
        _fitted_check(self._y_ndim == 2 or (self._y_ndim == 1 and n == 1),
                      f"fitted _y_ndim is {self._y_ndim!r} for {n} targets")

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted targets, (n_samples,) or (n_samples, n_targets), float64."""
        with np.errstate(over="ignore", invalid="ignore"):
            pred = self._outputs(X) * self.y_scale_ + self.y_mean_
        _check_output("GRURegressor.predict's predictions", pred, "y_scale_ plus y_mean_")
        return pred[:, 0] if self._y_ndim == 1 else pred

    def score(self, X: ArrayLike, y: ArrayLike,
              sample_weight: Optional[ArrayLike] = None) -> float:
        """Coefficient of determination R^2 (averaged uniformly over targets)."""
        pred = self.predict(X)
        target = _as_real_array("y", self._check_y_present(pred, y)).astype(np.float64)
        check_finite("y", target)
        if target.shape != pred.shape:
            raise ValueError(f"y must have the shape of the predictions, {pred.shape}, got "
                             f"{target.shape}")
        pred = pred.reshape(len(target), -1)
        y2 = target.reshape(len(target), -1)
        w = _sample_weight(sample_weight, len(target))
        mean = np.average(y2, axis=0, weights=w)
        ss_res = np.average(np.square(y2 - pred), axis=0, weights=w)
        ss_tot = np.average(np.square(y2 - mean), axis=0, weights=w)
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
                      np.where(ss_res > 0, 0.0, 1.0))
        return float(np.mean(r2))

    def _loss_gradient(self, out, y):
        target = (y.reshape(len(out), -1).astype(np.float64) - self.y_mean_) / self.y_scale_
        return LOSSES[self.loss](out, target)[1]



def _sklearn_warning(category_name):
    """scikit-learn's warning class when it is installed, else UserWarning."""
    try:
        from sklearn import exceptions
    except ImportError:  # pragma: no cover - depends on the environment
        return UserWarning
    return getattr(exceptions, category_name, UserWarning)



def _sample_weight(sample_weight, n):
    """``sample_weight`` as n finite non-negative float64 weights (None stays None)."""
    if sample_weight is None:
        return None
    w = _as_real_array("sample_weight", sample_weight).astype(np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape (n_samples,) = ({n},), got "
                         f"{w.shape}")
    check_finite("sample_weight", w)
    if np.any(w < 0) or not w.sum() > 0:
        raise ValueError("sample_weight must be >= 0 with a positive sum")
    return w
