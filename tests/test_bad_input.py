"""Malformed input to the real command-line tools: a message that names the problem, no traceback, a
non-zero exit, and nothing changed on disk.

Each case runs scripts/train.py, scripts/evaluate.py or scripts/forecast.py in a subprocess (Hydra's own
error reporting included: HYDRA_FULL_ERROR is unset) from an empty working directory, with its output
going to a directory that already holds an earlier run's files. Afterwards the hashes of every file in
both directories must be unchanged and no file may have appeared.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from test_checkpoint import _Evil, damaged_checkpoint
from training_helpers import EVALUATE_SCRIPT, REPO, TINY_MODEL, TRAIN_SCRIPT, tiny_run

FORECAST_SCRIPT = REPO / "scripts" / "forecast.py"
ROWS = 400  # custom CSVs: 280 / 40 / 80 rows for train / val / test


@dataclass(frozen=True)
class Case:
    id: str
    script: Path
    args: Callable[[Path], list[str]]  # work folder (holds the bad inputs) -> command-line arguments
    words: tuple[str, ...]  # the message must contain each of these


# -- inputs ------------------------------------------------------------------------------------------
def _frame(etth1_csv: Path) -> pd.DataFrame:
    return pd.read_csv(etth1_csv, nrows=ROWS, dtype=str, keep_default_na=False)


def _with_cell(df: pd.DataFrame, row: int, column: str, value: str) -> pd.DataFrame:
    out = df.copy()
    out.loc[row, column] = value
    return out


CSV_DEFECTS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame | bytes], tuple[str, ...]]] = {
    "gap": (lambda df: df.drop(index=100), ("line 102", "gap in the series")),
    "duplicate-timestamp": (lambda df: _with_cell(df, 101, "date", df.loc[100, "date"]),
                            ("duplicate timestamp", "lines 102 and 103")),
    "out-of-order": (lambda df: df.iloc[[*range(100), 101, 100, *range(102, ROWS)]],
                     ("out of order", "line 103")),
    "nan-value": (lambda df: _with_cell(df, 50, "OT", "NaN"), ("line 52", "'OT'")),
    "empty-cell": (lambda df: _with_cell(df, 60, "HUFL", ""), ("line 62", "'HUFL'", "empty")),
    "non-numeric-cell": (lambda df: _with_cell(df, 70, "HULL", "abc"), ("line 72", "'HULL'", "'abc'")),
    "unparseable-date": (lambda df: _with_cell(df, 80, "date", "2016-13-45 99:00"),
                         ("line 82", "2016-13-45")),
    "no-date-column": (lambda df: df.rename(columns={"date": "time"}), ("no date column 'date'",)),
    "missing-target": (lambda df: df.drop(columns=["OT"]), ("no target column 'OT'",)),
    "too-few-rows": (lambda df: df.head(20), ("20 rows", "seq_len")),
    "empty-file": (lambda df: b"", ("empty",)),
    "header-only": (lambda df: b"date,HUFL,HULL,MUFL,MULL,LUFL,LULL,OT\n", ("no data rows",)),
    "binary-garbage": (lambda df: bytes(range(256)) * 8, ("binary",)),
    "wrong-delimiter": (lambda df: df.to_csv(index=False, sep=";").encode(), ("semicolon",)),
}


def _train(*extra: str) -> Callable[[Path], list[str]]:
    def args(work: Path) -> list[str]:
        tiny = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
        return ["dataset=ETTh1", *tiny, "train.epochs=1", "train.limit_train_batches=2", "train.threads=1",
                *(e.format(work=work) for e in extra)]
    return args


def _custom(name: str) -> Callable[[Path], list[str]]:
    return _train("dataset=custom", f"dataset.path={{work}}/{name}.csv")


CONFIG_CASES = [
    Case("config-unknown-dataset", TRAIN_SCRIPT, _train("dataset=ETTh9"), ("dataset", "ETTh9")),
    Case("config-unknown-key", TRAIN_SCRIPT, _train("train.epocs=2"), ("epocs", "not in")),
    Case("config-wrong-type", TRAIN_SCRIPT, _train("train.epochs=abc"), ("train.epochs", "abc")),
    Case("config-label-len-exceeds-seq-len", TRAIN_SCRIPT, _train("model.label_len=48"),
         ("model.label_len (48)", "model.seq_len (24)")),
    Case("config-d-model-not-divisible", TRAIN_SCRIPT, _train("model.d_model=30", "model.n_heads=4"),
         ("model.d_model (30)", "divisible", "model.n_heads (4)")),
    Case("config-pred-len-zero", TRAIN_SCRIPT, _train("model.pred_len=0"), ("model.pred_len", "positive")),
    Case("config-missing-data-file", TRAIN_SCRIPT, _train("dataset=custom", "dataset.path={work}/nope.csv"),
         ("nope.csv", "does not exist")),
    Case("config-missing-resume-run", TRAIN_SCRIPT, _train("train.resume={work}/no_such_run"),
         ("train.resume", "no last.pt")),
]


def _ckpt(script: Path, kind: str) -> Case:
    def args(work: Path) -> list[str]:
        path = f"checkpoint={work}/{kind}.pt"
        if script == EVALUATE_SCRIPT:
            return [path, "output={out}/metrics.json"]
        return [path, "output={out}/forecast.csv"]
    return Case(f"checkpoint-{kind}-{script.stem}", script, args, ())


CHECKPOINT_CASES = [
    _ckpt(EVALUATE_SCRIPT, "truncated-10%"),
    _ckpt(FORECAST_SCRIPT, "truncated-50%"),
    _ckpt(EVALUATE_SCRIPT, "truncated-99%"),
    _ckpt(FORECAST_SCRIPT, "byte-flipped-weights"),
    _ckpt(EVALUATE_SCRIPT, "empty"),
    _ckpt(FORECAST_SCRIPT, "foreign-png"),
    _ckpt(EVALUATE_SCRIPT, "weights-vs-model-args"),
    _ckpt(FORECAST_SCRIPT, "pickle-payload"),
    Case("checkpoint-truncated-50%-train", TRAIN_SCRIPT, _train("train.resume={work}/truncated-50%.pt"),
         ("truncated or corrupt", "truncated-50%.pt")),
]
CHECKPOINT_WORDS = {"pickle-payload": ("refused by the safe loader", "pickle-payload.pt")}

CSV_CASES = [Case(f"csv-{name}", TRAIN_SCRIPT, _custom(name), words)
             for name, (_, words) in CSV_DEFECTS.items()]
CASES = [*CSV_CASES, *CONFIG_CASES, *CHECKPOINT_CASES]


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(etth1_csv: Path, ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bad inputs, all in one folder."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    base = _frame(etth1_csv)
    for name, (make, _) in CSV_DEFECTS.items():
        made = make(base)
        path = folder / f"{name}.csv"
        if isinstance(made, bytes):
            path.write_bytes(made)
        else:
            made.to_csv(path, index=False)
    good = tiny_run(ett_dir, tmp_path_factory.getbasetemp())[0] / "checkpoints" / "best.pt"
    for case in CHECKPOINT_CASES:
        kind = case.id.removeprefix("checkpoint-").rsplit("-", 1)[0]
        if kind == "pickle-payload":
            (folder / f"{kind}.pt").write_bytes(pickle.dumps(_Evil(folder / "pwned")))
        else:
            damaged_checkpoint(kind, good, folder)
    return folder


def _prepopulate(folder: Path) -> None:
    """An earlier run's files: a refused command must leave every one of them as it was."""
    for name, content in {".hydra/config.yaml": "earlier: run\n", ".hydra/overrides.yaml": "- x=1\n",
                          "train.log": "earlier log\n", "checkpoints/last.pt": "earlier checkpoint",
                          "checkpoints/best.pt": "earlier best", "metrics.json": "{}\n",
                          "tb/events.out.tfevents.0": "events"}.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def _snapshot(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for folder in folders for p in sorted(folder.rglob("*"))}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    return env


# -- the suite ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, work: Path, ett_dir: Path, tmp_path: Path) -> None:
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    _prepopulate(out)
    args = [a.replace("{out}", str(out)) for a in case.args(work)]
    if case.script == TRAIN_SCRIPT:
        args += [f"paths.data_dir={ett_dir}", f"hydra.run.dir={out}"]
    before = _snapshot(cwd, out)

    proc = subprocess.run([sys.executable, str(case.script), *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    kind = case.id.removeprefix("checkpoint-").rsplit("-", 1)[0]
    words = case.words or CHECKPOINT_WORDS.get(kind) or (damaged_kind_phrase(kind), f"{kind}.pt")
    for word in words:
        assert word in proc.stderr, (word, proc.stderr[-2000:])
    if case in CHECKPOINT_CASES:  # one line naming the file and the problem
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and f"{kind}.pt" in lines[0], lines
    assert _snapshot(cwd, out) == before  # nothing written, changed or created
    assert not (work / "pwned").exists()


def damaged_kind_phrase(kind: str) -> str:
    from test_checkpoint import DAMAGE

    return DAMAGE[kind][1]


def test_hydra_errors_print_no_traceback_by_default() -> None:
    assert "HYDRA_FULL_ERROR" not in _env()


def test_refused_command_leaves_no_empty_run_folder(ett_dir: Path, tmp_path: Path) -> None:
    cwd, out = tmp_path / "cwd", tmp_path / "new" / "run"
    cwd.mkdir()
    args = [*_train()(tmp_path), f"paths.data_dir={ett_dir}", f"hydra.run.dir={out}", "model.attn=sparse"]
    proc = subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "model.attn" in proc.stderr
    assert not out.exists()  # Hydra made it for this command; the refusal removes it again
    assert list(cwd.iterdir()) == []


def test_successful_run_writes_only_into_its_run_directory(ett_dir: Path, tmp_path: Path) -> None:
    cwd, out = tmp_path / "cwd", tmp_path / "elsewhere" / "run"
    cwd.mkdir()
    args = [*_train()(tmp_path), f"paths.data_dir={ett_dir}", f"hydra.run.dir={out}", "train.plot_windows=0",
            "train.eval_batch_size=512"]
    proc = subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(cwd.iterdir()) == []  # no stray outputs/ or logs in the working directory
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["run"]
    assert {p.name for p in out.iterdir()} == {".hydra", "checkpoints", "metrics.json", "tb", "train.log"}
    assert {p.name for p in (out / ".hydra").iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"best.pt", "last.pt"}
