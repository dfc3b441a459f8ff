"""Download the ETT files from the official ETDataset address, verified before they are used.

The bytes go to a temporary file in the destination folder and are renamed to ``<NAME>.csv`` only
after their sha256 matches the pinned digest, so an interrupted or corrupted download never leaves a
file that later looks valid. The rename is atomic, so concurrent downloads (one per DDP rank, say)
cannot leave a half-written file either. Where no digest is pinned the file's content (header and
row count) is checked instead. The base address can be replaced (a mirror, or a local test server)
with the ``base_url`` argument or the ``INFORMER_ETT_BASE_URL`` environment variable.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from informer.config import ETT_NAMES
from informer.errors import DataError

log = logging.getLogger(__name__)

ETT_BASE_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small"
BASE_URL_ENV = "INFORMER_ETT_BASE_URL"

# sha256 of the files at ETT_BASE_URL. ETTh1/ETTh2 were computed from the copies shipped with this
# project; ETTm1/ETTm2 are the digests published by several independent public projects that download
# the same official files (they agree with each other and with ours for ETTh1/ETTh2). None means "not
# pinned": the download is then accepted on a content check only, with a warning.
ETT_SHA256: dict[str, str | None] = {
    "ETTh1": "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
    "ETTh2": "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
    "ETTm1": "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
    "ETTm2": "db973ca252c6410a30d0469b13d696cf919648d0f3fd588c60f03fdbdbadd1fd",
}
ETT_HEADER = "date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT"
ETT_ROWS = {"ETTh1": 17_420, "ETTh2": 17_420, "ETTm1": 69_680, "ETTm2": 69_680}

_CHUNK = 1 << 16


def _check_name(name: str) -> None:
    if name not in ETT_NAMES:
        raise DataError(f"{name!r} is not an ETT data set; choose one of {list(ETT_NAMES)}")


def ett_base_url(base_url: str | None = None) -> str:
    """The argument, else $INFORMER_ETT_BASE_URL, else the official ETDataset folder."""
    return (base_url or os.environ.get(BASE_URL_ENV) or ETT_BASE_URL).rstrip("/")


def ett_url(name: str, base_url: str | None = None) -> str:
    _check_name(name)
    return f"{ett_base_url(base_url)}/{name}.csv"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_ett_file(name: str, data_dir: str | Path, *, base_url: str | None = None,
                    progress: bool = True) -> Path:
    """``<data_dir>/<name>.csv``, downloaded (and verified) first if it is not there."""
    path = Path(data_dir) / f"{name}.csv"
    if path.is_file():
        return path
    return download_ett(name, data_dir, base_url=base_url, progress=progress)


def download_ett(name: str, data_dir: str | Path, *, base_url: str | None = None,
                 progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch ``<name>.csv`` into ``data_dir`` (replacing any existing copy) and return its path."""
    url = ett_url(name, base_url)
    directory = Path(data_dir)
    final = directory / f"{name}.csv"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data folder {directory} for {name}.csv ({exc}); set "
                        "paths.data_dir or INFORMER_DATA_DIR to a writable folder") from exc
    for stale in directory.glob(f".{name}.*.csv.part"):  # left by a download that was killed
        stale.unlink(missing_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".csv.part", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            actual = _fetch(url, out, name, progress, timeout, final)
        _verify(name, tmp, actual, url)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful rename
    log.info("downloaded %s to %s (sha256 %s)", url, final, actual)
    return final


def _fetch(url: str, out, name: str, progress: bool, timeout: float, final: Path) -> str:
    """Stream ``url`` into ``out``, hashing as it goes; return the hex sha256."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "informer-data-download"})
    log.info("downloading %s to %s", url, final)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"{name}.csv", disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        state = "is missing from" if not final.exists() else "could not be refreshed in"
        raise DataError(
            f"{final.name} {state} {final.parent} and downloading it from {url} failed "
            f"({reason}). Download it by hand and place it at {final}, or point paths.data_dir (or the "
            "INFORMER_DATA_DIR environment variable) at a folder that already holds it"
        ) from exc
    return digest.hexdigest()


def _verify(name: str, tmp: Path, actual: str, url: str) -> None:
    expected = ETT_SHA256.get(name)
    if expected is not None:
        if actual != expected:
            raise DataError(
                f"the download of {name}.csv from {url} is corrupt or not the official file: sha256 "
                f"expected {expected}, actual {actual}. The file was discarded; try again, or place a "
                "verified copy in the data folder by hand"
            )
        return
    log.warning("no sha256 is pinned for %s.csv; accepting the download from %s on a content check "
                "only (sha256 %s)", name, url, actual)
    with tmp.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline().strip()
        rows = sum(1 for line in handle if line.strip())
    if header != ETT_HEADER or rows != ETT_ROWS[name]:
        raise DataError(
            f"the download of {name}.csv from {url} does not look like the ETT file: header {header[:80]!r} "
            f"with {rows} rows, expected {ETT_HEADER!r} with {ETT_ROWS[name]} rows. The file was "
            "discarded; place a verified copy in the data folder by hand"
        )
