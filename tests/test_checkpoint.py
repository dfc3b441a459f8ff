"""Checkpoint files: atomic writes (exception, SIGKILL), stale temporaries, the non-finite gate during
training, and safe loading (weights-only, one-line errors for every kind of damaged or foreign file)."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import pickle
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import REPO, tiny_config, tiny_run

import informer.checkpoint as ckpt_module
import informer.training.loop as loop_module
import informer.training.state as state_module
from informer.checkpoint import (
    MIN_SAFE_TORCH,
    TMP_PREFIX,
    build_model_from_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from informer.errors import CheckpointError, UserError
from informer.training import train


def _payload(value: float = 1.0) -> dict[str, Any]:
    return {"model_config": {"d_model": 4}, "model_state": {"w": torch.full((3, 4), value)}}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _strip_format(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("format", "format_version")}


# -- atomic writes -----------------------------------------------------------------------------------
def test_exception_mid_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(_payload(1.0), tmp_path / "last.pt")
    before = _sha(path)

    def failing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(_payload(2.0), path)
    monkeypatch.undo()
    assert _sha(path) == before
    assert torch.equal(load_checkpoint(path)["model_state"]["w"], torch.ones(3, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no partial file, no temporary


_SLOW_SAVER = """
import sys, time, torch
from informer.checkpoint import save_checkpoint

def slow_save(obj, f, *args, **kwargs):
    f.write(b"PK\\x03\\x04" + b"x" * 4096)
    f.flush()
    print("writing", flush=True)
    time.sleep(120)

torch.save = slow_save
save_checkpoint({"model_config": {}, "model_state": {"w": torch.zeros(2)}}, sys.argv[1])
"""


def test_sigkill_mid_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = save_checkpoint(_payload(1.0), tmp_path / "last.pt")
    before = _sha(path)
    child = subprocess.Popen([sys.executable, "-c", _SLOW_SAVER, str(path)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
        assert len(partial) == 1 and partial[0].stat().st_size > 0  # killed while the temporary exists
    finally:
        child.kill()
        child.wait(timeout=30)
    assert _sha(path) == before
    assert torch.equal(load_checkpoint(path)["model_state"]["w"], torch.ones(3, 4))
    assert remove_stale_temporaries(tmp_path) == partial
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_training_start_removes_stale_temporaries(tmp_path: Path, ett_dir: Path) -> None:
    stale = tmp_path / "checkpoints" / f"{TMP_PREFIX}last.pt.k1ll3d"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"PK\x03\x04 partial")
    train(tiny_config(ett_dir, **{"train.epochs": 1, "train.plot_windows": 0}), output_dir=tmp_path)
    assert not stale.exists()
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(TMP_PREFIX)]
    assert f"removed {stale.name}" in (tmp_path / "train.log").read_text()


def test_saved_files_get_the_usual_permissions(tmp_path: Path) -> None:
    path = save_checkpoint(_payload(), tmp_path / "best.pt")
    assert path.stat().st_mode & 0o777 == ckpt_module.default_file_mode()


# -- nothing non-finite is ever written --------------------------------------------------------------
@pytest.mark.parametrize("where", ["model_state", "optimizer"])
def test_save_refuses_non_finite_tensors(where: str, tmp_path: Path) -> None:
    path = save_checkpoint(_payload(1.0), tmp_path / "last.pt")
    before = _sha(path)
    bad = _payload(1.0)
    if where == "model_state":
        bad["model_state"]["w"][0, 0] = float("nan")
    else:
        bad["training"] = {"optimizer": {"state": {0: {"exp_avg_sq": torch.tensor([1.0, float("inf")])}}}}
    with pytest.raises(FloatingPointError, match="non-finite values in"):
        save_checkpoint(bad, path)
    assert _sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a finite loss whose gradients are not."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


@pytest.mark.parametrize(("poison", "what"), [
    (lambda pred: pred * float("nan"), "loss"),
    (_NanGrad.apply, "gradients"),
])
def test_injected_nan_stops_training_and_keeps_the_last_good_checkpoint(
        poison: Callable[[torch.Tensor], torch.Tensor], what: str, tmp_path: Path, ett_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hashes: list[str] = []
    calls: list[int] = []
    real_save, real_forecast = state_module.save_checkpoint, loop_module.forecast

    def recording_save(payload: dict[str, Any], path: Path) -> Path:
        out = real_save(payload, path)
        hashes.append(_sha(out))
        return out

    def forecast(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:  # the loop calls it once per step
        pred, truth = real_forecast(*args)
        calls.append(1)
        return (poison(pred) if len(calls) == 5 else pred), truth

    monkeypatch.setattr(state_module, "save_checkpoint", recording_save)  # last.pt
    monkeypatch.setattr(loop_module, "forecast", forecast)
    cfg = tiny_config(ett_dir, **{"train.epochs": 1, "train.limit_train_batches": 6,
                                  "train.checkpoint_every": 2, "train.plot_windows": 0})
    with pytest.raises(UserError) as caught:
        train(cfg, output_dir=tmp_path)
    message = str(caught.value)
    assert f"diverged at epoch 1, step 5 (global step 5): the {what} became NaN" in message
    assert "learning rate" in message and "data" in message and "global step 4" in message
    last = tmp_path / "checkpoints" / "last.pt"
    assert len(hashes) == 2 and _sha(last) == hashes[-1]  # written after step 4, untouched since
    assert load_checkpoint(last)["training"]["loop"]["global_step"] == 4
    assert not (tmp_path / "checkpoints" / "best.pt").exists()


@pytest.mark.parametrize("target", ["model_state", "optimizer"])
def test_overflowed_weights_are_never_checkpointed(target: str, tmp_path: Path, ett_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Finite loss and gradients, yet the update overflowed a weight or an Adam moment: the next
    checkpoint is refused, the run stops, and the last good last.pt stays as it was."""
    real_step = loop_module.Trainer._step
    saved: list[str] = []

    def overflowing_step(self: loop_module.Trainer, batch: Any) -> float:
        loss = real_step(self, batch)
        if self.state.global_step == 3:  # this is step 4: its checkpoint (checkpoint_every=2) must fail
            param = next(self.p.model.parameters())
            with torch.no_grad():
                if target == "model_state":
                    param.view(-1)[0] = float("inf")
                else:
                    self.p.optimizer.state[param]["exp_avg_sq"].view(-1)[0] = float("inf")
        return loss

    real_save = state_module.save_checkpoint

    def recording_save(payload: dict[str, Any], path: Path) -> Path:
        out = real_save(payload, path)
        saved.append(_sha(out))
        return out

    monkeypatch.setattr(loop_module.Trainer, "_step", overflowing_step)
    monkeypatch.setattr(state_module, "save_checkpoint", recording_save)  # last.pt
    cfg = tiny_config(ett_dir, **{"train.epochs": 1, "train.limit_train_batches": 6,
                                  "train.checkpoint_every": 2, "train.plot_windows": 0})
    expected = (rf"diverged by epoch 1, global step 4: NaN or infinite values in {target}\..*"
                r"last\.pt was not written.*learning rate.*global step 2")
    with pytest.raises(UserError, match=expected):
        train(cfg, output_dir=tmp_path)
    assert len(saved) == 1 and _sha(tmp_path / "checkpoints" / "last.pt") == saved[0]


def test_learning_rate_beyond_float32_is_a_config_error(tmp_path: Path, ett_dir: Path) -> None:
    with pytest.raises(UserError, match=r"train\.learning_rate"):
        train(tiny_config(ett_dir, **{"train.learning_rate": 1e39}), output_dir=tmp_path)


# -- safe loading ------------------------------------------------------------------------------------
def _calls(attr: str, module: str) -> list[tuple[str, ast.Call]]:
    """Every ``module.attr(...)`` call in the package and the scripts, with its place."""
    found = []
    for root in ("informer", "scripts"):
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == attr and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == module):
                    found.append((f"{path.relative_to(REPO)}:{node.lineno}", node))
    return found


def test_every_torch_load_is_weights_only_with_map_location() -> None:
    calls = _calls("load", "torch")
    assert any(where.startswith("informer/checkpoint.py") for where, _ in calls)
    for where, call in calls:
        keywords = {k.arg: k.value for k in call.keywords}
        weights_only = keywords.get("weights_only")
        assert isinstance(weights_only, ast.Constant) and weights_only.value is True, where
        assert "map_location" in keywords, where
    # and nothing unpickles by another road
    assert not _calls("load", "pickle") + _calls("loads", "pickle") + _calls("Unpickler", "pickle")


class _Evil:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.sentinel}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_reduce_payload_is_refused_without_running(writer: str, tmp_path: Path) -> None:
    sentinel, evil = tmp_path / "pwned", tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"format": "informer-checkpoint", "model_state": _Evil(sentinel)}, evil)
    else:
        evil.write_bytes(pickle.dumps(_Evil(sentinel)))
    with pytest.raises(CheckpointError, match="refused by the safe loader") as caught:
        load_checkpoint(evil)
    assert str(evil) in str(caught.value) and "\n" not in str(caught.value)
    assert "weights_only=False" not in str(caught.value)
    assert not sentinel.exists()


@pytest.fixture(scope="module")
def good_checkpoint(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir, _ = tiny_run(ett_dir, tmp_path_factory.getbasetemp())
    return run_dir / "checkpoints" / "best.pt"


def _flip_in_record(raw: bytes, pick: Callable[[zipfile.ZipInfo], bool]) -> bytes:
    """Flip one byte in the middle of the data of the first zip record ``pick`` selects."""
    info = next(i for i in zipfile.ZipFile(io.BytesIO(raw)).infolist() if pick(i))
    header = info.header_offset
    start = header + 30 + int.from_bytes(raw[header + 26:header + 28], "little") + \
        int.from_bytes(raw[header + 28:header + 30], "little")
    damaged = bytearray(raw)
    damaged[start + info.compress_size // 2] ^= 0x5A
    return bytes(damaged)


def _zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return buffer.getvalue()


def _re_saved(raw: bytes, tmp: Path, change: Callable[[dict[str, Any]], None]) -> bytes:
    payload = _strip_format(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True))
    change(payload)
    return save_checkpoint(payload, tmp / "altered.pt").read_bytes()


def _wider_model(p: dict[str, Any]) -> None:
    p["model_config"]["d_model"] = 32


def _missing_weight(p: dict[str, Any]) -> None:
    p["model_state"].pop(sorted(p["model_state"])[0])


def _largest(info: zipfile.ZipInfo) -> bool:
    return "/data/" in info.filename and info.compress_size >= 1024


def _is_data_pkl(info: zipfile.ZipInfo) -> bool:
    return info.filename.endswith("data.pkl")


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
NOT_TORCH = "not a file written by torch.save"

# kind -> (how to damage the bytes of a good checkpoint, a phrase the error must contain)
DAMAGE: dict[str, tuple[Callable[[bytes, Path], bytes], str]] = {
    "truncated-10%": (lambda raw, tmp: raw[: len(raw) // 10], "truncated or corrupt"),
    "truncated-50%": (lambda raw, tmp: raw[: len(raw) // 2], "truncated or corrupt"),
    "truncated-99%": (lambda raw, tmp: raw[: len(raw) * 99 // 100], "truncated or corrupt"),
    "byte-flipped-weights": (lambda raw, tmp: _flip_in_record(raw, _largest), "checksum"),
    "byte-flipped-structure": (lambda raw, tmp: _flip_in_record(raw, _is_data_pkl), "checksum"),
    "empty": (lambda raw, tmp: b"", "empty (0 bytes)"),
    "foreign-png": (lambda raw, tmp: PNG, NOT_TORCH),
    "foreign-csv": (lambda raw, tmp: b"date,OT\n2020-01-01 00:00:00,1.0\n", NOT_TORCH),
    "foreign-zip": (lambda raw, tmp: _zip_of_text(), "cannot be loaded"),
    "bare-state-dict": (lambda raw, tmp: _bare_state_dict(), "bare state_dict"),
    "weights-vs-model-args": (lambda raw, tmp: _re_saved(raw, tmp, _wider_model),
                              "do not match the stored model arguments (size mismatch"),
    "missing-weight": (lambda raw, tmp: _re_saved(raw, tmp, _missing_weight),
                       "do not match the stored model arguments (Missing key"),
}


def _bare_state_dict() -> bytes:
    buffer = io.BytesIO()
    torch.save({"layer.weight": torch.zeros(2, 2)}, buffer)
    return buffer.getvalue()


def damaged_checkpoint(kind: str, good: Path, tmp: Path) -> tuple[Path, str]:
    """Write the ``kind`` of damaged file into ``tmp``; return it and a phrase its error must contain."""
    make, phrase = DAMAGE[kind]
    path = tmp / f"{kind}.pt"
    path.write_bytes(make(good.read_bytes(), tmp))
    return path, phrase


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_or_foreign_file_gives_a_one_line_error(kind: str, good_checkpoint: Path,
                                                        tmp_path: Path) -> None:
    path, phrase = damaged_checkpoint(kind, good_checkpoint, tmp_path)
    with pytest.raises(CheckpointError) as caught:
        build_model_from_checkpoint(load_checkpoint(path), path)
    message = str(caught.value)
    assert phrase in message and str(path) in message
    assert "\n" not in message and len(message) < 600


def test_intact_checkpoint_loads(good_checkpoint: Path) -> None:
    model = build_model_from_checkpoint(load_checkpoint(good_checkpoint), good_checkpoint)
    assert not model.training


def test_validation_field_is_what_the_forecast_side_reads(good_checkpoint: Path) -> None:
    """The contract with informer/forecast/skill.py: plain floats, skill = 1 - mse / seasonal_naive_mse,
    documented in the layout."""
    from informer.forecast.skill import validation_skill

    payload = load_checkpoint(good_checkpoint)
    record = payload["validation"]
    assert {k: type(v) for k, v in record.items()} == {"mse": float, "seasonal_naive_mse": float,
                                                        "skill": float}
    assert validation_skill(payload) == record["skill"] == 1 - record["mse"] / record["seasonal_naive_mse"]
    layout = ckpt_module.__doc__ or ""
    assert 'validation        {"mse": float, "seasonal_naive_mse": float, "skill": float}' in layout
    assert "mase_scale" in layout and len(payload["data"]["mase_scale"]) == len(payload["data"]["columns"])


def test_old_torch_is_refused(good_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    with pytest.raises(CheckpointError, match=r"torch 2\.9\.1\+cpu has known unpickler vulnerabilities.*"
                                              r"upgrade to torch >= 2\.10"):
        load_checkpoint(good_checkpoint)
    monkeypatch.setattr(torch, "__version__", "2.10.0")
    assert load_checkpoint(good_checkpoint)["format"] == "informer-checkpoint"


def test_declared_minimum_torch_matches_the_loader() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirement = next(r for r in project["dependencies"] if re.match(r"torch\b", r))
    assert requirement.replace(" ", "") == "torch>=" + ".".join(map(str, MIN_SAFE_TORCH))
