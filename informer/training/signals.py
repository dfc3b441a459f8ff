"""Stopping a run cleanly on SIGINT/SIGTERM.

A signal handler only sets a flag: the loop notices it at the next step boundary (or after the epoch's
validation), writes ``last.pt`` there and raises :class:`TrainingInterrupted`; nothing is ever saved
from inside the handler, where the model may be half-way through an optimizer step. A second signal
while the first is pending falls back to the default action (immediate exit, no save): ``last.pt`` is
written atomically, so the previous one stays valid.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing ``checkpoint``; resume from ``run_dir``."""

    def __init__(self, signum: int, run_dir: str, checkpoint: str, position: str) -> None:
        self.signum = signum
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.position = position
        super().__init__(f"training stopped by {signal.Signals(signum).name} {position}; "
                         f"the state was saved to {checkpoint}")

    @property
    def exit_code(self) -> int:
        """The shell convention for a process ended by a signal: 128 + signal number (130, 143)."""
        return 128 + self.signum


class StopRequest:
    """Context manager: while active, SIGINT/SIGTERM set ``signum`` instead of ending the process.

    Installed only in the main thread of the main interpreter (Python's signal rule); elsewhere it is
    inert and signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        # the next signal acts immediately: Ctrl-C twice stops without waiting for the step to end
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        log.warning("received %s: stopping after the current step and saving checkpoints/last.pt "
                    "(send it again to stop at once, without saving)", signal.Signals(signum).name)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
