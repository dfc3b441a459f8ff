"""Download the ETT data sets into the data folder, each verified against its pinned sha256.

    python scripts/download_data.py                      # all four into $INFORMER_DATA_DIR or data/ETT-small
    python scripts/download_data.py ETTh1 --data-dir /data/ETT-small
    python scripts/download_data.py --force              # fetch again even where the file exists

Files already present are checked against the pinned digest and left alone.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from informer.config import ETT_NAMES, default_data_dir
from informer.data.download import BASE_URL_ENV, ETT_SHA256, download_ett, sha256_file
from informer.errors import DataError, report_user_errors


def _ett_name(value: str) -> str:
    if value not in ETT_NAMES:
        choices = ", ".join(ETT_NAMES)
        raise argparse.ArgumentTypeError(f"{value!r} is not an ETT data set; choose from {choices}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Download the ETT data sets (checksum-verified).")
    parser.add_argument("names", nargs="*", type=_ett_name, default=list(ETT_NAMES),
                        metavar="NAME", help=f"data sets to fetch (default: all of {', '.join(ETT_NAMES)})")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data_dir()),
                        help="destination folder, i.e. paths.data_dir (default: $INFORMER_DATA_DIR "
                             "or data/ETT-small)")
    parser.add_argument("--base-url", default=None,
                        help=f"mirror of the ETT-small folder (default: ${BASE_URL_ENV} or the official one)")
    parser.add_argument("--force", action="store_true", help="download again even if the file exists")
    return parser.parse_args(argv)


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    for name in args.names:
        path = args.data_dir / f"{name}.csv"
        if path.is_file() and not args.force:
            actual, expected = sha256_file(path), ETT_SHA256[name]
            if expected is not None and actual != expected:
                raise DataError(f"{path} exists but its sha256 is {actual}, expected {expected}; "
                                "delete it or rerun with --force to download it again")
            print(f"ok          {path}")
            continue
        download_ett(name, args.data_dir, base_url=args.base_url)
        print(f"downloaded  {path}")


if __name__ == "__main__":
    main()
