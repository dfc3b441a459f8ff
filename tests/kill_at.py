"""``python tests/kill_at.py <point>:<n>[:<SIGNAL>] <scripts/train.py arguments>``: scripts/train.py with a
:class:`training_helpers.KillAt` callback, so a test can interrupt a real command-line run at a
deterministic place (kill -9 at a step, during validation, at an epoch end; SIGTERM)."""

from __future__ import annotations

import functools
import runpy
import sys

from training_helpers import TRAIN_SCRIPT, KillAt

from informer.training import command, run

if __name__ == "__main__":
    spec, *args = sys.argv[1:]
    # the command calls train() through this name; the callback rides on train()'s own parameter
    command.train = functools.partial(run.train, callbacks=[KillAt(spec)])
    sys.argv = [str(TRAIN_SCRIPT), *args]
    runpy.run_path(str(TRAIN_SCRIPT), run_name="__main__")
