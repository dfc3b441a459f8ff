"""ETT download against a real HTTP server on 127.0.0.1: checksum, corruption, errors, no leftovers."""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from informer.config import DatasetConfig
from informer.data import download, load_data_bundle
from informer.data.download import (
    BASE_URL_ENV,
    ETT_SHA256,
    download_ett,
    ensure_ett_file,
    ett_url,
    sha256_file,
)
from informer.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[1]


class _Files(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server(etth1_csv: Path) -> Iterator[str]:
    good = etth1_csv.read_bytes()
    corrupt = bytearray(good)
    corrupt[1000] = ord("9") if corrupt[1000] != ord("9") else ord("8")  # one altered digit
    _Files.files = {"/ok/ETTh1.csv": good, "/bad/ETTh1.csv": bytes(corrupt),
                    "/short/ETTh1.csv": good[: len(good) // 2]}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ok"


def test_pinned_digests_and_official_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(ETT_SHA256) == {"ETTh1", "ETTh2", "ETTm1", "ETTm2"}
    for digest in ETT_SHA256.values():
        assert digest is not None and len(digest) == 64 and int(digest, 16) >= 0
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    assert ett_url("ETTm2") == "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTm2.csv"


def test_download_fetches_and_verifies(server: str, etth1_csv: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = download_ett("ETTh1", tmp_path / "data", base_url=f"{server}/ok", progress=True)
    assert "ETTh1.csv" in capsys.readouterr().err  # the tqdm progress bar
    assert path == tmp_path / "data" / "ETTh1.csv"
    assert sha256_file(path) == ETT_SHA256["ETTh1"]
    assert path.read_bytes() == etth1_csv.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["ETTh1.csv"]  # no temporary file left


def test_partial_file_of_a_killed_download_is_removed(server: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / ".ETTh1.abc123.csv.part").write_bytes(b"date,HUFL\n2016-07-01")  # as a SIGKILL leaves it
    download_ett("ETTh1", data, base_url=f"{server}/ok", progress=False)
    assert sorted(p.name for p in data.iterdir()) == ["ETTh1.csv"]


def test_base_url_from_environment(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, f"{server}/ok/")
    assert ett_url("ETTh1") == f"{server}/ok/ETTh1.csv"
    path = ensure_ett_file("ETTh1", tmp_path, progress=False)
    assert sha256_file(path) == ETT_SHA256["ETTh1"]


def test_corrupted_download_is_discarded(server: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        download_ett("ETTh1", tmp_path, base_url=f"{server}/bad", progress=False)
    message = str(info.value)
    assert ETT_SHA256["ETTh1"] in message and "expected" in message and "actual" in message
    actual = message.split("actual ")[1].split(".")[0]
    assert len(actual) == 64 and actual != ETT_SHA256["ETTh1"]
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temporary file


def test_network_error_explains_the_fix(tmp_path: Path) -> None:
    url = closed_port_url()
    with pytest.raises(DataError) as info:
        download_ett("ETTh1", tmp_path, base_url=url, progress=False)
    message = str(info.value)
    assert "missing" in message and f"{url}/ETTh1.csv" in message
    assert "INFORMER_DATA_DIR" in message and "paths.data_dir" in message and "by hand" in message
    assert list(tmp_path.iterdir()) == []


def test_http_404_is_a_data_error(server: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Not Found"):
        download_ett("ETTh2", tmp_path, base_url=f"{server}/ok", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_not_downloaded(etth1_csv: Path) -> None:
    assert ensure_ett_file("ETTh1", etth1_csv.parent, base_url=closed_port_url()) == etth1_csv


def test_unpinned_digest_falls_back_to_content_check(server: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(download.ETT_SHA256, "ETTh1", None)
    with caplog.at_level(logging.WARNING, logger="informer.data.download"):
        path = download_ett("ETTh1", tmp_path / "ok", base_url=f"{server}/ok", progress=False)
    assert path.is_file() and "no sha256 is pinned" in caplog.text
    with pytest.raises(DataError, match="17420 rows"):
        download_ett("ETTh1", tmp_path / "short", base_url=f"{server}/short", progress=False)
    assert list((tmp_path / "short").iterdir()) == []


def test_load_data_bundle_downloads_missing_ett(server: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, f"{server}/ok")
    bundle = load_data_bundle(DatasetConfig(name="ETTh1", features="S"), tmp_path, 48, 24, 24, "timeF",
                              progress=False)
    assert bundle.source == tmp_path / "ETTh1.csv" and len(bundle.train) == 8640 - 48 - 24 + 1


def test_download_script(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("download_data", REPO_ROOT / "scripts" / "download_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["ETTh1", "--data-dir", str(tmp_path), "--base-url", f"{server}/ok"]
    script.main(args)
    script.main(args)  # second run: verified in place, not fetched again
    out = capsys.readouterr().out
    assert "downloaded" in out and "ok" in out
    with pytest.raises(SystemExit) as info:
        script.main(["ETTh1", "--data-dir", str(tmp_path / "x"), "--base-url", f"{server}/bad"])
    assert info.value.code == 2
