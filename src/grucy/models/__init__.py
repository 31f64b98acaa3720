"""Ready-to-use GRU models: forecasting, sequence classification and regression, and a
character-level language model.

Every model composes the building blocks of :mod:`grucy.nn` into a small network
(:mod:`~grucy.models.nets`) and trains it with the one training loop of
:mod:`grucy.training` (mini-batches, validation split, early stopping, schedules,
progress bar, ``history_``, seeds, checkpoints and resume, data parallelism).  The
options every model shares are declared once, in :class:`~grucy.models.base.GRUModel`.

- :class:`Forecaster` (:mod:`~grucy.models.forecaster`): next values of a univariate or
  multivariate series.
- :class:`GRUClassifier`, :class:`GRURegressor` (:mod:`~grucy.models.sequence`):
  scikit-learn estimators on sequences ``X`` of shape (n, T) or (n, T, F).
  scikit-learn is optional: the estimators implement ``get_params`` / ``set_params``
  and scikit-learn's tags themselves, so they work in ``Pipeline`` and ``GridSearchCV``
  without grucy importing scikit-learn.
- :class:`CharLM` (:mod:`~grucy.models.charlm`): a character-level language model
  trained with truncated BPTT.
"""

from .base import GRUModel, NotFittedError
from .charlm import CharLM
from .forecaster import Forecaster
from .nets import CharNet, ReadoutNet, SequenceNet
from .sequence import GRUClassifier, GRURegressor

__all__ = ["Forecaster", "GRUClassifier", "GRURegressor", "CharLM", "NotFittedError",
           "GRUModel", "ReadoutNet", "SequenceNet", "CharNet"]
