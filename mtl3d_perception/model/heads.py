"""Fusion and task heads of CvM-MTL (cvm_method_notes.md §1.5).

- ``ImageNeck`` merges the encoder levels at stride >= 8 into one map f(I) at the fusion resolution
  (stride 8, the CvM's grid), FPN style.
- ``Fusion`` concatenates [f(I), C, F] and projects them with a 1x1 conv (F~ of the paper); without the
  CvM (``use_cvm: false``) it projects f(I) alone, so the baseline has the same heads.
- One ``TaskDecoder`` per task (an ``nn.ModuleDict``): 3x3 conv at stride 8, upsampling, the encoder's
  stride-4 skip, 3x3 conv -> the task feature at stride 4.
- An optional refiner (``register_refiner``) maps the dict of task features to a new one.
- ``Predictor`` per task: 1x1 conv, bilinear upsampling to the input size, then the task's output
  mapping: semantic/boundary logits; depth in metres within [depth_min, depth_max] through a sigmoid
  in inverse depth (positive by construction); normals L2-normalised.
- With ``geometric_depth`` the depth predictor refines the cost volume's geometric depth (issue 18):
  ``inv = g (inv_geo + r) + (1 - g) inv_prior`` with the gate ``g = confidence * sigmoid(.)``, a bounded
  residual ``r`` and the learned prior ``inv_prior`` (the sigmoid mapping above), all in inverse depth;
  so matched pixels follow the geometry and unmatched ones (confidence ~0) fall back to the prior.
  With ``prior_scale_alignment`` the prior is first rescaled per image to the geometry's scale
  (``Predictor.prior_scale``): a room or camera whose scale the prior gets wrong keeps the structure of the prior and
  the metric scale of what was matched. Each pixel counts by its gate and by the parallax the pair offers there
  (``geometric.epipolar_span``; ``Predictor.align_weight``): a sweep whose candidates lie under a pixel apart is biased.
- The published ``depth_confidence`` is the matching confidence (``depth_matching_confidence``, the sweep's
  peakedness) times the agreement of the two independent estimates, ``exp(-|log(inv_prior / inv_geo)| / s)``
  with ``s = AGREEMENT_LOG_SCALE``: a consistency check in the spirit of stereo's left-right check. On the
  held-out HoloLens frames it ranks the final depth's errors at 0.71-0.74x (top 50 %, stages 2-5) against
  0.83x for the matching confidence alone (stage 2; models/README.md).
- With ``confidence_head`` (``ConfidenceHead``) a learned estimate of the final depth's abs rel error replaces
  the agreement: ``depth_confidence = min(1, matching / MATCHED) * exp(-error / ERROR_SCALE)``, where ``error`` (output
  ``depth_error``) comes from a small conv net on detached inputs (the depth decoder's feature, the sweep's
  softmax, the matching confidence, the gate, the prior/geometry log-disagreement, the geometric inverse depth,
  with ``confidence_depth_cues`` also the final inverse depth and its local log-gradient, and their image-wide
  mean), trained by the ``depth_error`` loss term (expected error by a Laplace likelihood;
  the learned uncertainty of Kendall & Gal, NeurIPS 2017, applied to a frozen network's error as stereo
  confidence learning does). The matching factor only takes it to 0 where nothing was matched (single view);
  the error estimate does the ranking. On the held-out HoloLens frames the shipped head (trained in stage 12 on rooms
  the network never saw, with the depth cues; shipped on the stage-14 network) ranks the final depth's errors at 0.65x
  (top 50 %), 0.49x (top 25 %), 0.41x (top 10 %) (with the session-13 scale alignment 0.69x / 0.54x / 0.43x: the
  least-confident pixels improved, the most-confident kept their error), against 0.69x at the top 50 % for the agreement confidence of the stage-9 network (stage 7's head
  on the stage-5 network: 0.68x / 0.49x / 0.42x against 0.74x / 0.63x / 0.56x; models/README.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mtl3d_perception.geometry import unit_vectors
from mtl3d_perception.model.config import TASKS, ConfigError, ModelConfig
from mtl3d_perception.model.encoders import conv_bn_relu
from mtl3d_perception.registry import Registry

# log-ratio scale of the prior/geometry agreement in ``depth_confidence``: 20 % disagreement -> x e^-1 (measured
# on held-out HoloLens frames: 0.1 and 0.2 rank the errors alike, 0.73x at the top 50 %; models/README.md)
AGREEMENT_LOG_SCALE = 0.2
# The learned confidence (``ConfidenceHead``): ``min(1, matching / MATCHED) * exp(-error / ERROR_SCALE)``. It falls to
# e^-1 at an expected abs rel of ERROR_SCALE; MATCHED only takes it to 0 where nothing was matched (a flat sweep:
# single view, pixels seen by no source). On HoloLens training frames any MATCHED in 0.01-0.1 ranks the errors as
# the error estimate alone does (0.66x at the top 50 %); the product with the matching confidence itself: 0.78x.
ERROR_SCALE = 0.1
MATCHED = 0.05

# Refiners shipped in the package (``model/pap.py``) register on import; ``mtl3d_perception.model`` imports them.
REFINERS: Registry[Callable[..., nn.Module]] = Registry("refiner", ConfigError)


def register_refiner(name: str):
    """Decorator registering a refiner class under ``name`` (config key ``refiner``).

    The class is built as ``cls(task_channels: dict[str, int], config: ModelConfig, **config.refiner_args)``
    and called as ``refiner(task_feats: dict[str, Tensor [B, C_t, h, w]]) -> dict[str, Tensor]`` with
    the same keys and shapes; it runs between the task decoders and the predictors.
    """
    return REFINERS.register(name)


def list_refiners() -> list[str]:
    return REFINERS.names()


def build_refiner(config: ModelConfig, task_channels: dict[str, int]) -> nn.Module | None:
    if config.refiner is None:
        return None
    return REFINERS.get(config.refiner)(task_channels, config, **config.refiner_args)


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``x`` [N, C, h, w] bilinearly resized to ``size`` = (H, W) (align_corners=False), or ``x`` itself at that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ImageNeck(nn.Module):
    """Encoder levels with reduction >= 8 -> one ``[B, C, H/8, W/8]`` map (sum of 1x1 projections, then BN-ReLU)."""

    def __init__(self, feature_info: list[dict], channels: int, stride: int = 8):
        super().__init__()
        self.levels = [i for i, f in enumerate(feature_info) if f["reduction"] >= stride]
        if not self.levels:
            msg = f"the encoder has no feature level at stride >= {stride}: {feature_info}"
            raise ConfigError(msg)
        self.proj = nn.ModuleList(nn.Conv2d(feature_info[i]["num_chs"], channels, 1, bias=False) for i in self.levels)
        self.out = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = sum(resize_bilinear(p(feats[i]), size) for p, i in zip(self.proj, self.levels))
        return self.out(x)


class TaskDecoder(nn.Module):
    def __init__(self, cin: int, channels: int):
        super().__init__()
        self.conv8 = conv_bn_relu(cin, channels)
        self.conv4 = conv_bn_relu(channels, channels)

    def forward(self, fused: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv8(fused)
        return self.conv4(resize_bilinear(x, skip.shape[-2:]) + skip)


def agreement_confidence(matching: torch.Tensor, inv_prior: torch.Tensor, inv_geo: torch.Tensor) -> torch.Tensor:
    """The published depth confidence: ``matching * exp(-|log(inv_prior / inv_geo)| / AGREEMENT_LOG_SCALE)``.

    ``matching`` in [0, 1] (the sweep's peakedness, ``geometric.read_out``), ``inv_prior`` and ``inv_geo``
    positive inverse depths (1/m) of the same shape. High only where the match is peaked AND the head's learned
    prior agrees with the geometric depth (the two estimates' errors are largely independent).
    """
    return matching * torch.exp(-log_disagreement(inv_prior, inv_geo) / AGREEMENT_LOG_SCALE)


def log_gradient(inv_depth: torch.Tensor) -> torch.Tensor:
    """``|d log(inv)/dx| + |d log(inv)/dy|`` ``[N,1,h,w]``, central differences (edge-replicated): large at depth
    edges, where a depth map's error concentrates. ``inv_depth`` [N,1,h,w] > 0 (1/m)."""
    log_inv = F.pad(inv_depth.clamp_min(1e-6).log(), (1, 1, 1, 1), mode="replicate")
    dx = log_inv[..., 1:-1, 2:] - log_inv[..., 1:-1, :-2]
    dy = log_inv[..., 2:, 1:-1] - log_inv[..., :-2, 1:-1]
    return 0.5 * (dx.abs() + dy.abs())


def log_disagreement(inv_prior: torch.Tensor, inv_geo: torch.Tensor) -> torch.Tensor:
    """``|log(inv_prior / inv_geo)|`` (same shape, >= 0): how far the learned prior and the geometric depth
    disagree, as a log ratio of positive inverse depths (1/m). Used by the agreement confidence and as a cue of
    ``ConfidenceHead``."""
    return (inv_prior / inv_geo).log().abs()


class ConfidenceHead(nn.Module):
    """Expected abs rel error of the final depth, ``[N,1,h,w]`` >= 1e-3, at the sweep's stride 4.

    Its inputs are detached, so its loss (``train/depth_error.py``) never moves the depth itself: the depth task
    feature ``[N,C,h,w]``, the sweep's softmax over its ``D`` candidates ``[N,D,h,w]`` (a second peak or a
    broad one says the match is ambiguous, which the entropy alone does not) and ``cues`` ``[N,cues,h,w]``: the
    matching confidence, the gate ``g``, ``|log(inv_prior / inv_geo)|`` and the geometric inverse depth scaled to
    [0, 1] over the depth range (``CUES`` = 4); with the config's ``confidence_depth_cues`` also the final inverse
    depth so scaled and its ``log_gradient`` (``cues`` = 6: errors concentrate at depth edges and far away).
    A 3x3 convolution, plus a 1x1 one of its image-wide mean (how wrong a depth
    map is varies per frame as much as per pixel: on HoloLens training frames ranking pixels by their frame's
    true mean error alone reaches 0.65x at the top 50 %), then a dilated 3x3 one (a 13x13-cell field, ~50 px at
    160x120), 24 channels: small enough to run on every frame.
    """

    INIT_ERROR = 0.15  # the output before training: a typical abs rel
    CUES = 4

    def __init__(self, cin: int, num_depth: int, channels: int = 24, cues: int = CUES):
        super().__init__()
        self.local = conv_bn_relu(cin + num_depth + cues, channels)
        self.context = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True))
        self.out = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True), nn.Conv2d(channels, 1, 1),
        )
        with torch.no_grad():
            self.out[-1].weight.mul_(1e-2)
            self.out[-1].bias.fill_(math.log(math.expm1(self.INIT_ERROR)))  # softplus^-1

    def forward(self, feature: torch.Tensor, probabilities: torch.Tensor, cues: torch.Tensor) -> torch.Tensor:
        x = torch.cat([feature, probabilities.to(feature.dtype), cues.to(feature.dtype)], 1).detach()
        x = self.local(x)
        x = x + self.context(x.mean((2, 3), keepdim=True))
        return F.softplus(self.out(x).float()) + 1e-3


class Predictor(nn.Module):
    """1x1 conv to the task's channels (``conv``), then, after ``MultiTaskHeads`` upsampled it, the task's
    output mapping (``output``).

    ``geometric`` (depth only): refine the cost volume's geometric depth through the gate (module docstring);
    ``align_prior`` (with ``geometric``): rescale the prior to the geometry's scale first (:meth:`prior_scale`).
    """

    RESIDUAL = 0.25  # bound of the geometric residual, as a fraction of the inverse-depth range
    # Shrinkage of the prior's scale alignment, as a fraction of the image's pixels: with weights summing to
    # ALIGN_SHRINK * H * W the scale moves half-way to the geometry's. Chosen on stage 14 on the design frames
    # (HoloLens 60-80 %, the same frames centre-cropped to a 46 deg FOV), synthetic val rooms and two slow synthetic
    # streams: 0.2 in session 13 with the gate alone as the weight; 0.1 in session 14, once the parallax ramp below
    # kept low-parallax pairs out (synthetic val 0.0897 vs 0.0950, the real frames within 0.5 %, slow streams 1 % worse;
    # models/README.md).
    ALIGN_SHRINK = 0.1
    # The alignment weighs a pixel by its gate times a ramp of ``span``, the sweep's reach along its epipolar line
    # (geometric.epipolar_span, input pixels): 0 up to ALIGN_SPAN_PX[0] (a quarter pixel per candidate at D = 32), 1
    # from ALIGN_SPAN_PX[1]. Pairs with little parallax (a slow 30 Hz camera, the epipole of a forward move) give a
    # biased sweep whose scale the prior must not take. Chosen in session 13 among ramps 0-32, 8-40, 16-48, 24-64 px on
    # the design frames, synthetic val rooms and two slow (5 cm/s, 30 Hz) synthetic streams (models/README.md).
    ALIGN_SPAN_PX = (8.0, 40.0)

    def __init__(self, task: str, cin: int, cout: int, depth_range: tuple[float, float], geometric: bool = False,
                 align_prior: bool = False):
        super().__init__()
        self.task = task
        self.geometric = geometric and task == "depth"
        self.align_prior = align_prior and self.geometric
        self.conv = nn.Conv2d(cin, 3 if self.geometric else cout, 1)  # geometric: prior, residual, gate
        self.inv_min, self.inv_max = 1.0 / depth_range[1], 1.0 / depth_range[0]
        if task == "normals":  # start facing the camera (-z in the optical frame), then learn
            nn.init.normal_(self.conv.weight, std=1e-3)
            with torch.no_grad():
                self.conv.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
        if self.geometric:  # start as the geometry where it is confident: no residual, gate open
            with torch.no_grad():
                self.conv.weight[1:].mul_(1e-2)
                self.conv.bias[1:].copy_(torch.tensor([0.0, 2.0]))

    def prior(self, y: torch.Tensor) -> torch.Tensor:
        """The depth head's learned prior in inverse depth (1/m) ``[N,1,H,W]`` from its upsampled conv output ``y``:
        a sigmoid into [1/depth_max, 1/depth_min] (positive and metric by construction, no clamping needed)."""
        return self.inv_min + torch.sigmoid(y[:, :1]) * (self.inv_max - self.inv_min)

    def gate(self, y: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """The geometric depth's gate ``g = confidence * sigmoid(.)`` in [0, 1] from the depth conv output ``y``."""
        return confidence * torch.sigmoid(y[:, 2:3])

    @classmethod
    def prior_scale(cls, inv_prior: torch.Tensor, inv_geo: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The per-image factor ``s`` [N,1,1,1] that takes the prior's inverse depth to the geometry's scale.

        ``log s = sum(w * log(inv_geo / inv_prior)) / (sum(w) + ALIGN_SHRINK * H * W)`` over the image, ``w`` the
        ``weight`` [N,1,H,W] in [0, 1] (:meth:`align_weight`): the weighted mean log ratio (the least-squares scale in
        log depth, as monocular depth is aligned to metric points in MiDaS, Ranftl et al. 2022), shrunk towards 1
        where little is matched, so a single view (weight ~0) keeps the prior as it is. ``inv_prior``, ``inv_geo``:
        [N,1,H,W] inverse depth, 1/m, > 0.
        """
        log_ratio = torch.log(inv_geo.clamp_min(1e-6) / inv_prior)
        total = weight.sum((2, 3), keepdim=True) + cls.ALIGN_SHRINK * weight.shape[-2] * weight.shape[-1]
        return torch.exp((weight * log_ratio).sum((2, 3), keepdim=True) / total)

    @classmethod
    def align_weight(cls, gate: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        """How much each pixel's geometry counts in :meth:`prior_scale`: ``gate * clamp((span - a) / (b - a), 0, 1)``
        with ``(a, b) = ALIGN_SPAN_PX``; ``gate`` [N,1,H,W] in [0, 1], ``span`` [N,1,H,W] the sweep's epipolar reach in
        input pixels (``geometric.epipolar_span``)."""
        lo, hi = cls.ALIGN_SPAN_PX
        return gate * ((span - lo) / (hi - lo)).clamp(0.0, 1.0)

    def output(self, y: torch.Tensor, geometry: torch.Tensor | None = None) -> torch.Tensor:
        """The task's output mapping of the upsampled 1x1-conv output ``y`` [N, c, H, W] float32.

        ``geometry`` [N, 2, H, W]: (inverse depth 1/m, confidence) at the same size, for the geometric depth; with
        ``align_prior`` [N, 3, H, W], the sweep's epipolar span in pixels third (``geometric.epipolar_span``).
        """
        return self.output_with_scale(y, geometry)[0]

    def output_with_scale(self, y: torch.Tensor,
                          geometry: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`output` and, for depth with ``align_prior``, the prior's scale factor ``s`` [N,1,1,1]
        (:meth:`prior_scale`: how far the geometry puts the scene from where the learned prior does); else None."""
        scale = None
        if self.task == "depth":
            span = self.inv_max - self.inv_min
            inv = self.prior(y)
            if self.geometric:
                if geometry is None:
                    raise ValueError("the geometric depth head needs the cost volume's (inverse depth, confidence)")
                inv_geo, conf = geometry[:, :1], geometry[:, 1:2]
                gate = self.gate(y, conf)
                refined = inv_geo + self.RESIDUAL * span * torch.tanh(y[:, 1:2])
                if self.align_prior:
                    if geometry.shape[1] < 3:
                        raise ValueError("the prior's scale alignment needs the sweep's epipolar span as a third "
                                         f"geometry channel, got {geometry.shape[1]} channels")
                    scale = self.prior_scale(inv, inv_geo, self.align_weight(gate, geometry[:, 2:3]))
                    inv = inv * scale
                inv = (gate * refined + (1.0 - gate) * inv).clamp(self.inv_min, self.inv_max)
            return 1.0 / inv, scale
        if self.task == "normals":
            return unit_vectors(y, 1, eps=1e-6), None
        return y, None


class MultiTaskHeads(nn.Module):
    """Fusion + task decoders + optional refiner + predictors: the part of the network after f and g."""

    def __init__(self, config: ModelConfig, feature_info: list[dict], cvm_channels: int):
        super().__init__()
        self.config = config
        self.neck = ImageNeck(feature_info, config.fusion_channels)
        self.fuse = conv_bn_relu(config.fusion_channels + cvm_channels, config.fusion_channels, kernel=1)
        skip_levels = [i for i, f in enumerate(feature_info) if f["reduction"] == 4]
        if not skip_levels:
            msg = f"the encoder has no stride-4 feature level for the decoder skip: {feature_info}"
            raise ConfigError(msg)
        self.skip_level = skip_levels[0]
        self.skip = conv_bn_relu(feature_info[self.skip_level]["num_chs"], config.decoder_channels, kernel=1)
        out_channels = {"semantic": config.num_classes, "depth": 1, "normals": 3, "boundary": 1}
        self.decoders = nn.ModuleDict({t: TaskDecoder(config.fusion_channels, config.decoder_channels) for t in TASKS})
        # An inference copy (``model.inference``) runs all the decoders as one module: same function, fewer calls.
        self.fused_decoders: nn.Module | None = None
        self.refiner = build_refiner(config, dict.fromkeys(TASKS, config.decoder_channels))
        self.predictors = nn.ModuleDict(
            {t: Predictor(t, config.decoder_channels, out_channels[t], config.depth_range, config.geometric_depth,
                          config.prior_scale_alignment)
             for t in TASKS}
        )
        self.depth_cues = config.confidence_depth_cues
        self.confidence = (ConfidenceHead(config.decoder_channels, config.num_depth,
                                          cues=ConfidenceHead.CUES + 2 * self.depth_cues)
                           if config.confidence_head else None)

    def image_feature(self, feats: list[torch.Tensor], fusion_size: tuple[int, int]) -> torch.Tensor:
        """f(I) at the fusion resolution ``[B, fusion_channels, h, w]``."""
        return self.neck(feats, fusion_size)

    def forward(
        self, feats: list[torch.Tensor], image: torch.Tensor, cvm: torch.Tensor | None, size: tuple[int, int],
        geometry: tuple[torch.Tensor, ...] | None = None, logits: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Task outputs at ``size`` = (H, W) and the task features (the predictors' inputs).

        Args:
            feats: encoder levels of the views being predicted (batch N).
            image: f(I) [N, fusion_channels, h, w] from :meth:`image_feature`.
            cvm: concat[C, F] [N, D + C_cvm, h, w] (plus the 2 geometric channels), or None without the CvM.
            size: output (H, W).
            geometry: with ``geometric_depth``, (inverse depth [N,1,h,w] 1/m, confidence [N,1,h,w]) from
                ``geometric.read_out`` (with ``prior_scale_alignment`` also the sweep's epipolar span [N,1,h,w] px); adds "depth_geometric" (metres), "depth_matching_confidence" (the read-out's
                confidence) and "depth_confidence" (that times the prior's agreement, or with ``confidence_head``
                times ``exp(-depth_error / ERROR_SCALE)`` where something was matched, see the module docstring), and with ``confidence_head``
                "depth_error" (the expected abs rel error), all at ``size``; with ``prior_scale_alignment``
                "depth_prior_scale" [N,1,1,1] (``Predictor.prior_scale``).
            logits: the sweep's logits [N,D,h,w] behind ``geometry`` (needed with ``confidence_head``).
        """
        x = image if cvm is None else torch.cat([image, cvm.to(image.dtype)], 1)
        fused = self.fuse(x)
        skip = self.skip(feats[self.skip_level])
        if self.fused_decoders is not None:
            task_feats = self.fused_decoders(fused, skip)
        else:
            task_feats = {t: dec(fused, skip) for t, dec in self.decoders.items()}
        if self.refiner is not None:
            task_feats = self.refiner(task_feats)
        # One bilinear upsampling for all the tasks' 1x1-conv outputs, one for the geometry: the same values as
        # upsampling each on its own (the resize is per channel), a few calls instead of eight.
        ys = [self.predictors[t].conv(task_feats[t]) for t in TASKS]
        ups = resize_bilinear(torch.cat(ys, 1), size).float().split([y.shape[1] for y in ys], 1)
        geometry_up = None if geometry is None else resize_bilinear(torch.cat([t.float() for t in geometry], 1), size)
        out = {t: self.predictors[t].output(y) for t, y in zip(TASKS, ups) if t != "depth"}
        out["depth"], scale = self.predictors["depth"].output_with_scale(ups[TASKS.index("depth")], geometry_up)
        if scale is not None:  # the runtime's pose-consistency check reads it (runtime.pose_consistency)
            out["depth_prior_scale"] = scale
        if geometry_up is not None:
            inv_geo, matching = geometry_up[:, :1], geometry_up[:, 1:2].clamp(0.0, 1.0)
            out["depth_geometric"] = 1.0 / inv_geo
            out["depth_matching_confidence"] = matching
            if self.confidence is None:
                inv_prior = self.predictors["depth"].prior(ups[TASKS.index("depth")])
                out["depth_confidence"] = agreement_confidence(matching, inv_prior, inv_geo)
            else:
                if logits is None:
                    raise ValueError("the confidence head needs the sweep's logits")
                error = self._error(ys[TASKS.index("depth")], task_feats, geometry, logits)
                out["depth_error"] = resize_bilinear(error, size)
                matched = (matching / MATCHED).clamp(max=1.0)
                out["depth_confidence"] = matched * torch.exp(-out["depth_error"] / ERROR_SCALE)
        return out, task_feats

    def _error(self, y: torch.Tensor, task_feats: dict[str, torch.Tensor],
               geometry: tuple[torch.Tensor, ...], logits: torch.Tensor) -> torch.Tensor:
        """``ConfidenceHead`` at the decoder's stride (the sweep's stride 4): ``y`` the depth conv output there."""
        depth = self.predictors["depth"]
        size = y.shape[-2:]
        inv_geo, matching, *epipolar = (resize_bilinear(t.float(), size) for t in geometry)
        probabilities = resize_bilinear(F.softmax(logits.float(), 1), size)
        y = y.float()
        span = depth.inv_max - depth.inv_min
        cues = [matching, depth.gate(y, matching), log_disagreement(depth.prior(y), inv_geo.clamp_min(1e-6)),
                (inv_geo - depth.inv_min) / span]
        if self.depth_cues:
            inv = 1.0 / depth.output(y, torch.cat([inv_geo, matching, *epipolar], 1))
            cues += [(inv - depth.inv_min) / span, log_gradient(inv)]
        cues = torch.cat(cues, 1)
        return self.confidence(task_feats["depth"], probabilities, cues)
