"""What ``verbose`` shows while training: a tqdm bar when tqdm is installed, else lines."""

from __future__ import annotations

import sys
import time


class _Progress:
    """What ``verbose`` shows on the root process.

    With tqdm: one bar over every training batch of the run, advanced after each batch
    (tqdm redraws at most every ``mininterval`` seconds, so a long epoch moves visibly
    and a fast one costs nothing), the last epoch's metrics as its postfix; a task that
    cannot count its batches gets a bar over epochs.  Without tqdm: ``verbose=1`` prints
    an epoch's line only when ``LINE_INTERVAL`` seconds have passed since the last one
    (and always the first and the last epoch), so at most one line per epoch and a few
    lines for a run of many quick epochs; ``verbose=2`` prints every epoch's line.
    """

    LINE_INTERVAL = 10.0  # seconds between lines without tqdm at verbose=1

    def __init__(self, verbose, total, initial, desc, batches_per_epoch=None):
        self.verbose, self.total, self.desc, self.bar = verbose, total, desc, None
        self.per_batch = batches_per_epoch is not None and batches_per_epoch > 0
        self.last_line = None  # time.monotonic() of the last printed line
        if not verbose:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        if self.per_batch:
            self.bar = tqdm(total=total * batches_per_epoch,
                            initial=initial * batches_per_epoch, desc=desc, unit="batch",
                            dynamic_ncols=True, leave=True, mininterval=0.2)
        else:
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="epoch",
                            dynamic_ncols=True, leave=True)

    def batch(self):
        """One training batch done."""
        if self.bar is not None and self.per_batch:
            self.bar.update(1)

    def _line(self, epoch, logs):
        items = "  ".join(f"{k} {v:.5g}" for k, v in logs.items())
        return f"{self.desc}: epoch {epoch}/{self.total}  {items}"

    def epoch(self, epoch, logs, last):
        """Epoch ``epoch`` done with ``logs``; ``last`` when no epoch follows."""
        if not self.verbose:
            return
        if self.bar is not None:
            shown = {"epoch": f"{epoch}/{self.total}"}
            shown.update({k: f"{v:.4g}" for k, v in logs.items() if k != "lr"})
            self.bar.set_postfix(shown, refresh=False)
            if not self.per_batch:
                self.bar.update(1)
            if self.verbose > 1:
                self.bar.write(self._line(epoch, logs))
            return
        now = time.monotonic()
        if (self.verbose > 1 or last or self.last_line is None
                or now - self.last_line >= self.LINE_INTERVAL):
            print(self._line(epoch, logs), file=sys.stderr, flush=True)
            self.last_line = now

    def close(self):
        if self.bar is not None:
            self.bar.close()
