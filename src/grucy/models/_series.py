"""What the Forecaster reads and returns: series as arrays or pandas objects, covariates
aligned with them, and the dates of the steps it forecasts.

pandas is optional: nothing here imports it unless a pandas object was handed over (so
``import grucy`` never imports pandas), and then only to name the future steps.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, List, Optional

import numpy as np

from .._validation import check_finite, raise_missing

__all__ = ["is_pandas", "Series", "read_series", "read_covariates", "future_index",
           "freq_label", "with_fitted_frequency",
           "check_frequency", "as_pandas", "json_label", "by_name", "check_unique_labels"]


def is_pandas(obj) -> bool:
    """Whether ``obj`` is a pandas Series or DataFrame (without importing pandas)."""
    return type(obj).__module__.split(".")[0] == "pandas" and hasattr(obj, "index")


@dataclass
class Series:
    """One series: values (n, k) float64 and what pandas said about it."""

    values: np.ndarray
    univariate: bool            # given as (n,) or a pandas Series
    index: Any = None           # the pandas index, None for arrays
    columns: Optional[List[Any]] = None   # DataFrame columns
    name: Any = None            # Series name
    column_names: Any = None    # a MultiIndex's level names (its labels are tuples)

    @property
    def is_pandas(self):
        return self.index is not None


def _values(name, obj):
    arr = np.asarray(obj)
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise_missing(name, arr)  # (a nullable column's pd.NA)
            raise TypeError(f"{name} must hold real numbers, got values of dtype object "
                            f"that are not numbers") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def read_series(name, y, *, hint="fill or drop missing values first") -> Series:
    """``y`` (array (n,) / (n, k), pandas Series or DataFrame) as a :class:`Series`."""
    if hasattr(y, "toarray") or hasattr(y, "tocsr"):
        raise TypeError(f"{name} must be dense (an array, a pandas Series or DataFrame)")
    index = columns = sname = levels = None
    if is_pandas(y):
        index = y.index
        _check_index(name, index)
        if y.ndim == 1:
            sname = y.name
        else:
            check_unique_columns(name, y.columns)
            columns = list(y.columns)
            if getattr(y.columns, "nlevels", 1) > 1:
                levels = list(y.columns.names)
    s = _values(name, y)
    if s.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (n,) or 2-D (n, k), got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{name} is empty (shape {s.shape}); it needs values, oldest "
                         f"first, in at least one column")
    check_finite(name, s, hint=hint)
    return Series(s.reshape(len(s), -1), s.ndim == 1, index, columns, sname, levels)


def json_label(label):
    """A column label as a fitted model keeps it (a JSON scalar; other labels as str)."""
    if label is None or isinstance(label, (str, bool, int, float)):
        return label
    if isinstance(label, np.generic):
        return label.item()
    return str(label)


def by_name(name, frame, fitted):
    """The columns ``fitted`` (labels as :func:`json_label` keeps them) of the DataFrame
    ``frame``, in that order; ``frame`` as given (read by position) when either side has
    no names: nothing fitted, or default labels 0, 1, ... (an array made a frame).  A
    ValueError when names on both sides do not match: read by position, they would
    silently feed one column in as another (and so would a repeated label)."""
    check_unique_columns(name, frame.columns)
    if fitted is None:
        return frame
    labels = [json_label(c) for c in frame.columns]
    if set(fitted) <= set(labels):
        return frame.iloc[:, [labels.index(c) for c in fitted]]
    if fitted == list(range(len(fitted))) or labels == list(range(len(labels))):
        return frame
    missing = [c for c in fitted if c not in labels]
    raise ValueError(f"{name} lacks the column(s) {missing[:20]} the model was fitted on "
                     f"(its columns: {labels[:20]}); a DataFrame's columns are taken by "
                     f"name: rename them (or pass an array to give them by position)")


def check_unique_labels(name, index):
    """A ValueError naming ``name`` and its repeated labels: aligned by label, a repeated
    one gives two rows for one step and shifts every later step."""
    if not index.is_unique:
        repeated = index[index.duplicated()].unique()
        raise ValueError(f"{name}'s index repeats {len(repeated)} label(s), first "
                         f"{list(repeated[:5])}; each step needs one row (drop the "
                         f"repeats, e.g. {name}[~{name}.index.duplicated()])")


def check_unique_columns(name, columns):
    """A ValueError naming ``name`` and its repeated column labels: taken by name, a
    repeated one fed the first column in for each (the second series was forecast from
    the first one's history, a second covariate never seen)."""
    if not columns.is_unique:
        repeated = list(columns[columns.duplicated()].unique()[:5])
        raise ValueError(f"{name} repeats the column label(s) {repeated}; give each "
                         f"column its own name")


def _check_index(name, index):
    import pandas as pd

    if isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)) and index.hasnans:
        raise ValueError(f"{name}'s index holds NaT at position "
                         f"{int(np.flatnonzero(index.isna())[0])}; every step needs its "
                         f"date")
    if not isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)) and (
            index.dtype.kind in "OSU" or pd.api.types.is_string_dtype(index.dtype)):
        # (not "sort it": sorting strings orders "10" before "2")
        raise ValueError(f"{name}'s index must be a DatetimeIndex, PeriodIndex or "
                         f"integer index to name the forecast steps, got labels of dtype "
                         f"{index.dtype} (dates as strings: pd.to_datetime({name}.index))")
    if len(index) > 1 and not (index.is_monotonic_increasing and index.is_unique):
        raise ValueError(f"{name}'s index must be increasing without repeats (oldest "
                         f"first); sort it, e.g. {name}.sort_index()")


def check_frequency(name, index):
    """The step between two labels of ``index``: a pandas offset (dates), the period
    frequency, or an integer step; a ValueError saying how to set it otherwise."""
    import pandas as pd

    if isinstance(index, pd.PeriodIndex):
        return index.freq
    if isinstance(index, pd.DatetimeIndex):
        freq = index.freq
        if freq is None and len(index) >= 3:
            with warnings.catch_warnings():  # (pandas 3 warns that a later version will
                warnings.simplefilter("ignore")  # return an offset: both are read below)
                freq = pd.infer_freq(index)
        if freq is None:
            raise ValueError(
                f"cannot infer the frequency of {name}'s DatetimeIndex (irregular dates, "
                f"gaps, or fewer than 3 of them); set it, e.g. {name} = {name}.asfreq('D') "
                f"(or 'W-SAT', 'MS', ...), which also shows missing steps as NaN")
        return pd.tseries.frequencies.to_offset(freq)
    if isinstance(index, pd.RangeIndex):  # (its step, even for one label)
        return int(index.step)
    if pd.api.types.is_integer_dtype(index.dtype):
        steps = np.diff(np.asarray(index, dtype=np.int64))
        if len(steps) and np.any(steps != steps[0]):
            raise ValueError(f"{name}'s integer index is not evenly spaced; give evenly "
                             f"spaced steps (or reset_index(drop=True))")
        return int(steps[0]) if len(steps) else 1
    raise ValueError(f"{name}'s index must be a DatetimeIndex, PeriodIndex or integer "
                     f"index to name the forecast steps, got {type(index).__name__}")


def freq_label(name, index):
    """How a fitted model records ``index``'s frequency (its ``freq_``): the period alias
    of a PeriodIndex ("M"), the offset of a DatetimeIndex ("B", "ME"), or the integer
    step as a string ("5"); errors name ``name``."""
    import pandas as pd

    freq = check_frequency(name, index)
    if isinstance(index, pd.PeriodIndex):
        return str(index.freqstr)
    return str(getattr(freq, "freqstr", freq))


def with_fitted_frequency(target: Series, fitted) -> Series:
    """``target`` with its index stepping by ``fitted`` (a :func:`freq_label`) where the
    index does not say its own step and fits that grid.  A DatetimeIndex read from a
    file has no ``freq``, and its last few business days look daily to pandas (the
    forecast fell on a Saturday and read Saturday's covariates); one label of an integer
    index has no step.  An index with its own ``freq`` or step, of another kind, or off
    the fitted grid is left as it is (its own frequency is inferred, as without a
    fitted one)."""
    import pandas as pd

    index = target.index
    if fitted is None or index is None or getattr(index, "freq", None) is not None:
        return target
    if isinstance(index, pd.DatetimeIndex):
        offset = _offset(fitted)
        if offset is None:
            return target
        try:
            grid = pd.date_range(start=index[0], periods=len(index), freq=offset,
                                 name=index.name)
        except (ValueError, TypeError):  # (an offset date_range cannot step by)
            return target
        return replace(target, index=grid) if grid.equals(index) else target
    if (len(index) == 1 and pd.api.types.is_integer_dtype(index.dtype)
            and not isinstance(index, pd.RangeIndex) and fitted.lstrip("-").isdigit()):
        first, step = int(index[0]), int(fitted)
        return replace(target, index=pd.RangeIndex(first, first + step, step,
                                                   name=index.name))
    return target


def _offset(label):
    import pandas as pd

    try:
        return pd.tseries.frequencies.to_offset(label)
    except ValueError:
        return None


def future_index(name, index, horizon):
    """The labels of the ``horizon`` steps after ``index``."""
    import pandas as pd

    freq = check_frequency(name, index)
    last = index[-1]
    if isinstance(index, pd.PeriodIndex):
        return pd.period_range(start=last + 1, periods=horizon, freq=freq, name=index.name)
    if isinstance(index, pd.DatetimeIndex):
        return pd.DatetimeIndex([last + i * freq for i in range(1, horizon + 1)],
                                freq=freq, name=index.name)
    return pd.RangeIndex(int(last) + freq, int(last) + freq * (horizon + 1), freq,
                         name=index.name)


def read_covariates(name, X, target: Series, *, future=0, n_covariates=None,
                    columns=None):
    """Covariates ``X`` for the steps of ``target`` and the ``future`` steps after it:
    (n + future, c) float64.

    An array must have exactly that many rows (its first row is the first step of the
    target); a pandas object with the target's index is aligned by its labels (extra
    rows are ignored, repeated labels refused) and its columns are taken by name when
    ``columns`` (the fitted names) is given (see :func:`by_name`).
    """
    n = len(target.values)
    if X is None:
        raise ValueError(f"{name} is missing: the model was fitted with covariates; give "
                         f"them for the {n} steps of y and the {future} steps ahead "
                         f"({n + future} rows)")
    if is_pandas(X):
        X = by_name(name, X.to_frame() if X.ndim == 1 else X, columns)
    if is_pandas(X) and target.is_pandas:
        labels = target.index
        if future:
            labels = labels.append(future_index("y", target.index, future))
        check_unique_labels(name, X.index)
        missing = labels.difference(X.index)
        if len(missing):
            raise ValueError(f"{name} has no rows for {len(missing)} of the steps it must "
                             f"cover (y's steps and the {future} ahead), first {missing[0]}; "
                             f"covariates are known in advance: give them for every step")
        values = _values(name, X.loc[labels])
    else:
        values = _values(name, X)
        if len(values) != n + future:
            what = (f"the {n} steps of y and the {future} steps ahead" if future
                    else f"the {n} steps of y")
            raise ValueError(f"{name} must have one row per step: {n + future} rows for "
                             f"{what}, got {len(values)}")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_steps, n_covariates), got shape "
                         f"{values.shape}")
    if n_covariates is not None and values.shape[1] != n_covariates:
        raise ValueError(f"{name} has {values.shape[1]} covariates, the model was fitted "
                         f"with {n_covariates}")
    check_finite(name, values, hint="covariates are known in advance: give every value")
    return values


def as_pandas(values, target: Series, horizon, *, levels=None, columns=None):
    """Forecasts (horizon, k) or quantiles (horizon, k, Q) as pandas, indexed by the
    ``horizon`` steps after ``target``: a Series (univariate point forecasts) or a
    DataFrame (columns kept; quantile levels as columns, under each series' column for
    several series)."""
    import pandas as pd

    index = future_index("y", target.index, horizon)
    cols = columns if columns is not None else (target.columns or [target.name])
    names = target.column_names if cols == target.columns else None
    if levels is None:
        if target.univariate:
            return pd.Series(values[:, 0], index=index, name=target.name)
        if names is not None:  # (MultiIndex columns kept, with their level names)
            cols = pd.MultiIndex.from_tuples(cols, names=names)
        return pd.DataFrame(values, index=index, columns=cols)
    levels = [float(q) for q in levels]
    if target.univariate:
        return pd.DataFrame(values[:, 0, :], index=index, columns=levels)
    if names is not None:  # one more level: the quantile's
        header = pd.MultiIndex.from_tuples([(*c, q) for c in cols for q in levels],
                                           names=[*names, None])
    else:
        header = pd.MultiIndex.from_product([cols, levels])
    return pd.DataFrame(values.reshape(horizon, -1), index=index, columns=header)
