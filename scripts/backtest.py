"""Rolling-origin backtest of a trained checkpoint; see ``--help``."""

from __future__ import annotations

import sys

from informer.errors import report_user_errors
from informer.forecast.backtest_cli import HELP, parse_backtest_options, run_backtest_command


@report_user_errors
def main(argv: list[str]) -> None:
    if any(arg in {"-h", "--help", "help"} for arg in argv):
        print(HELP)
        return
    run_backtest_command(parse_backtest_options(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
