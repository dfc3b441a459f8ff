"""``train(cfg) -> float``: assemble a run, train it, calibrate and evaluate the best checkpoint once, write
metrics.json.

Assembly goes config -> run directory -> data -> model -> optimizer (-> state from last.pt) -> outputs.
Everything the user supplied (config, data, model settings, the checkpoint to resume from) is checked
before the first file is written to the run directory, so a run refused for bad input leaves an
existing run directory as it was. The :class:`~informer.training.loop.Trainer` then owns stepping,
validation and checkpoints; this module fits the conformal intervals (``forecast.intervals``) of
``best.pt`` on the validation split and stores them in it, scores it on every validation and test window
and writes ``metrics.json`` and TensorBoard's hparams entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import logging.handlers
import os
import shutil
import signal
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from informer.checkpoint import load_checkpoint, remove_stale_temporaries, save_checkpoint
from informer.config import TrainAppConfig, check_train_config, model_config, resolve_path, to_app_config
from informer.data import DataBundle, load_data_bundle
from informer.errors import UserError
from informer.training.calibration import calibrate
from informer.training.distributed import (
    DistContext,
    amp_dtype,
    any_process,
    autocast_factory,
    barrier,
    broadcast_string,
    check_replicas,
    cleanup_distributed,
    init_distributed,
    resolve_device,
    sync_batch_norm,
    unwrap,
)
from informer.training.evaluate import METRIC_NOTES, evaluate_split, forecast_figure, plot_indices, write_json
from informer.training.loop import Callback, RunParts, Trainer, steps_per_epoch
from informer.training.registry import headline, run_summary
from informer.training.signals import StopRequest, TrainingInterrupted
from informer.training.state import TrainingState, seed_everything
from informer.training.tensorboard import RunWriter

log = logging.getLogger(__name__)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def train(cfg: DictConfig | TrainAppConfig | dict[str, Any], output_dir: str | Path | None = None,
          callbacks: Sequence[Callback] = ()) -> float:
    """Train one model and return its best validation loss.

    Outputs go to ``output_dir`` when given, else to Hydra's run directory, else to
    :func:`choose_run_dir`'s choice. Under torchrun every process calls this; rank 0 alone writes.
    A SIGINT/SIGTERM stops the run at the next step boundary after writing ``last.pt`` and raises
    :class:`~informer.training.signals.TrainingInterrupted`.
    """
    app = to_app_config(cfg)
    was_initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed()
    run_log = _RunLog(ctx.is_main)
    try:
        if _hydra_mode() == "MULTIRUN" and ctx.is_main:
            # the sweep summary lists every job by its record, refused ones included
            _write_hydra_record(cfg, _hydra_output_dir())
        check_train_config(app, ctx.world_size)
        return _train(app, cfg, _output_dir(app, output_dir), ctx, run_log, callbacks)
    finally:
        run_log.close()
        if not was_initialized:
            cleanup_distributed()


# ------------------------------------------------------------------------------------------ run directory
def choose_run_dir(default: str | Path, resume: str | None = None) -> Path:
    """The run directory: the resumed run's own directory when ``resume`` names one (its checkpoints,
    train.log and TensorBoard run carry on), else ``default``; under torchrun rank 0's choice, on every
    process. configs/train.yaml names Hydra's run directory through this (``${informer.run_dir:...}``), so
    all processes agree on it before Hydra creates it."""
    chosen = Path(default)
    if resume:
        with contextlib.suppress(UserError):  # train() reports a missing checkpoint before writing anything
            chosen = run_dir_of(locate_resume(resolve_path(resume))) or chosen
    init_distributed()
    return Path(broadcast_string(str(chosen)))


def locate_resume(path: Path) -> Path:
    """``train.resume`` may name a run directory, its checkpoints/ folder or a last.pt file."""
    candidates = [path] if path.suffix == ".pt" else [path / "checkpoints" / "last.pt", path / "last.pt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"train.resume={path}: no last.pt found (looked for "
                    f"{', '.join(str(c) for c in candidates)}); pass a run directory of an earlier training "
                    "run or its checkpoints/last.pt")


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory holding ``<run>/checkpoints/<file>.pt``, or None for a loose file."""
    checkpoint = checkpoint.resolve()
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def _output_dir(app: TrainAppConfig, explicit: str | Path | None) -> Path:
    if explicit is not None:
        return resolve_path(explicit)
    if _hydra_mode() is not None:
        return _hydra_output_dir()
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return choose_run_dir(Path("outputs", app.dataset.name, stamp), app.train.resume).resolve()


def _hydra_mode() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().mode.name if HydraConfig.initialized() else None


def _hydra_output_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _write_hydra_record(cfg: Any, run_dir: Path) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` as Hydra writes them. configs/train.yaml turns Hydra's own
    writing off (``hydra.output_subdir: null``), which happens before the task starts and so would
    overwrite an earlier run's record even for a command refused for bad input."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return  # outside Hydra, or Hydra wrote it itself (hydra.output_subdir given)
    hydra_node = OmegaConf.to_container(HydraConfig.get(), resolve=False)
    hydra_node["output_subdir"] = ".hydra"  # type: ignore[index]  # what Hydra would have recorded
    files = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hydra_node}),
             "overrides.yaml": HydraConfig.get().overrides.task}
    target = run_dir / ".hydra"
    target.mkdir(parents=True, exist_ok=True)
    for name, node in files.items():
        tmp = target / f".tmp-{name}"
        tmp.write_text(OmegaConf.to_yaml(node), encoding="utf-8")
        os.replace(tmp, target / name)


class _RunLog:
    """The ``informer`` loggers' output for one run: the console outside Hydra, and train.log in the run
    directory. Records are held back until :meth:`open`, once every input is accepted, so a refused
    command leaves no log file behind while train.log still starts with the first record."""

    def __init__(self, is_main: bool) -> None:
        self.package = logging.getLogger("informer")
        self.package.setLevel(logging.INFO if is_main else logging.WARNING)
        self.handlers: list[logging.Handler] = []
        if is_main:
            self._add(logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1))
            if not logging.getLogger().handlers:  # outside Hydra: also show progress on the console
                self._add(logging.StreamHandler())

    def _add(self, handler: logging.Handler) -> None:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.package.addHandler(handler)
        self.handlers.append(handler)

    def open(self, path: Path) -> None:
        for pending in [h for h in self.handlers if isinstance(h, logging.handlers.MemoryHandler)]:
            file = logging.FileHandler(path)
            self._add(file)
            pending.setTarget(file)
            pending.flush()
            self.package.removeHandler(pending)

    def close(self) -> None:
        for handler in self.handlers:
            self.package.removeHandler(handler)
            handler.close()


# ------------------------------------------------------------------------------------------ assembly
def _train(app: TrainAppConfig, cfg: Any, out: Path, ctx: DistContext, run_log: _RunLog,
           callbacks: Sequence[Callback]) -> float:
    tr = app.train
    if tr.threads:
        torch.set_num_threads(tr.threads)
    device = resolve_device(tr.device, ctx.local_rank)
    bundle = _load_data(app, ctx)
    model_cfg = model_config(app.model, bundle.features, bundle.n_columns, bundle.freq,
                             n_targets=bundle.c_out, n_known_future=len(bundle.known_future))
    steps_per_epoch(tr, len(bundle.train), ctx.world_size)  # a batch larger than the data is refused now

    from informer.model import build_model

    seed_everything(tr.seed)  # identical initial weights on every process
    try:
        model = build_model(model_cfg)
    except ValueError as exc:  # the model's own checks name the field
        raise UserError(f"invalid model configuration: {exc}") from None
    model = sync_batch_norm(model.to(device), device)
    # fused: one vectorised update instead of ~10 small kernels per parameter tensor (benchmarks/levers.md)
    optimizer = torch.optim.Adam(model.parameters(), lr=tr.learning_rate, weight_decay=tr.weight_decay,
                                 fused=True)
    dtype = amp_dtype(tr.amp, tr.amp_dtype, device)
    grad_scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    seed_everything(tr.seed + ctx.rank)  # per-process dropout streams
    resume = locate_resume(resolve_path(tr.resume)) if tr.resume else None
    if resume is None:
        state = TrainingState()
    else:
        state = TrainingState.load(resume, model_cfg=model_cfg, data=bundle.checkpoint_data(), model=model,
                                   optimizer=optimizer, grad_scaler=grad_scaler, train_cfg=tr,
                                   rank=ctx.rank, world_size=ctx.world_size)

    # every input is accepted: the first writes into the run directory
    if ctx.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        if _hydra_mode() == "RUN":
            _write_hydra_record(cfg, out)
        run_log.open(out / "train.log")
    log.info("run directory: %s", out)
    if ctx.is_main:
        for stale in remove_stale_temporaries(out / "checkpoints"):
            log.info("removed %s, a partial checkpoint left by an interrupted save", stale.name)
    log.info("data: %s", bundle.describe())
    log.info("model: %s, %.2fM parameters, device %s, %d process(es)", type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6, device, ctx.world_size)
    if resume is not None:
        log.info("resumed from %s at epoch %d, step %d (global step %d)", resume, state.epoch + 1,
                 state.step_in_epoch, state.global_step)
        for note in state.notes:
            log.warning("%s", note)
        best = resume.parent / "best.pt"  # resuming into another directory: early stopping refers to it
        if ctx.is_main and best.is_file() and best.resolve() != (out / "checkpoints" / "best.pt").resolve():
            shutil.copy2(best, out / "checkpoints" / "best.pt")
    barrier()

    net = torch.compile(model) if tr.compile else model
    if ctx.enabled:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    # events of steps up to the checkpoint's were on disk before it was written; later ones are dropped
    writer = RunWriter(out / "tb" if ctx.is_main else None,
                       purge_step=state.global_step + 1 if resume is not None else None)
    parts = RunParts(app=app, bundle=bundle, model_cfg=model_cfg, model=net, optimizer=optimizer,
                     grad_scaler=grad_scaler, device=device, amp_dtype=dtype, dist=ctx, writer=writer,
                     checkpoint_dir=out / "checkpoints", config=_resolved_config(app))
    try:
        with StopRequest() as stop:
            try:
                state = Trainer(parts, state, stop, callbacks).fit()
                check_replicas(model)
                metrics = _final_evaluation(parts, state, stop)
            except TrainingInterrupted as exc:
                log.warning("%s; continue with train.resume=%s", exc, exc.run_dir)
                raise
            except UserError as exc:  # the run's own log says why it ended
                log.error("error: %s", exc)
                raise
        if ctx.is_main:
            write_json(out / "metrics.json", metrics)
            writer.scalars("test", headline(metrics["test"]), state.global_step)
            writer.hparams(config=parts.config,
                           metrics={f"hparam/{k}": v for k, v in run_summary(metrics).items()})
            log.info("test (best checkpoint): %s", "  ".join(f"{k} {v:.6g}" for k, v in
                                                             headline(metrics["test"]).items()))
    finally:
        writer.close()
    return float(state.best_val_loss)


def _load_data(app: TrainAppConfig, ctx: DistContext) -> DataBundle:
    spec = app.model
    dataset_cfg = dataclasses.replace(app.dataset, path=str(resolve_path(app.dataset.path))
                                      if app.dataset.path else None)
    if not ctx.is_main:  # rank 0 reads first, so a missing ETT file is downloaded once
        barrier()
    bundle = load_data_bundle(dataset_cfg, resolve_path(app.paths.data_dir), spec.seq_len, spec.label_len,
                              spec.pred_len, spec.embed, progress=ctx.is_main)
    if ctx.is_main:
        barrier()
    return bundle


def _resolved_config(app: TrainAppConfig) -> dict[str, Any]:
    """The run config stored in checkpoints, with its paths made absolute."""
    config = dataclasses.asdict(app)
    config["paths"]["data_dir"] = str(resolve_path(app.paths.data_dir))
    if config["dataset"]["path"]:
        config["dataset"]["path"] = str(resolve_path(config["dataset"]["path"]))
    return config


def _final_evaluation(parts: RunParts, state: TrainingState, stop: StopRequest) -> dict[str, Any]:
    """Load best.pt, fit its conformal intervals on the validation split and store them in it, then score
    every validation and test window once (with the naive baselines, the skill against the seasonal
    one, and the intervals' coverage and width, whose validation figures are in-sample).

    A stop requested meanwhile is honoured between the stages: last.pt is final already, so resuming
    only repeats this evaluation."""
    barrier()  # rank 0 has finished writing best.pt
    best_path = parts.checkpoint_dir / "best.pt"
    best = load_checkpoint(best_path, map_location="cpu")
    unwrap(parts.model).load_state_dict(best["model_state"])
    tr = parts.app.train
    autocast = autocast_factory(parts.device, parts.amp_dtype)
    evaluation = {"batch_size": tr.eval_batch_size, "device": parts.device, "autocast": autocast,
                  "dist_ctx": parts.dist, "num_workers": tr.num_workers}

    def check_stop() -> None:
        if any_process(stop.requested, parts.device):
            raise TrainingInterrupted(stop.signum or signal.SIGTERM, str(parts.checkpoint_dir.parent),
                                      str(parts.checkpoint_dir / "last.pt"), "during the final evaluation")

    check_stop()
    calibration, naive_calibration = calibrate(parts.model, parts.bundle, parts.app.forecast.intervals,
                                               interval_method=parts.app.forecast.interval_method,
                                               **evaluation)
    # best.pt carries the intervals so that evaluation and forecasting need nothing else; it is rewritten
    # only when they change, so a resumed run that repeats this stage leaves the file as it was
    if parts.dist.is_main and best.get("calibration") != calibration:
        payload = {k: v for k, v in best.items() if k != "calibration"}
        save_checkpoint({**payload, "calibration": calibration} if calibration is not None else payload,
                        best_path)
    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        check_stop()
        metrics[split] = evaluate_split(parts.model, parts.bundle, split, calibration=calibration,
                                        naive_calibration=naive_calibration, **evaluation)
    if parts.dist.is_main:  # the best model's test forecasts, with the intervals just calibrated
        figure = forecast_figure(parts.model, parts.bundle, "test",
                                 plot_indices(len(parts.bundle.test), tr.plot_windows), device=parts.device,
                                 autocast=autocast, calibration=calibration)
        if figure is not None:
            parts.writer.figure("test/forecast", figure, state.global_step)
    metrics["training"] = {
        "best_val_loss": state.best_val_loss, "best_epoch": state.best_epoch + 1, "epochs_run": state.epoch,
        "global_steps": state.global_step, "stopped_early": state.stopped_early,
        "train_loss": state.train_loss_history, "val_loss": state.val_loss_history, "lr": state.lr_history,
        "val_skill": state.val_skill_history,
        # best.pt's own record of its epoch's validation (None for a best.pt of an older version)
        "best_validation": best.get("validation"),
        "checkpoint": "checkpoints/best.pt", "loss": tr.loss, "processes": parts.dist.world_size,
    }
    # the stored calibration, margins in scaled units (informer.checkpoint); seasonal naive's is
    # recomputed from the validation windows whenever a split is scored
    metrics["calibration"] = calibration
    metrics["notes"] = METRIC_NOTES
    return metrics
