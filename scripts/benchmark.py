"""Measure training, attention, long-input, inference and epoch speed; write results.json and results.md.

    python scripts/benchmark.py                      # full run (about 20 minutes on 2 cores)
    python scripts/benchmark.py --quick              # same sizes, fewer repeats, no long-input section
    python scripts/benchmark.py --sections train_step attention_scaling --out /tmp/bench

The official Informer training step is timed in the same run by
../shared/reference/time_official_step.py (beside the repository); --official or
$INFORMER_OFFICIAL_STEP_SCRIPT points elsewhere. Without it the comparisons say "not available".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from informer.errors import UserError, report_user_errors

REPO_ROOT = Path(__file__).resolve().parents[1]
# the suite lives in benchmarks/ at the repository root and is not installed with the package
sys.path.insert(0, str(REPO_ROOT))


def parse_args(argv: list[str]) -> argparse.Namespace:
    from benchmarks.official import DEFAULT_SCRIPT, ENV_VAR
    from benchmarks.runner import ALIASES, SECTIONS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, two attention lengths, "
                        "no long-input section (a few minutes)")
    parser.add_argument("--tiny", action="store_true", help="quick run with a toy model (d_model 32): checks "
                        "that every section works in well under a minute; its numbers mean nothing")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks",
                        help="folder for results.json and results.md (default: benchmarks/)")
    parser.add_argument("--sections", nargs="+", metavar="NAME",
                        help=f"run only these: {', '.join(SECTIONS)} (aliases: {', '.join(ALIASES)})")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--official", type=Path, metavar="PATH",
                        help=f"the script that times the official training step (default: ${ENV_VAR}, "
                             f"else {DEFAULT_SCRIPT})")
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    return args


@report_user_errors
def main(argv: list[str]) -> None:
    args = parse_args(argv)
    from benchmarks.runner import run_benchmark

    try:
        run_benchmark(args.out, quick=args.quick or args.tiny, tiny=args.tiny, sections=args.sections,
                      threads=args.threads, official=args.official)
    except ValueError as exc:  # an unknown section name
        raise UserError(str(exc)) from None


if __name__ == "__main__":
    main(sys.argv[1:])
