"""What a training run keeps between steps and across kills: the loop position, the metrics log, OUT's lock,
and the one checkpoint helper (``RunCheckpoints``: OUT/last, OUT/best, resume and ``init_from``).

    OUT/last         full trainer state (weights, optimizer, scheduler, RNG, loop), written every save_every
                     steps; a killed run started again with the same command resumes from it exactly
    OUT/best         the connector with the best dev BLEU so far (the run's result)
    OUT/metrics.csv  long format: step, minutes, split, name, value
    OUT/.lock        held (flock) for the whole run: a second run on the same OUT fails at once

Checkpoints are written atomically (``checkpoint.write_dir_atomically``): a crash mid-write leaves the last good
state, and ``checkpoint.recover_dir`` finishes or undoes a write a kill interrupted.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import TRAINER_STATE, ctc_head_kind, load_connector, read_config, read_head_data, save_connector
from .connectors import connector_from_config
from .connectors.ctc_head import head_kind
from .model import AlignedST

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue exactly where it stopped."""

    stage: int = 0
    stage_step: int = 0
    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    #: the best value so far of the score named by ``best_on`` (the config's ``select``), and dev BLEU there
    best_score: float = -1.0
    best_on: str = "dev.bleu"
    best_dev_bleu: float = -1.0
    best_step: int = -1
    bad_evals: int = 0
    minutes: float = 0.0
    stage_minutes: float = 0.0  # minutes spent in the current stage (a resumed stage keeps its clock)
    finished: bool = False
    #: data rows metrics.csv held when this state was saved (-1: unknown, from a checkpoint older than this
    #: field); a resumed run cuts the file back to them, so steps logged after the save are not logged twice
    metrics_rows: int = -1

    @classmethod
    def from_dict(cls, loop: dict[str, Any]) -> LoopState:
        """The state a trainer checkpoint saved; one from before ``select`` kept dev BLEU as ``best_bleu``."""
        loop = dict(loop)
        if "best_bleu" in loop:
            loop["best_score"] = loop["best_dev_bleu"] = loop.pop("best_bleu")
        return cls(**loop)


class MetricsLog:
    """Long-format CSV (step, minutes, split, name, value), appended and flushed per row.

    ``rows`` counts the data rows in the file, so that a checkpoint can record how far the log had got and a
    resumed run can cut it back there (``truncate``)."""

    HEADER = "step,minutes,split,name,value\n"

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.rows = 0
        if enabled and not path.exists():
            path.write_text(self.HEADER)
        elif enabled:
            self.rows = max(0, len(self._lines()) - 1)

    def _lines(self) -> list[str]:
        return self.path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)

    def truncate(self, rows: int, step: int) -> int:
        """Keep the first ``rows`` data rows, or, with ``rows`` < 0 (unknown), the rows of steps <= ``step``;
        the file is replaced atomically. Returns how many rows were dropped."""
        if not self.enabled:
            return 0
        lines = self._lines()
        data = lines[1:]
        if rows >= 0:
            keep = data[:rows]
        else:
            keep = [ln for ln in data if ln.split(",", 1)[0].strip().isdigit() and int(ln.split(",", 1)[0]) <= step]
        if keep and not keep[-1].endswith("\n"):  # a row torn by a kill
            keep = keep[:-1]
        dropped = len(data) - len(keep)
        if dropped:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(self.HEADER + "".join(keep), encoding="utf-8")
            os.replace(tmp, self.path)
        self.rows = len(keep)
        return dropped

    def write(self, step: int, minutes: float, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            w = csv.writer(f)
            for k, v in values.items():
                w.writerow([step, f"{minutes:.3f}", split, k, f"{float(v):.6g}"])
        self.rows += len(values)


class OutInUseError(ValueError):
    """Another process is training into the same OUT directory."""


@contextlib.contextmanager
def lock_out(out: Path) -> Iterator[None]:
    """Hold OUT/.lock (an exclusive ``flock``) for a whole training run, with this process's pid in it.

    A second run on the same OUT fails at once, naming the pid that holds the lock (two runs would otherwise
    rename each other's checkpoints away and interleave metrics rows). The kernel releases a lock when its
    process dies, so the lock of a killed run is simply taken over; the file itself stays."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one run per OUT is the user's job
        yield
        return
    path = out / ".lock"
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise OutInUseError(
                f"out: {out} is in use by pid {pid} (another sltalign train); wait for it to finish or choose another out="
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the lock


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def copy_trained_weights(model: AlignedST, path: str | Path) -> None:
    """Load the connector (and CTC head) weights of the checkpoint at ``path`` into ``model``: what resume and
    ``init_from`` both do. The foundations are checked by fingerprint as for any load."""
    loaded, _ = load_connector(path, speech_encoder=model.speech_encoder, translator=model.translator)
    model.connector.load_state_dict(loaded.connector.state_dict())
    if model.ctc_head is not None:
        model.ctc_head.load_state_dict(loaded.ctc_head.state_dict())


def init_from_checkpoint(model: AlignedST, path: str | Path) -> None:
    """Copy a checkpoint's connector (and CTC head) weights into ``model``; the architectures must match.

    A different connector (name or sizes), a missing/extra CTC head or a head over other pieces/phones is
    refused, naming both, because a partial copy would silently train something else."""
    cfg = read_config(path)
    if cfg.get("ensemble"):
        raise ValueError(f"init_from {path}: it is an ensemble of connectors; name one of its members instead")
    # rebuilt from its config first: sizes added since it was written take their defaults
    want, have = connector_from_config(cfg["connector"]).config(), model.connector.config()
    if want != have:
        raise ValueError(f"init_from {path}: its connector {want} differs from the configured one {have}")
    there, here = ctc_head_kind(cfg), head_kind(model.ctc_head)
    if there != here:
        raise ValueError(f"init_from {path}: its CTC head is {there!r}, the configured one is {here!r}")
    if model.ctc_head is not None and model.ctc_head.FILE and read_head_data(path, cfg) != model.ctc_head.data():
        raise ValueError(f"init_from {path}: its CTC head reads other {here} than this run's ({model.ctc_head.FILE} differs)")
    copy_trained_weights(model, path)


class RunCheckpoints:
    """OUT/last and OUT/best of one run, and where its weights and head data start from.

    ``decoding`` and ``translator_kwargs`` go into every checkpoint (translation reads them back); only the
    main process writes (``main``)."""

    def __init__(
        self, out: Path, *, init_from: str | None, decoding: dict[str, Any], translator_kwargs: dict[str, Any], main: bool = True
    ) -> None:
        self.out, self.init_from, self.main = Path(out), init_from, main
        self.decoding, self.translator_kwargs = decoding, translator_kwargs
        self.last, self.best = self.out / "last", self.out / "best"

    @property
    def resumable(self) -> bool:
        """Whether OUT/last holds a trainer state to resume from."""
        return (self.last / TRAINER_STATE).is_file()

    def head_source(self) -> Path | None:
        """Where an existing CTC head's data comes from: the resumed run's OUT/last, else ``init_from``, else
        None (made from the training data)."""
        if self.resumable:
            return self.last
        return Path(self.init_from) if self.init_from else None

    def start(self, model: AlignedST) -> tuple[LoopState, dict[str, Any] | None]:
        """Resume from OUT/last (weights now; the returned trainer state holds optimizer, scheduler and RNG for
        the stage to restore), else start from ``init_from``'s weights, else from the model as built."""
        if self.resumable:
            trainer = torch.load(self.last / TRAINER_STATE, weights_only=False)
            copy_trained_weights(model, self.last)
            state = LoopState.from_dict(trainer["loop"])
            log.info("resuming from %s at stage %d step %d", self.last, state.stage, state.stage_step)
            return state, trainer
        if self.init_from:
            init_from_checkpoint(model, self.init_from)
            log.info("connector initialised from %s", self.init_from)
        return LoopState(), None

    def save(self, model: AlignedST, path: Path, **kw: Any) -> None:
        if self.main:
            save_connector(model, path, decoding=self.decoding, translator_kwargs=self.translator_kwargs, **kw)

    def save_last(
        self,
        model: AlignedST,
        state: LoopState,
        *,
        optimizer: Any = None,
        scheduler: Any = None,
        objectives_rng: torch.Tensor | None = None,
    ) -> None:
        """Write OUT/last. After a finished stage (no optimizer given) the next stage starts fresh (new optimizer,
        schedule and objective RNG), so only the loop position and global RNG are kept then."""
        trainer_state = {
            "loop": vars(state).copy(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "rng": rng_state(),
            "objectives_rng": objectives_rng,
        }
        self.save(model, self.last, trainer_state=trainer_state, extra={"loop": vars(state).copy()})

    def save_best(
        self,
        model: AlignedST,
        step: int,
        dev: dict[str, Any] | None = None,
        *,
        watched: dict[str, dict[str, Any]] | None = None,
        select: str | None = None,
    ) -> None:
        """Write OUT/best with the step and, where an evaluation chose it, its dev scores, the data.watch sets'
        scores and the rule (``select``) that chose it."""
        extra: dict[str, Any] = {"step": step}
        if dev is not None:
            extra["dev"] = dev
        if watched:
            extra["watched"] = watched
        if select:
            extra["select"] = select
        self.save(model, self.best, extra=extra)
