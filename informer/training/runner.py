"""``train(cfg) -> float``: assemble a run (data, model, optimizer, outputs), train it, evaluate the best
checkpoint on validation and test once, and write metrics.json and the TensorBoard hparams entry.

Everything the user supplied (config, data, model settings, the checkpoint to resume from) is checked
before the first file is written to the run directory, so a run refused for bad input leaves an
existing run directory as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from informer.checkpoint import describe_state_dict_error, load_checkpoint, remove_stale_temporaries
from informer.config import TrainAppConfig
from informer.data import load_data_bundle
from informer.errors import CheckpointError, UserError
from informer.training.artifacts import load_resume, locate_resume, run_dir_of, write_json
from informer.training.distributed import (
    DistContext,
    all_gather_objects,
    any_process,
    barrier,
    broadcast_string,
    cleanup_distributed,
    init_distributed,
)
from informer.training.evaluate import MAPE_NOTE, evaluate_split, unwrap
from informer.training.interrupt import StopRequest, TrainingInterrupted
from informer.training.loop import RunParts, Trainer
from informer.training.setup import (
    amp_dtype,
    autocast_factory,
    check_config,
    model_config,
    resolve_device,
    resolve_path,
    to_app_config,
)
from informer.training.state import LoopState, restore_rng_state, seed_everything
from informer.training.tensorboard import RunWriter

log = logging.getLogger(__name__)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


# train settings whose change makes a resumed run differ from an uninterrupted one
RESUME_SENSITIVE = ("batch_size", "learning_rate", "lradj", "epochs", "seed", "loss", "weight_decay",
                    "limit_train_batches", "limit_eval_batches", "eval_batch_size", "grad_clip", "amp",
                    "amp_dtype", "patience")


def train(cfg: DictConfig | TrainAppConfig | dict[str, Any], output_dir: str | Path | None = None,
          before_training: Callable[[Path], None] | None = None) -> float:
    """Train one model and return its best validation loss.

    Outputs go to ``output_dir`` when given, else to Hydra's run directory, else (when resuming) to the
    resumed run's directory, else to ``outputs/<dataset>/<time>``. Under torchrun every process calls
    this; rank 0 alone writes. ``before_training(run_dir)`` runs on rank 0 once every input has been
    checked, before anything is written to the run directory.

    A SIGINT/SIGTERM stops the run at the next step boundary after writing ``last.pt``; this raises
    :class:`~informer.training.interrupt.TrainingInterrupted` (``scripts/train.py`` turns it into a
    message with the resume command and exit code 128 + signal number).
    """
    app = to_app_config(cfg)
    was_initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
    ctx = init_distributed()
    added_handlers: list[logging.Handler] = []
    try:
        check_config(app, ctx.world_size)
        out = _output_dir(app, output_dir, ctx)
        added_handlers = _setup_logging(out, ctx.is_main)
        return _run(app, out, ctx, before_training)
    finally:
        for handler in added_handlers:
            logging.getLogger("informer").removeHandler(handler)
            handler.close()
        if not was_initialized:
            cleanup_distributed()


def _output_dir(app: TrainAppConfig, explicit: str | Path | None, ctx: DistContext) -> Path:
    """Rank 0 decides the run directory and every process uses that one."""
    if explicit is not None:
        chosen = resolve_path(explicit)
    else:
        from hydra.core.hydra_config import HydraConfig

        resumed_run = run_dir_of(locate_resume(resolve_path(app.train.resume))) if app.train.resume else None
        if HydraConfig.initialized():
            chosen = Path(HydraConfig.get().runtime.output_dir)
        elif resumed_run is not None:  # continue in place: the same checkpoints, log and TensorBoard run
            chosen = resumed_run
        else:
            chosen = Path("outputs", app.dataset.name, datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    out = Path(broadcast_string(str(chosen)))
    if ctx.is_main:  # the folder only: its files are written once the inputs have been checked
        out.mkdir(parents=True, exist_ok=True)
    return out


def _setup_logging(out: Path, is_main: bool) -> list[logging.Handler]:
    """train.log in the run directory (Hydra's job logging may already write it: no duplicate then)."""
    package = logging.getLogger("informer")
    if not is_main:
        package.setLevel(logging.WARNING)
        return []
    package.setLevel(logging.INFO)
    log_file = (out / "train.log").resolve()
    handlers: list[logging.Handler] = []
    root_files = {Path(h.baseFilename).resolve() for h in logging.getLogger().handlers
                  if isinstance(h, logging.FileHandler)}
    if log_file not in root_files:  # delay: no file until there is something to log
        handlers.append(logging.FileHandler(log_file, delay=True))
    if not logging.getLogger().handlers:  # outside Hydra: also show progress on the console
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        package.addHandler(handler)
    return handlers


def _resolved_config(app: TrainAppConfig, data_dir: Path) -> dict[str, Any]:
    config = dataclasses.asdict(app)
    config["paths"]["data_dir"] = str(data_dir)
    if config["dataset"]["path"]:
        config["dataset"]["path"] = str(resolve_path(config["dataset"]["path"]))
    return config


def _prepare_outputs(out: Path, ctx: DistContext, before_training: Callable[[Path], None] | None) -> None:
    """The first writes into the run directory, once every input has been accepted."""
    if ctx.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(out / "checkpoints"):
            log.info("removed %s, a partial checkpoint left by an interrupted save", stale.name)
        if before_training is not None:
            before_training(out)
    barrier()


def _run(app: TrainAppConfig, out: Path, ctx: DistContext,
         before_training: Callable[[Path], None] | None = None) -> float:
    tr, spec = app.train, app.model
    if tr.threads:
        torch.set_num_threads(tr.threads)
    device = resolve_device(tr.device, ctx.local_rank)
    data_dir = resolve_path(app.paths.data_dir)
    own_path = str(resolve_path(app.dataset.path)) if app.dataset.path else None
    dataset_cfg = dataclasses.replace(app.dataset, path=own_path)
    if not ctx.is_main:  # rank 0 reads first, so a missing ETT file is downloaded once
        barrier()
    bundle = load_data_bundle(dataset_cfg, data_dir, spec.seq_len, spec.label_len, spec.pred_len, spec.embed,
                              progress=ctx.is_main)
    if ctx.is_main:
        barrier()
    model_cfg = model_config(spec, bundle.features, bundle.n_columns, bundle.freq)
    config = _resolved_config(app, data_dir)

    from informer.model import build_model

    seed_everything(tr.seed)  # identical initial weights on every process
    try:
        model = build_model(model_cfg)
    except ValueError as exc:  # the model's own checks name the field
        raise UserError(f"invalid model configuration: {exc}") from None
    resume = None
    if tr.resume:
        resume_path = locate_resume(resolve_path(tr.resume))
        resume = load_resume(resume_path, model_cfg, bundle.checkpoint_data())
        try:
            model.load_state_dict(resume["model_state"])
        except RuntimeError as exc:
            raise CheckpointError(f"{resume_path}: the stored weights do not match the stored model "
                                  f"arguments ({describe_state_dict_error(exc)})") from None
    _prepare_outputs(out, ctx, before_training)
    log.info("run directory: %s", out)
    log.info("data: %s", bundle.describe())
    if resume is not None:
        _carry_best(resume_path, out, ctx)
        _warn_on_resume_differences(resume, app, resume_path)
    model.to(device)
    log.info("model: %s, %.2fM parameters, device %s, %d process(es)", type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6, device, ctx.world_size)

    # fused: one vectorised update instead of ~10 small kernels per parameter tensor (benchmarks/levers.md)
    optimizer = torch.optim.Adam(model.parameters(), lr=tr.learning_rate, weight_decay=tr.weight_decay,
                                 fused=True)
    dtype = amp_dtype(app, device)
    grad_scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    state = LoopState()
    seed_everything(tr.seed + ctx.rank)  # per-process dropout streams
    if resume is not None:
        state = _restore(resume, optimizer, grad_scaler, ctx, resume_path)
        log.info("resumed from %s at epoch %d, step %d (global step %d)", resume_path, state.epoch + 1,
                 state.step_in_epoch, state.global_step)

    net = torch.compile(model) if tr.compile else model
    if ctx.enabled:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    # events of steps up to the checkpoint's were on disk before it was written; later ones are dropped
    writer = RunWriter(out / "tb" if ctx.is_main else None,
                       purge_step=state.global_step + 1 if resume is not None else None)
    parts = RunParts(app=app, bundle=bundle, model_cfg=model_cfg, model=net, optimizer=optimizer,
                     grad_scaler=grad_scaler, device=device, amp_dtype=dtype, dist=ctx, writer=writer,
                     checkpoint_dir=out / "checkpoints", config=config)
    try:
        with StopRequest() as stop:
            trainer = Trainer(parts, state, resume=resume["training"] if resume is not None else None,
                              stop=stop)
            try:
                state = trainer.fit()
                _check_replicas(model, ctx)
                metrics = _final_evaluation(parts, state, stop)
            except TrainingInterrupted as exc:
                log.warning("%s; continue with train.resume=%s", exc, exc.run_dir)
                raise
        if ctx.is_main:
            write_json(out / "metrics.json", metrics)
            writer.scalars("test", _headline(metrics["test"]), state.global_step)
            test = metrics["test"]
            writer.hparams(config, {"hparam/best_val_loss": state.best_val_loss,
                                    "hparam/test_mse": test["model"]["scaled"]["mse"],
                                    "hparam/test_mae": test["model"]["scaled"]["mae"],
                                    "hparam/test_mse_original": test["model"]["original"]["mse"]})
            log.info("test (best checkpoint, %d windows): mse %.6f  mae %.6f  | naive_last mse %.6f  "
                     "naive_seasonal mse %.6f", test["windows"], test["model"]["scaled"]["mse"],
                     test["model"]["scaled"]["mae"], test["naive_last"]["scaled"]["mse"],
                     test["naive_seasonal"]["scaled"]["mse"])
    finally:
        writer.close()
    return float(state.best_val_loss)


def _restore(resume: dict[str, Any], optimizer: torch.optim.Optimizer,
             grad_scaler: torch.amp.GradScaler | None, ctx: DistContext, path: Path) -> LoopState:
    training = resume["training"]
    try:
        optimizer.load_state_dict(training["optimizer"])
        if grad_scaler is not None and training.get("grad_scaler"):
            grad_scaler.load_state_dict(training["grad_scaler"])
        rng = training.get("rng") or []
        if len(rng) == ctx.world_size:
            restore_rng_state(rng[ctx.rank])
        else:
            log.warning("the checkpoint was written by %d process(es), this run has %d: random streams "
                        "restart from the seed, so the continuation is not bit-identical", len(rng),
                        ctx.world_size)
        return LoopState.from_dict(training["loop"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: its training state cannot be restored ({detail}); resume from "
                              "another last.pt or start a new run") from None


def _warn_on_resume_differences(resume: dict[str, Any], app: TrainAppConfig, path: Path) -> None:
    """Resuming is exact only with the same software, thread count and training settings: say so."""
    stored = resume.get("versions") or {}
    now_torch, now_threads = str(torch.__version__), torch.get_num_threads()
    if stored.get("threads") is not None and stored.get("threads") != now_threads:
        log.warning("resuming with %d CPU thread(s), the checkpoint was written with %s: results may differ "
                    "slightly from an uninterrupted run (set train.threads=%s to match)", now_threads,
                    stored.get("threads"), stored.get("threads"))
    if stored.get("torch") is not None and stored.get("torch") != now_torch:
        log.warning("resuming with torch %s, the checkpoint was written by torch %s: results may differ "
                    "slightly from an uninterrupted run", now_torch, stored.get("torch"))
    before = (resume.get("config") or {}).get("train") or {}
    after = dataclasses.asdict(app.train)
    changed = [f"train.{k}: {before[k]!r} -> {after[k]!r}" for k in RESUME_SENSITIVE
               if k in before and before[k] != after[k]]
    if changed:
        log.warning("resuming %s with changed settings (%s): the continuation differs from an uninterrupted "
                    "run with the original settings", path, ", ".join(changed))


def _check_replicas(model: torch.nn.Module, ctx: DistContext) -> None:
    """DDP keeps the replicas identical; verify it (rank 0 compares every process's parameter hash)."""
    if not ctx.enabled:
        return
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    hashes = all_gather_objects(digest.hexdigest())
    if ctx.is_main and len(set(hashes)) > 1:
        raise RuntimeError(f"model replicas diverged across processes: parameter hashes {hashes}")
    log.info("parameters identical on all %d processes (sha256 %s)", ctx.world_size, hashes[0][:16])


def _carry_best(resume_path: Path, out: Path, ctx: DistContext) -> None:
    """Resuming into a new run directory: bring the earlier run's best.pt along (early stopping and the
    final evaluation refer to it)."""
    source = resume_path.parent / "best.pt"
    target = out / "checkpoints" / "best.pt"
    if ctx.is_main and source.is_file() and source.resolve() != target.resolve():
        shutil.copy2(source, target)


def _final_evaluation(parts: RunParts, state: LoopState, stop: StopRequest) -> dict[str, Any]:
    """Load best.pt and score every validation and test window once (with the naive baselines).

    A stop requested meanwhile is honoured between the splits: last.pt is final already, so resuming
    only repeats this evaluation."""
    barrier()  # rank 0 has finished writing best.pt
    best = load_checkpoint(parts.checkpoint_dir / "best.pt", map_location="cpu")
    unwrap(parts.model).load_state_dict(best["model_state"])
    tr = parts.app.train
    autocast = autocast_factory(parts.device, parts.amp_dtype)
    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        if any_process(stop.requested, parts.device):
            raise TrainingInterrupted(stop.signum or signal.SIGTERM, str(parts.checkpoint_dir.parent),
                                      str(parts.checkpoint_dir / "last.pt"), "during the final evaluation")
        metrics[split] = evaluate_split(parts.model, parts.bundle, split, batch_size=tr.eval_batch_size,
                                        device=parts.device, autocast=autocast, dist_ctx=parts.dist,
                                        num_workers=tr.num_workers)
    metrics["training"] = {
        "best_val_loss": state.best_val_loss, "best_epoch": state.best_epoch + 1, "epochs_run": state.epoch,
        "global_steps": state.global_step, "stopped_early": state.stopped_early,
        "train_loss": state.train_loss_history, "val_loss": state.val_loss_history, "lr": state.lr_history,
        "checkpoint": "checkpoints/best.pt", "loss": tr.loss, "processes": parts.dist.world_size,
    }
    metrics["notes"] = MAPE_NOTE
    return metrics


def _headline(split_metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers worth a TensorBoard scalar: the model's errors and the baselines' MSE."""
    model = split_metrics["model"]
    return {
        **{name: float(model["scaled"][name]) for name in ("mse", "mae", "rmse")},
        **{f"{name}_original": float(model["original"][name]) for name in ("mse", "mae", "mape")},
        "naive_last_mse": float(split_metrics["naive_last"]["scaled"]["mse"]),
        "naive_seasonal_mse": float(split_metrics["naive_seasonal"]["scaled"]["mse"]),
        "windows": float(split_metrics["windows"]),
    }
