"""Deferred preemption: a signal only sets a flag; the work stops at its next safe point.

SLURM (through submitit) sends SIGUSR2 before the time limit, and some schedulers send SIGTERM.
Handling it mid-batch would lose the batch or corrupt state. Instead the pipeline checks the flag
after each checkpoint, waits for orbax, and then :meth:`StopRequest.forward` hands the signal to
the handler that was installed before ours (submitit's, which requeues the job), or exits.
"""

from __future__ import annotations

import logging
import signal
import sys

log = logging.getLogger(__name__)


class StopRequest:
    def __init__(self, signals=(signal.SIGUSR2, signal.SIGTERM)):
        self.signum = None
        self.previous = {s: signal.signal(s, self._handle) for s in signals}

    def _handle(self, signum, frame):
        self.signum = signum
        log.warning("received %s: stopping after the current batch is checkpointed", signal.Signals(signum).name)

    def __call__(self) -> bool:
        return self.signum is not None

    def restore(self) -> None:
        """Reinstalls the handlers that were there before."""
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def forward(self) -> None:
        """Passes the deferred signal to the previous handler (submitit requeues), else exits."""
        previous = self.previous.get(self.signum)
        self.restore()
        if callable(previous):
            previous(self.signum, None)
        sys.exit(128 + int(self.signum))
