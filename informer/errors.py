"""User-facing errors: one clear paragraph, exit code 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

USER_ERROR_EXIT_CODE = 2

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem with the user's input (data, config, checkpoint) rather than a bug in informer.

    The message names the problem and the fix; entry points print it without a traceback and exit 2.
    """


class DataError(UserError):
    """The CSV or data directory cannot be used as it is."""


class TrainingDiverged(UserError):
    """The loss, the gradients or the validation loss became NaN or infinite during training."""


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, foreign, corrupt or from an incompatible version."""


def report_user_errors(func: F) -> F:
    """Decorator for script entry points: print UserError as ``error: ...`` and exit with code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT_CODE)

    return wrapper  # type: ignore[return-value]
