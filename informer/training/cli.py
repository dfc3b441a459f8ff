"""Glue between ``scripts/train.py`` and Hydra: where a resumed run goes, when the run record is written,
and the message that tells how to continue an interrupted run.

* ``train.resume=<run dir>`` continues in that directory: unless ``hydra.run.dir`` is given, it is pinned
  to the run being resumed (its checkpoints, train.log and TensorBoard events carry on).
* Hydra normally writes ``.hydra/{config,hydra,overrides}.yaml`` before the task starts, so a command
  refused for bad input would still overwrite the record of an existing run directory. The script turns
  that off (``hydra.output_subdir=null``) and :func:`hydra_record_writer` writes the same three files
  once training has accepted every input; in a multirun it writes them at job start, as Hydra would
  (the sweep summary lists failed jobs by these files).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from informer.training.interrupt import TrainingInterrupted

RECORD_DIR = ".hydra"  # Hydra's default output_subdir


def _value(arg: str, key: str) -> str | None:
    name, sep, value = arg.partition("=")
    if not sep or name.lstrip("+~") != key:
        return None
    return value.strip().strip("'\"")


def _has(argv: list[str], key: str) -> bool:
    return any(_value(arg, key) is not None for arg in argv)


def _quoted(path: Path | str) -> str:
    """A Hydra override value: bare when Hydra's grammar allows it, else single-quoted."""
    text = str(path)
    if text and all(c.isalnum() or c in "_/.:~+-" for c in text):
        return text
    return "'" + text.replace("'", "\\'") + "'"


def extra_overrides(argv: list[str]) -> tuple[list[str], bool]:
    """Overrides to append to the user's ones, and whether the run record is deferred to the task."""
    extra: list[str] = []
    resume = next((v for v in map(lambda a: _value(a, "train.resume"), argv) if v), None)
    if resume and not _has(argv, "hydra.run.dir"):
        from informer.training.artifacts import run_dir_of

        path = Path(resume).expanduser().resolve()
        candidate = path if path.suffix == ".pt" else path / "checkpoints" / "last.pt"
        run_dir = run_dir_of(candidate) if candidate.is_file() else None
        if run_dir is not None:
            extra.append(f"hydra.run.dir={_quoted(run_dir)}")
    deferred = not _has(argv, "hydra.output_subdir")
    if deferred:
        extra.append("hydra.output_subdir=null")
    return extra, deferred


def save_hydra_record(cfg: DictConfig, run_dir: Path) -> None:
    """Write ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` as Hydra itself would."""
    from hydra.core.hydra_config import HydraConfig

    hydra_node = OmegaConf.to_container(HydraConfig.get(), resolve=False)
    hydra_node["output_subdir"] = RECORD_DIR  # type: ignore[index]  # what Hydra would have recorded
    files = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hydra_node}),
             "overrides.yaml": HydraConfig.get().overrides.task}
    target = run_dir / RECORD_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name, node in files.items():
        tmp = target / f".tmp-{name}"
        tmp.write_text(OmegaConf.to_yaml(node), encoding="utf-8")
        os.replace(tmp, target / name)


def fresh_run_dir() -> Path | None:
    """The single run's directory if Hydra made it for this command: nothing in it but an empty log.

    Called at task start; a command refused for bad input then removes it again with
    :func:`discard_run_dir` instead of leaving an empty run folder behind.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN or os.environ.get("RANK", "0") != "0":
        return None  # a sweep lists failed jobs by their folders; other ranks share rank 0's folder
    run_dir = Path(hydra_cfg.runtime.output_dir)
    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if len(entries) == 1 and entries[0].suffix == ".log" and entries[0].stat().st_size == 0:
        return run_dir
    return None


def discard_run_dir(run_dir: Path) -> None:
    """Remove a run directory made by :func:`fresh_run_dir`'s command if it still holds only its log."""
    import logging

    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if len(entries) != 1 or entries[0].suffix != ".log":
        return  # something else was written after all: keep everything
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir:
            logging.getLogger().removeHandler(handler)
            handler.close()
    entries[0].unlink()
    run_dir.rmdir()


def hydra_record_writer(cfg: DictConfig, deferred: bool) -> Callable[[Path], None] | None:
    """What train() should call before its first write (None: nothing to do)."""
    if not deferred:
        return None
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        if os.environ.get("RANK", "0") == "0":
            save_hydra_record(cfg, Path(hydra_cfg.runtime.output_dir))
        return None
    return lambda run_dir: save_hydra_record(cfg, run_dir)


def _python() -> str:
    """``python`` when that is the interpreter on PATH, else the interpreter's full path."""
    on_path = shutil.which("python")
    if on_path and Path(on_path).resolve() == Path(sys.executable).resolve():
        return "python"
    return sys.executable


def resume_command(run_dir: str, script: str, task_overrides: list[str]) -> str:
    """The command line that continues an interrupted run: the same overrides plus train.resume."""
    keep = [o for o in task_overrides if _value(o, "train.resume") is None]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = [f"torchrun --standalone --nproc_per_node={world}"] if world > 1 else [_python()]
    return " ".join([*launcher, shlex.quote(script), *map(shlex.quote, keep),
                     shlex.quote(f"train.resume={_quoted(run_dir)}")])


def interrupted_message(exc: TrainingInterrupted, script: str) -> str:
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return (f"{exc}\nThe run is incomplete; continue it where it stopped with:\n"
            f"  {resume_command(exc.run_dir, script, overrides)}")
