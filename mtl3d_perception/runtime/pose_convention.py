"""Are the poses camera-to-world in the camera's optical frame? A check of the source-view geometry against the images.

Every pose the runtime takes is ``T_world_cam`` of the camera's *optical* frame (REP 103: x right, y down, z forward;
OpenCV's camera). Poses in another convention are rigid transforms too, so nothing in them alone tells them apart, but
they pair frames into wrong relative poses: the plane sweep then matches along wrong epipolar lines, and the depth is
worse than with no pose at all (the shipped model on the held-out HoloLens frames, session 21's trial: abs rel
0.32-0.46 for OpenGL or world-to-camera poses, against 0.196 single-view and 0.141 right). The usual mistakes
(:data:`CONVENTIONS`): OpenGL's camera axes (y up, z back: renderers, NeRF datasets, ARKit), world-to-camera
extrinsics (COLMAP, ``solvePnP``, a view matrix), and in ROS an image whose ``frame_id`` is the camera's body frame
(``camera_link``: x forward, z up) instead of its optical frame.

The test reads the same two absolute poses each way and runs the model's plane sweep (``CvMMTL.sweep_logits``, the
geometric depth's matching features) for each resulting relative pose. Its score is the softmax mass within
:data:`PRIOR_WINDOW` candidates of the image-only (single-view) depth's inverse depth, averaged over the cells where
the sweep's candidates travel at least :data:`MIN_SPAN_PX` in the source image (``geometric.epipolar_span``: where the
pair has parallax) and the reference image has texture (:data:`MIN_TEXTURE`). The right reading puts the mass where
the image alone expects the surface; a wrong one matches elsewhere, by chance. The sweep's own confidence (its entropy) cannot tell: a wrong pose often searches a longer
epipolar path, where some candidate matches well by chance. Measured with the shipped model (session 22, pairs 2
frames apart): right / best wrong reading 0.80 / 0.33 mean score on the held-out HoloLens frames, 0.68 / 0.34 on
its first 30 % (1 frame apart), 0.67-0.68 / 0.46 on two synthetic rooms; the right reading scored highest on 97 of
102 pairs, and each mistaken convention was named by the check as the best reading of its poses.

A reading with too little parallax in a pair cannot be scored that way. World-to-camera poses of a slow camera are the
case: read as given (camera-to-world), the camera's small rotations become metres of travel, while the right reading
barely moves it. Such a reading is judged by its rotation warp (all its candidates land together):
:func:`rotation_lead`, its best logit against the given reading's best near the prior.

:class:`PoseConventionCheck` keeps the scores of the last :data:`WINDOW` checked pairs of one camera and calls the
poses wrong (:attr:`PoseConventionCheck.suspect`) only when one other reading beats them by :data:`MARGIN` on
average and in most checks, or (:meth:`PoseConventionCheck.unmoved`) when a reading without parallax fits better by
its rotation in most checks. The pipeline then runs that camera single-view (pair reason :data:`POSE_CONVENTION`)
until the poses fit again, and warns (kind ``pose_convention``) with the conversion that fits.

Why our own code: no library checks a pose convention against images; the sweep is this model's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from mtl3d_perception import geometry
from mtl3d_perception.model.geometric import epipolar_span

POSE_CONVENTION = "pose_convention"  # the pair reason of a frame run single-view because its poses do not fit

MIN_SPAN_PX = 8.0  # cells whose candidates travel less than this (input pixels) have too little parallax to judge
# cells whose normalised patches hold less texture than this (``MatchingFeatures.texture``) are not judged: a flat cell
# matches everywhere, so the mass near the prior is chance. Measured (session 23): real HoloLens and synthetic frames
# have 78-100 % of their cells above 0.6; grey, black and noisy (sigma 3) blank frames none.
MIN_TEXTURE = 0.5
MIN_CELLS = 0.2  # a reading with parallax at fewer than this fraction of the cells is not scored in that check
PRIOR_WINDOW = 2  # candidates either side of the single-view depth's (a 20 % scale error is 1-2 candidates)
WINDOW = 8  # checks kept per camera
MIN_CHECKS = 4  # checks needed before the poses can be called wrong
MARGIN = 0.2  # mean score an alternative reading must lead the given one by (right ~0.7, wrong <= 0.46: measured)
MIN_WIN_RATE = 0.75  # ... and the share of the window's checks it must lead in
# rotation_lead (logits) a reading without parallax must exceed in a check to count as fitting better than the poses
# as given (see PoseConventionCheck.unmoved). Measured (session 23, the shipped model, a synthetic room at 0.05 m/s):
# +2.6 to +6 for the right reading of world-to-camera poses, -7 to -8 for the wrong view-matrix reading
ROTATION_MARGIN = 0.5
# paired frames between checks: often while the window fills (a wrong convention is named after MIN_CHECKS x 3 = 12
# paired frames), then rarely (a check costs a single-view prediction and four sweeps: ~50 ms on one CPU thread at
# 160x120, about one frame's time)
INTERVAL_FILLING = 3
INTERVAL_FULL = 30

_GL = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenGL camera axes <-> optical (x kept, y and z flipped): its own inverse
_BODY_OPTICAL = np.eye(4)  # T_body_optical (REP 103): optical x = -body y, optical y = -body z, optical z = body x
_BODY_OPTICAL[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]


@dataclass(frozen=True)
class Convention:
    """A way a pose can be given other than optical camera-to-world.

    Attributes:
        name: short name (in warnings and tests).
        description: what such a pose is, for the warning.
        fix: how to convert a pose ``T`` of this convention to the runtime's (for the warning).
        to_optical: ``T`` [4,4] of this convention -> ``T_world_cam`` of the optical frame.
        from_optical: the inverse: the pose this convention would give for an optical ``T_world_cam``.
    """

    name: str
    description: str
    fix: str
    to_optical: Callable[[np.ndarray], np.ndarray]
    from_optical: Callable[[np.ndarray], np.ndarray]


CONVENTIONS: tuple[Convention, ...] = (
    Convention("opengl", "camera-to-world in OpenGL's camera axes (x right, y up, z back: renderers, NeRF datasets, "
                         "ARKit)", "T_world_cam = T @ diag(1, -1, -1, 1)",
               lambda T: T @ _GL, lambda T: T @ _GL),
    Convention("world_to_camera", "world-to-camera extrinsics (COLMAP, solvePnP)", "T_world_cam = inv(T)",
               np.linalg.inv, np.linalg.inv),
    Convention("world_to_camera_opengl", "an OpenGL view matrix (world-to-camera, y up, z back)",
               "T_world_cam = inv(T) @ diag(1, -1, -1, 1)",
               lambda T: np.linalg.inv(T) @ _GL, lambda T: np.linalg.inv(T @ _GL)),
    Convention("body", "the camera's body frame (REP 103: x forward, y left, z up; a camera_link frame) instead of its "
                       "optical frame", "stamp the images with the optical frame (e.g. camera_optical_frame); if "
                                        "they already are, give its TF the rotation from the body frame (a URDF "
                                        "optical joint's rpy -pi/2 0 -pi/2); in Python T_world_cam = T @ "
                                        "T_body_optical with the rotation [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]",
               lambda T: T @ _BODY_OPTICAL, lambda T: T @ np.linalg.inv(_BODY_OPTICAL)),
)
GIVEN = "given"


def readings(T_world_ref: np.ndarray, T_world_src: np.ndarray) -> dict[str, np.ndarray]:
    """``T_src_ref`` [4,4] (reference-camera points into the source camera) for the poses as given (key
    :data:`GIVEN`: ``inv(T_world_src) @ T_world_ref``) and read as each of :data:`CONVENTIONS` (key: its name)."""
    out = {GIVEN: np.linalg.inv(T_world_src) @ T_world_ref}
    for c in CONVENTIONS:
        out[c.name] = np.linalg.inv(c.to_optical(T_world_src)) @ c.to_optical(T_world_ref)
    return out


def _eligible(span: torch.Tensor, texture: torch.Tensor | None) -> torch.Tensor | None:
    """Cells to judge: ``span >= MIN_SPAN_PX`` and ``texture >= MIN_TEXTURE``; None when fewer than :data:`MIN_CELLS`."""
    eligible = span >= MIN_SPAN_PX
    if texture is not None:
        eligible = eligible & (texture >= MIN_TEXTURE)
    return eligible if float(eligible.float().mean()) >= MIN_CELLS else None


def _near_prior(prior_inv_depth: torch.Tensor, inv_candidates: torch.Tensor) -> torch.Tensor:
    """[1, D, h, w]: candidates within :data:`PRIOR_WINDOW` of the prior's fractional candidate index."""
    D = inv_candidates.shape[0]
    step = (inv_candidates[-1] - inv_candidates[0]) / (D - 1)
    index = (prior_inv_depth.float() - inv_candidates[0]) / step
    return (torch.arange(D, device=prior_inv_depth.device).view(1, D, 1, 1) - index).abs() <= PRIOR_WINDOW


def prior_support(logits: torch.Tensor, prior_inv_depth: torch.Tensor, inv_candidates: torch.Tensor,
                  span: torch.Tensor, texture: torch.Tensor | None = None) -> float | None:
    """The score of one reading: the sweep's softmax mass within :data:`PRIOR_WINDOW` candidates of the prior.

    Args:
        logits: [1, D, h, w] plane-sweep logits (``CvMMTL.sweep_logits``).
        prior_inv_depth: [1, 1, h, w] the single-view depth's inverse depth (1/m) on the sweep's grid.
        inv_candidates: [D] the candidates' inverse depths (1/m), uniform (``geometry.depth_candidates``).
        span: [1, 1, h, w] input pixels the candidates travel (``geometric.epipolar_span``) under this reading.
        texture: [1, 1, h, w] the reference cells' texture in [0, 1] (``MatchingFeatures.texture``); None: all
            textured.

    Returns:
        the mean mass over cells with ``span >= MIN_SPAN_PX`` and ``texture >= MIN_TEXTURE``, in [0, 1]; None when
        fewer than :data:`MIN_CELLS` of the cells are such (too little parallax or texture to judge).
    """
    eligible = _eligible(span, texture)
    if eligible is None:
        return None
    mass = (torch.softmax(logits.float(), 1) * _near_prior(prior_inv_depth, inv_candidates)).sum(1, keepdim=True)
    return float(mass[eligible].mean())


def best_near_prior(logits: torch.Tensor, prior_inv_depth: torch.Tensor, inv_candidates: torch.Tensor
                    ) -> torch.Tensor:
    """[1, 1, h, w]: each cell's best logit within :data:`PRIOR_WINDOW` candidates of the prior (where the image alone
    puts the surface); arguments as :func:`prior_support`."""
    logits = logits.float()
    near = _near_prior(prior_inv_depth, inv_candidates)
    return torch.where(near, logits, torch.full_like(logits, -torch.inf)).amax(1, keepdim=True)


def rotation_lead(logits: torch.Tensor, given_best: torch.Tensor, eligible: torch.Tensor) -> float:
    """How much better a reading with too little parallax to score matches than the poses as given.

    Without parallax all of a reading's candidates land together: its sweep is the warp by its rotation alone, the
    same at every depth. Its best logit per cell, minus the given reading's best near the prior
    (:func:`best_near_prior`), median over the cells the given reading was judged on. Negative where the given poses
    explain the images better; positive where the images move only as that reading's rotation says, while the poses
    as given claim more: world-to-camera poses of a slow camera read as camera-to-world (its small rotations become
    metres of travel). Measured with the shipped model (session 23): see :data:`ROTATION_MARGIN`.

    Args:
        logits: [1, D, h, w] that reading's sweep logits; given_best: [1, 1, h, w] :func:`best_near_prior` of the
            given reading; eligible: [1, 1, h, w] bool, the given reading's judged cells.

    Returns:
        the lead in logits (the sweep's units: scaled dot products of matching features).
    """
    return float((logits.float().amax(1, keepdim=True) - given_best)[eligible].median())


def rotation_key(name: str) -> str:
    """A check's key for :func:`rotation_lead` of the convention ``name``."""
    return f"rotation:{name}"


@torch.inference_mode()
def score_readings(model, ref_matching: torch.Tensor, src_matching: torch.Tensor, K: torch.Tensor,
                   T_world_ref: np.ndarray, T_world_src: np.ndarray, prior_depth: torch.Tensor,
                   given_logits: torch.Tensor | None = None) -> dict[str, float | None]:
    """:func:`prior_support` of every reading of a pair's poses (:func:`readings`).

    Args:
        model: a CvMMTL with the geometric depth (``sweep_logits``, ``config``).
        ref_matching, src_matching: [1, C, h, w] matching features (``FrameFeatures.matching``).
        K: [1, 3, 3] intrinsics at the network's input size.
        T_world_ref, T_world_src: [4, 4] the poses as given.
        prior_depth: [1, 1, H, W] single-view depth (m) at the input size (NaN or <= 0 invalid).
        given_logits: the sweep's logits of the poses as given, when already computed (the frame's own prediction).

    Returns:
        reading name -> score or None (too little parallax under that reading, or too little texture); where the
        given reading has none, the others are not scored; for each other reading without a score,
        ``rotation_key(name)`` -> :func:`rotation_lead`.
    """
    cfg = model.config
    h, w = ref_matching.shape[-2:]
    size = tuple(prior_depth.shape[-2:])
    depths = geometry.depth_candidates(cfg.depth_min, cfg.depth_max, cfg.num_depth, like=ref_matching.float())
    inv_prior = 1.0 / prior_depth.float().nan_to_num(cfg.depth_max).clamp(cfg.depth_min, cfg.depth_max)
    inv_prior = torch.nn.functional.adaptive_avg_pool2d(inv_prior, (h, w))
    texture = model.matching.texture(ref_matching)
    scores: dict[str, float | None] = {}
    for name, T in readings(T_world_ref, T_world_src).items():
        T_t = torch.as_tensor(T, dtype=torch.float32, device=ref_matching.device)[None, None]
        if name == GIVEN and given_logits is not None:
            logits = given_logits.float()
        else:
            logits = model.sweep_logits(ref_matching, src_matching[:, None], K.float(), T_t, size).float()
        span = epipolar_span(K.float(), T_t, size, (h, w), depths)
        scores[name] = prior_support(logits, inv_prior, 1.0 / depths, span, texture)
        if name == GIVEN:
            if scores[name] is None:
                return scores  # nothing to compare the other readings with
            given_eligible = _eligible(span, texture)
            given_best = best_near_prior(logits, inv_prior, 1.0 / depths)
        elif scores[name] is None:
            scores[rotation_key(name)] = rotation_lead(logits, given_best, given_eligible)
    return scores


def can_check(model) -> bool:
    """Whether ``model`` has what the check runs: the geometric depth (``geometric_depth: true``) and its plane sweep
    (``sweep_logits``) over matching features (``matching``). False for ``tiny``, paper-only checkpoints and test stand-ins."""
    return (bool(getattr(model.config, "geometric_depth", False)) and callable(getattr(model, "sweep_logits", None))
            and getattr(model, "matching", None) is not None)


@torch.inference_mode()
def check_pairs(model, pairs: Iterable[tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]]
                ) -> PoseConventionCheck:
    """Run the check over a recording's pairs outside the pipeline (``mtl3d eval``, ``mtl3d train``'s posed sources).

    Args:
        model: a CvMMTL with the geometric depth, in eval mode.
        pairs: (images [2,3,H,W] RGB in [0,1] at the model's input size, reference first; K [3,3] at that size;
            T_world_ref [4,4]; T_world_src [4,4]) as the recording gives them.

    Returns:
        a :class:`PoseConventionCheck` holding every pair with parallax (its window is widened to hold them all).
    """
    check = PoseConventionCheck()
    check.checks = deque()  # no window: every pair of the recording counts
    device = next(model.parameters()).device
    eye = torch.eye(4, device=device)[None]
    for images, K, T_ref, T_src in pairs:
        feats = model.encode(images.to(device).float())
        ref, src = feats.select(slice(0, 1)), feats.select(slice(1, 2))
        K_t = torch.as_tensor(K, dtype=torch.float32, device=device).reshape(1, 3, 3)
        prior = model.predict(ref, ref, K_t, eye)["depth"]
        check.add(score_readings(model, ref.matching, src.matching, K_t, np.asarray(T_ref, np.float64),
                                 np.asarray(T_src, np.float64), prior))
    return check


SAMPLES = 16  # pairs of a recording that check_dataset reads (~0.1 s each on one CPU thread at 160x120)


def check_dataset(model, dataset, samples: int = SAMPLES) -> tuple[PoseConventionCheck, str]:
    """:func:`check_pairs` over up to ``samples`` evenly spaced two-view samples of a recording's dataset (a
    ``data.datasets.SourceDataset``: ``dataset[i]`` a ``MultiViewBatch`` of one sample, view 0 the reference).

    Returns:
        (the check, its verdict: ``"fit"``, ``"too_few_pairs"`` (fewer than :data:`MIN_CHECKS` pairs with
        parallax) or the name of the convention the poses fit).
    """
    indices = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(len(dataset), samples))})

    def pairs():
        for i in indices:
            batch = dataset[i]
            if batch.num_views >= 2:
                poses = batch.poses[0].double().numpy()
                yield batch.images[0, :2], batch.K[0, 0], poses[0], poses[1]

    was_training = model.training
    try:
        check = check_pairs(model.eval(), pairs())
    finally:
        model.train(was_training)
    suspect = check.suspect
    return check, suspect.name if suspect else "fit" if len(check.checks) >= MIN_CHECKS else "too_few_pairs"


class PoseConventionCheck:
    """The last :data:`WINDOW` checks of one camera's poses and the verdict (see the module docstring)."""

    def __init__(self) -> None:
        self.checks: deque[dict[str, float]] = deque(maxlen=WINDOW)
        self._paired = 0  # paired frames since the last check

    def due(self) -> bool:
        """Count a paired frame; True when it is time to check one (every :data:`INTERVAL_FILLING` paired frames
        until the window is full, then every :data:`INTERVAL_FULL`)."""
        self._paired += 1
        interval = INTERVAL_FULL if len(self.checks) == WINDOW else INTERVAL_FILLING
        if self._paired >= interval:
            self._paired = 0
            return True
        return False

    def add(self, scores: dict[str, float | None]) -> None:
        """One check's scores (:func:`score_readings`); skipped when the given reading had too little parallax."""
        if scores.get(GIVEN) is not None:
            self.checks.append({k: v for k, v in scores.items() if v is not None})

    def reset(self) -> None:
        self.checks.clear()
        self._paired = 0

    def lead(self, name: str) -> tuple[float, float]:
        """(mean lead over the given reading, share of checks it leads in) of reading ``name`` over the window; a
        check where ``name`` had too little parallax counts as not leading, with a lead of 0."""
        if not self.checks:
            return 0.0, 0.0
        leads = [c[name] - c[GIVEN] if name in c else 0.0 for c in self.checks]
        return float(np.mean(leads)), sum(d > 0 for d in leads) / len(leads)

    def unmoved(self) -> tuple[Convention, ...]:
        """The conventions whose readings barely move the camera and fit the images better than the poses as given:
        in :data:`MIN_WIN_RATE` of the window's checks (at least :data:`MIN_CHECKS`) that reading had too little
        parallax to score and its :func:`rotation_lead` exceeded :data:`ROTATION_MARGIN` (and on average over the
        window). World-to-camera poses of a slow camera: no reading with parallax fits better, so the lead test
        cannot name them. Empty otherwise."""
        if len(self.checks) < MIN_CHECKS:
            return ()
        return tuple(c for c in CONVENTIONS if self.rotation_rate(c.name) >= MIN_WIN_RATE
                     and float(np.mean([x.get(rotation_key(c.name), -np.inf) for x in self.checks])) > ROTATION_MARGIN)

    def rotation_rate(self, name: str) -> float:
        """The share of the window's checks where reading ``name`` had no parallax and a :func:`rotation_lead` above
        :data:`ROTATION_MARGIN`."""
        return sum(x.get(rotation_key(name), -np.inf) > ROTATION_MARGIN for x in self.checks) / max(len(self.checks), 1)

    @property
    def suspect(self) -> Convention | None:
        """The convention the poses fit much better than as given (the first of :meth:`unmoved` where no reading
        leads), or None (they fit, or too few checks)."""
        if len(self.checks) < MIN_CHECKS:
            return None
        best, best_lead = None, MARGIN
        for c in CONVENTIONS:
            lead, rate = self.lead(c.name)
            if lead >= best_lead and rate >= MIN_WIN_RATE:
                best, best_lead = c, lead
        return best or next(iter(self.unmoved()), None)

    def message(self, whose: str) -> str | None:
        """The warning while the poses look wrong (None otherwise); ``whose``: "camera 'cam'", "this recording"."""
        c = self.suspect
        if c is None:
            return None
        expected = "camera-to-world in the optical frame (REP 103: x right, y down, z forward), which the runtime expects"
        lead, rate = self.lead(c.name)
        if lead >= MARGIN and rate >= MIN_WIN_RATE:
            scored = [x for x in self.checks if c.name in x]
            given, read = (float(np.mean([x[k] for x in scored])) for k in (GIVEN, c.name))
            return (f"the poses of {whose} fit the images much better as {c.description} than as {expected}: read "
                    f"that way, their plane sweep puts {read:.0%} of its weight near the single-view depth "
                    f"(as given: {given:.0%}; textured pixels with parallax), better in {rate:.0%} of the last "
                    f"{len(self.checks)} checked pairs. Convert: {c.fix}")
        unmoved = self.unmoved()
        rate = min(self.rotation_rate(u.name) for u in unmoved)
        ambiguous = " (with this little motion these cannot be told apart)" if len(unmoved) > 1 else ""
        return (f"the poses of {whose} move the camera more than the images show: read as "
                f"{' or as '.join(u.description for u in unmoved)}{ambiguous} they barely move it and fit the images "
                f"better than as {expected}, in {rate:.0%} of the last {len(self.checks)} checked pairs. "
                f"Convert: {'; or '.join(u.fix for u in unmoved)}")
