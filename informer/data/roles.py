"""Covariate roles: which value columns are forecast, which are past-only inputs, which are known ahead.

Three roles (issue 18):

* **targets** — the forecast variables, scored by the loss and every metric;
* **past covariates** — inputs observed only up to the forecast origin: they enter the encoder and the
  decoder's start-token rows, like the targets' history;
* **known-future covariates** (``dataset.known_future``) — columns whose future values are known at
  forecast time (plans, calendars, weather forecasts). They are scaled with their own training-split
  scaler and travel beside the time features in the time-mark tensor, so every encoder row and every
  decoder row, the ``pred_len`` placeholder rows included, carries them. They are never forecast and
  never part of the loss.

The model's value columns are the past covariates then the targets (targets last, so a forecast is
always the last ``c_out`` columns); the known-future columns are not among them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from informer.errors import UserError

ROLE_FIELDS = ("dataset.targets", "dataset.past_covariates", "dataset.known_future")


@dataclass(frozen=True)
class Roles:
    """The resolved roles, each list in model order."""

    targets: tuple[str, ...]
    past_covariates: tuple[str, ...] = ()
    known_future: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """The model's value columns: past covariates then targets."""
        return [*self.past_covariates, *self.targets]

    @property
    def target(self) -> str:
        """The last model column (``dataset.target`` unless ``dataset.targets`` reorders them)."""
        return self.targets[-1]


def role_columns(targets: Sequence[str] | None, past_covariates: Sequence[str] | None,
                 known_future: Sequence[str]) -> dict[str, str]:
    """Every column listed by name in a role, mapped to its config field (for messages)."""
    named: dict[str, str] = {}
    for fieldname, names in zip(ROLE_FIELDS, (targets, past_covariates, known_future), strict=True):
        for name in names or ():
            named.setdefault(str(name), fieldname)
    return named


def check_role_lists(features: str, target: str, targets: Sequence[str] | None,
                     past_covariates: Sequence[str] | None, known_future: Sequence[str]) -> None:
    """The checks that need no data: repeats, a column in two roles, what S allows. UserError otherwise."""
    lists = dict(zip(ROLE_FIELDS, (targets, past_covariates, known_future), strict=True))
    for fieldname, names in lists.items():
        names = list(names or ())
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UserError(f"{fieldname} lists {repeated} more than once; list each column once")
    if targets is not None and not targets:
        raise UserError("dataset.targets is empty; list at least one column to forecast, or leave it unset "
                        "(null) to use dataset.target")
    effective_targets = list(targets) if targets is not None else [target]
    where_target = "dataset.targets" if targets is not None else f"dataset.target={target!r}"
    for name in effective_targets:
        for fieldname, names in (("dataset.past_covariates", past_covariates),
                                 ("dataset.known_future", known_future)):
            if name in (names or ()):
                fix = ("known-future columns are inputs, never forecast" if fieldname.endswith("future")
                       else "a past covariate is an input, never forecast")
                raise UserError(f"column {name!r} is both a target ({where_target}) and listed in "
                                f"{fieldname}; {fix}: remove it from one of them"
                                + ("" if targets is not None else " or set dataset.target to another column"))
    both = sorted(set(past_covariates or ()) & set(known_future))
    if both:
        raise UserError(f"column(s) {both} are listed both in dataset.past_covariates and "
                        "dataset.known_future; a column is either known ahead or observed only up to the "
                        "origin: keep it in one")
    if features == "S":
        if targets is not None and len(targets) != 1:
            raise UserError(f"dataset.features=S forecasts one series, but dataset.targets lists "
                            f"{list(targets)}; use features=M (or MS) for several targets")
        if past_covariates:
            raise UserError(f"dataset.features=S reads the target alone, so it takes no past covariates "
                            f"(dataset.past_covariates={list(past_covariates)}); use dataset.features=MS")


def resolve_roles(features: str, target: str, targets: Sequence[str] | None,
                  past_covariates: Sequence[str] | None, known_future: Sequence[str],
                  value_columns: Sequence[str], available: Sequence[str] | None = None,
                  where: str = "the data") -> Roles:
    """The roles of the columns, in model order.

    ``value_columns`` is the pool the defaults draw from, in file order (``dataset.columns``, else every
    value column of the CSV); ``available`` every value column of the CSV (default: the pool), which a
    column listed in a role must be one of.

    * targets: ``targets`` if given; else ``[target]`` for S and MS; else (M) every pool column that is
      neither known-future nor a past covariate, ``target`` moved last (the order without roles);
    * past covariates: ``past_covariates`` if given; else MS: every other pool column; M and S: none;
    * known-future: ``known_future``.
    """
    check_role_lists(features, target, targets, past_covariates, known_future)
    available = list(available if available is not None else value_columns)
    listed = role_columns(targets if targets is not None else [target], past_covariates, known_future)
    if targets is None:
        listed[target] = "dataset.target"
    if features == "M" and targets is None:
        listed.pop(target, None)  # M forecasts every remaining column; the target only sets the order
    missing = [(name, fieldname) for name, fieldname in listed.items() if name not in available]
    if missing:
        detail = ", ".join(f"{name!r} ({fieldname})" for name, fieldname in missing)
        raise UserError(f"{where} has no value column {detail}; value columns found: {available}. "
                        "List only columns of the file")
    known = tuple(known_future)
    past_given = tuple(past_covariates) if past_covariates is not None else None
    if targets is not None:
        chosen: tuple[str, ...] = tuple(targets)
    elif features == "M":
        rest = [c for c in value_columns if c not in known and c not in (past_given or ())]
        chosen = tuple([c for c in rest if c != target] + ([target] if target in rest else []))
        if not chosen:
            raise UserError(f"dataset.features=M forecasts every value column that is not a covariate, but "
                            f"every column of {where} is listed as one; leave at least one to forecast")
    else:
        chosen = (target,)
    if past_given is not None:
        past = past_given
    elif features == "MS":
        past = tuple(c for c in value_columns if c not in chosen and c not in known)
    else:
        past = ()
    return Roles(targets=chosen, past_covariates=past, known_future=known)
