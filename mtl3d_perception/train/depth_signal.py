"""Does a run's photometric term see anything? Checks that a term needing parallax keeps pixels to learn from.

The ``photometric`` term (``train/photometric.py``) teaches depth only where a source view, warped through the
predicted depth, explains the reference better than the unwarped source (auto-masking). A camera that barely moves
between a frame and its source view (a parked robot, a tripod) has no such pixel: every pixel is masked
(``loss/photometric/kept_fraction`` 0, ``reprojection`` 0) and the term trains the edge-aware smoothness alone, which
Adam rescales to full-size steps. A new-user trial: 40 photometric-only steps on a parked camera's recording took the
shipped model's held-out abs rel from 0.0865 to 0.1117 (single view 0.108 -> 0.196) while the logged loss went down.

Two checks, for the terms whose ``LossTerm.needs_parallax`` is set:

- :func:`check_parallax`, before training, a warning: the pose check already run on each recorded training source
  (``trainer.check_recorded_poses``: pairs with parallax on textured cells among up to 16 read) finding none. Only a
  warning: those 16 pairs are a sample (a recording parked but for a few drives passed them by), and the check's
  parallax (the sweep's candidates 8 px apart over 20 % of the cells) is stricter than what the term keeps (a trial:
  a 0.1 m/s stream with no such pair kept 64-94 % of its pixels). Both were refused at first (trials).
- :class:`KeptPixelsMonitor`, during training, the verdict: the term keeping no pixel in every one of the first
  :data:`KEPT_STEPS` steps. Where such a term is the run's only depth signal (no training source with depth labels
  weighted in ``loss.weights.depth``) the run stops, and nothing is committed before this verdict; beside depth
  labels it is a warning (the term adds smoothness only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from mtl3d_perception.train.config import TrainConfig
from mtl3d_perception.train.loss_base import LOSSES

log = logging.getLogger(__name__)

KEPT_STEPS = 10  # steps with no pixel kept, from a run's start, before the run is stopped (or warned about)
WHAT_TO_DO = ("train on a recording whose camera moves between a frame and its source views (a few cm or degrees), "
              "or give the run depth labels (a bag's depth_topic, the source's tasks: [depth], loss.weights.depth > 0)")


def parallax_terms(cfg: TrainConfig) -> list[str]:
    """The ``loss.extra`` terms with a weight > 0 whose signal needs parallax (``LossTerm.needs_parallax``)."""
    return [name for name in cfg.loss.weighted_extra() if LOSSES.get(name).needs_parallax]


def has_depth_labels(cfg: TrainConfig, sources: Sequence[Any]) -> bool:
    """Whether a training source (``SourceDataset``) holds depth labels that ``loss.weights.depth`` supervises."""
    return cfg.loss.weights.get("depth", 0.0) > 0 and any("depth" in ds.labelled_tasks for ds in sources)


def check_parallax(cfg: TrainConfig, sources: Sequence[Any], checks: Sequence[Any]) -> None:
    """Warn about the recorded training sources whose pose check found no pair with parallax, where a
    parallax-needing term is weighted (the sample may miss the moving parts: :class:`KeptPixelsMonitor` decides).

    Args:
        cfg: the run's config.
        sources: the ``data.train`` sources (``SourceDataset``).
        checks: ``trainer.check_recorded_poses(sources)`` (``RecordedPoseCheck``: ``name``, ``pairs`` with parallax,
            ``read``).
    """
    terms = parallax_terms(cfg)
    still = [c for c in checks if c.pairs == 0]
    if not terms or not still:
        return
    names = ", ".join(f"loss.extra.{t}" for t in terms)
    which = "; ".join(f"{c.name}: none of the {c.read} pairs read had parallax" for c in still)
    msg = (f"{which} (the pose check's sample: a camera that barely moves between a frame and its source view, or no "
           f"texture), so {names} may keep few pixels there")
    if len(still) == len(sources) and not has_depth_labels(cfg, sources):
        msg += (f"; it is the run's only depth signal: if it keeps no pixel in the first {KEPT_STEPS} steps the run "
                f"stops (loss/<term>/kept_fraction in the log); {WHAT_TO_DO}")
    log.warning("%s", msg)


class KeptPixelsMonitor:
    """Stops a run whose parallax-needing terms kept no pixel in each of its first :data:`KEPT_STEPS` steps.

    Args:
        cfg: the run's config.
        sources: the ``data.train`` sources (``SourceDataset``): whether depth labels give another signal.
        world: the DDP world size (the ranks agree through one all-reduce at step :data:`KEPT_STEPS`).
    """

    def __init__(self, cfg: TrainConfig, sources: Sequence[Any], world: int = 1) -> None:
        self.keys = [f"loss/{name}/kept_fraction" for name in parallax_terms(cfg)]
        self.fatal = not has_depth_labels(cfg, sources)
        self.world = world
        self.seen = 0
        self.kept = 0.0
        self.decided = not self.keys

    @property
    def pending(self) -> bool:
        """Whether the verdict is still to come on a run it may stop (the trainer commits no checkpoint meanwhile)."""
        return not self.decided and self.fatal

    def update(self, logs: dict[str, float]) -> None:
        """Count one step's logs (``loss/<term>/kept_fraction``).

        Raises:
            RuntimeError: the first :data:`KEPT_STEPS` steps kept no pixel and no depth label gives another signal
                (naming the terms, the steps and what to do); beside depth labels a warning is logged instead.
        """
        if self.decided:
            return
        self.kept = max(self.kept, *(logs.get(k, 0.0) for k in self.keys))
        self.seen += 1
        if self.seen >= KEPT_STEPS:
            self.finish()

    def finish(self) -> None:
        """The verdict on the steps seen (a run shorter than :data:`KEPT_STEPS` gets it before its final commit).

        Raises:
            RuntimeError: as :meth:`update`.
        """
        if self.decided or self.seen == 0:
            return
        self.decided = True
        kept = torch.tensor(self.kept, dtype=torch.float64)
        if self.world > 1:  # every rank decides alike (a rank that raised alone would leave the others waiting)
            dist.all_reduce(kept, op=dist.ReduceOp.MAX)
        if float(kept) > 0:
            return
        names = ", ".join(self.keys)
        msg = (f"{names} was 0 in each of the first {self.seen} steps: no training pair has parallax (a camera that "
               "barely moves between a frame and its source view), so the term trains on its smoothness alone")
        if self.fatal:
            msg += f", the run's only depth signal, which degrades the model; stopped before saving; {WHAT_TO_DO}"
            raise RuntimeError(msg)
        log.warning("%s (beside the depth labels)", msg)
