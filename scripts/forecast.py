"""Forecast the steps after a series ends from a trained checkpoint; see ``--help``."""

from __future__ import annotations

import sys

from informer.errors import report_user_errors
from informer.forecast.cli import HELP, parse_options, run_forecast


@report_user_errors
def main(argv: list[str]) -> None:
    if any(arg in {"-h", "--help", "help"} for arg in argv):
        print(HELP)
        return
    run_forecast(parse_options(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
