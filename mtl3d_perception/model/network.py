"""CvMMTL: the multi-task network with the Cross-view Module, composed nanoGPT/UniMatch style.

    f (encoder)  ->  FrameFeatures  <-  s (CvM spatial encoder)        per frame, cacheable: encode()
    m (multi-view transformer) -> F, e (plane sweep) -> C              per view set:  predict()
    heads(concat[f(I), C, F]) -> semantic, depth, normals, boundary

``forward`` takes a batch of view sets ``[B, V, ...]`` (view 0 is the reference); ``encode`` +
``predict`` is the same computation for a robot that encodes each frame once and reuses it as a
source view later. Single-view mode (the paper's protocol) is the reference duplicated as its own
source with the identity pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtl3d_perception import geometry
from mtl3d_perception.model.config import ModelConfig
from mtl3d_perception.model.cvm import STRIDE, CrossViewModule, nearest_views, plane_sweep
from mtl3d_perception.model.encoders import IMAGENET_MEAN, IMAGENET_STD, build_encoder
from mtl3d_perception.model.geometric import MatchingFeatures, epipolar_span, read_out, window_mean
from mtl3d_perception.model.heads import MultiTaskHeads

# The most ``exposure_gain`` brightens an image (x4, 12 dB: a camera's analogue gain limit): a nearly black frame (a
# lens cap, a dark corridor) is not amplified into noise; a quarter of the usual brightness is still fully corrected.
MAX_EXPOSURE_GAIN = 4.0


def exposure_gain(images: torch.Tensor, band: tuple[float, float]) -> torch.Tensor:
    """``images`` [B, 3, H, W] RGB in [0, 1], each scaled so its mean intensity lies in ``band`` = (lo, hi), by a gain
    of at most ``MAX_EXPOSURE_GAIN``, clipped to [0, 1]; an image already inside the band is returned unchanged (a
    gain of exactly 1).

    A camera's automatic gain, applied again to what the network sees: a fixed-exposure or under-exposed camera
    (a dim room, a robot that locks exposure against flicker) gives images darker than any the network trained on.
    The mean is of the encoded values (sRGB as delivered), like the mean-brightness metering of simple auto-exposure.
    """
    lo, hi = band
    mean = images.mean((1, 2, 3), keepdim=True)
    gain = (mean.clamp(lo, hi) / mean.clamp_min(1e-6)).clamp(max=MAX_EXPOSURE_GAIN)
    return torch.where(gain == 1.0, images, (images * gain).clamp(0.0, 1.0))


@dataclass
class FrameFeatures:
    """Per-frame features, cacheable: the encoder levels f(I) and the CvM spatial features s(I).

    Attributes:
        image: encoder levels, ``[B, C_i, H/r_i, W/r_i]`` (see ``model.encoder.feature_info``).
        spatial: ``[B, C_cvm, H/8, W/8]``, or None when the model has no CvM.
        size: the input (H, W).
        matching: ``[B, C_m, H/4, W/4]`` matching features of the geometric depth, or None without it.
    """

    image: list[torch.Tensor]
    spatial: torch.Tensor | None
    size: tuple[int, int]
    matching: torch.Tensor | None = None

    def _map(self, fn) -> FrameFeatures:
        return FrameFeatures([fn(f) for f in self.image], None if self.spatial is None else fn(self.spatial), self.size,
                             None if self.matching is None else fn(self.matching))

    def to(self, *args, **kwargs) -> FrameFeatures:
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> FrameFeatures:
        return self._map(torch.Tensor.detach)

    def select(self, index) -> FrameFeatures:
        """Batch slice/index (keeps the batch dim for a slice or index tensor)."""
        return self._map(lambda t: t[index])

    @property
    def batch_size(self) -> int:
        return self.image[0].shape[0]

    @staticmethod
    def cat(items: list[FrameFeatures]) -> FrameFeatures:
        spatial = None if items[0].spatial is None else torch.cat([f.spatial for f in items])
        matching = None if items[0].matching is None else torch.cat([f.matching for f in items])
        levels = [torch.cat([f.image[i] for f in items]) for i in range(len(items[0].image))]
        return FrameFeatures(levels, spatial, items[0].size, matching)


class CvMMTL(nn.Module):
    """3D-aware multi-task network (semantic, metric depth, normals, boundary) of DESIGN §5 "Model"."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.encoder = build_encoder(config)
        # Resolve the encoder's normalisation into the config (timm's pretrained cfg), so a
        # checkpoint states the exact mean/std its weights expect.
        config = config.replace(
            image_mean=tuple(config.image_mean or self.encoder.mean), image_std=tuple(config.image_std or self.encoder.std)
        )
        self.config = config
        self.cvm = CrossViewModule(config) if config.use_cvm else None
        cvm_channels = self.cvm.out_channels if self.cvm is not None else 0
        self.matching = None
        if config.geometric_depth:
            self.matching = MatchingFeatures(self.encoder.feature_info, config.match_channels, STRIDE // 2)
            cvm_channels += 2  # normalised geometric inverse depth and its confidence
        self.heads = MultiTaskHeads(config, self.encoder.feature_info, cvm_channels)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("cvm_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("cvm_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads.predictors)

    # ---------------------------------------------------------------------------------------------
    # Streaming API
    # ---------------------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> FrameFeatures:
        """Per-frame features of ``images`` [B, 3, H, W] float RGB in [0, 1] (H, W multiples of 8)."""
        _check(images.dim() == 4 and images.shape[1] == 3, f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        H, W = images.shape[-2:]
        _check(H % STRIDE == 0 and W % STRIDE == 0, f"image height and width must be multiples of {STRIDE}, got {H}x{W}")
        _check(images.is_floating_point(), f"images must be float RGB in [0, 1], got {images.dtype}")
        images, x_encoder, x_cvm = self.inputs(images)
        image = self.encoder(x_encoder)
        spatial = None if x_cvm is None else self.cvm.spatial(x_cvm)
        matching = None if self.matching is None else self.matching(images, list(image))
        return FrameFeatures(list(image), spatial, (int(H), int(W)), matching)

    def inputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What the network's parts see of ``images`` [B, 3, H, W] RGB in [0, 1]: the images after the exposure band
        (``config.exposure_band``, :func:`exposure_gain`; the matching features' input), normalised for the encoder
        (``image_mean``/``image_std``) and for the CvM's spatial encoder (ImageNet statistics; None without a CvM)."""
        if self.config.exposure_band is not None:
            images = exposure_gain(images, self.config.exposure_band)
        x_cvm = None if self.cvm is None else (images - self.cvm_mean) / self.cvm_std
        return images, (images - self.image_mean) / self.image_std, x_cvm

    def predict(
        self,
        ref: FrameFeatures,
        src: FrameFeatures | list[FrameFeatures],
        K: torch.Tensor,
        T_src_ref: torch.Tensor,
        return_features: bool = False,
    ) -> dict:
        """Task outputs for the reference frame given cached features.

        Args:
            ref: the reference frame's features (batch B).
            src: one source frame's features, or a list of S of them (costs are averaged over sources).
            K: [B, 3, 3] intrinsics at input resolution (shared by reference and sources).
            T_src_ref: [B, 4, 4] or [B, S, 4, 4], mapping reference-camera points into each source camera.
            return_features: add "features" (see :meth:`forward`).

        Returns:
            dict task -> [B, ...] (DESIGN §5) at the input resolution.
        """
        srcs = [src] if isinstance(src, FrameFeatures) else list(src)
        _check(len(srcs) >= 1, "predict needs at least one source frame (pass the reference itself for single view)")
        if T_src_ref.dim() == 3:
            T_src_ref = T_src_ref[:, None]
        B = ref.batch_size
        _check(tuple(K.shape) == (B, 3, 3), f"K must be [B, 3, 3] = [{B}, 3, 3], got {tuple(K.shape)}")
        _check(
            tuple(T_src_ref.shape) == (B, len(srcs), 4, 4),
            f"T_src_ref must be [B, 4, 4] or [B, S, 4, 4] = [{B}, {len(srcs)}, 4, 4], got {tuple(T_src_ref.shape)}",
        )
        for s in srcs:
            _check(s.size == ref.size, f"source frame size {s.size} differs from the reference's {ref.size}")
        cvm = None
        if self.cvm is not None:
            _check(all(f.spatial is not None for f in [ref, *srcs]), "frame features lack the CvM's spatial features")
            spatial = torch.stack([ref.spatial] + [s.spatial for s in srcs], 1)  # [B, 1+S, C, h, w]
            H, W = ref.size
            # geometry stays float32 whatever the feature dtype (bf16 would move the principal point)
            cross, cost = self.cvm.match(spatial, K.float(), T_src_ref.float(), (W, H))
            cvm = torch.cat([cost[:, 0], cross[:, 0].to(cost.dtype)], 1)
        logits = None
        if self.matching is not None:
            src_match = torch.stack([s.matching for s in srcs], 1)
            logits = self.sweep_logits(ref.matching, src_match, K.float(), T_src_ref.float(), ref.size)
        return self._heads(ref, cvm, logits, return_features, self._span(K, T_src_ref, ref.size, logits))

    def _span(self, K: torch.Tensor, T_src_ref: torch.Tensor, size: tuple[int, int],
              logits: torch.Tensor | None) -> torch.Tensor | None:
        """``geometric.epipolar_span`` on the sweep's grid where the prior's scale alignment needs it, else None."""
        if logits is None or not self.config.prior_scale_alignment:
            return None
        cfg = self.config
        depths = geometry.depth_candidates(cfg.depth_min, cfg.depth_max, cfg.num_depth, like=logits)
        return epipolar_span(K, T_src_ref, size, logits.shape[-2:], depths)

    def sweep_logits(self, ref: torch.Tensor, src: torch.Tensor, K: torch.Tensor, T_src_ref: torch.Tensor,
                     size: tuple[int, int]) -> torch.Tensor:
        """Plane-sweep logits of the geometric depth ``[N, D, H/4, W/4]``: dot products of matching features.

        With the config's ``sweep_aggregation`` k > 1 each cell's logits are the mean over its k x k window.

        ``ref`` [N,C,h,w], ``src`` [N,S,C,h,w] (averaged over S), ``K`` [N,3,3] at input ``size`` = (H, W),
        ``T_src_ref`` [N,S,4,4]. The op divides by sqrt(C); that is undone, so the scales learned by
        ``MatchingFeatures`` are the softmax temperatures.
        """
        H, W = size
        cfg = self.config
        cost = plane_sweep(ref, src, K, T_src_ref, (W, H), cfg.depth_range, cfg.num_depth, cfg.cost_volume_backend)
        return window_mean(cost, cfg.sweep_aggregation) * math.sqrt(ref.shape[1])

    def _heads(self, frames: FrameFeatures, cvm: torch.Tensor | None, logits: torch.Tensor | None,
               return_features: bool, span: torch.Tensor | None) -> dict:
        """Fusion, the geometric read-out and the heads; ``span`` from :meth:`_span` (None without the alignment)."""
        H, W = frames.size
        image = self.heads.image_feature(frames.image, (H // STRIDE, W // STRIDE))
        geometry_out = None
        if logits is not None:
            cfg = self.config
            inv, conf = read_out(logits, geometry.depth_candidates(cfg.depth_min, cfg.depth_max, cfg.num_depth,
                                                                   like=logits))
            inv_min, inv_max = 1.0 / cfg.depth_max, 1.0 / cfg.depth_min
            geo = torch.cat([(inv - inv_min) / (inv_max - inv_min), conf], 1)  # at the sweep's stride 4
            cvm = torch.cat([cvm, F.adaptive_avg_pool2d(geo, cvm.shape[-2:]).to(cvm.dtype)], 1)
            geometry_out = (inv, conf) if span is None else (inv, conf, span)
        out, task_feats = self.heads(frames.image, image, cvm, (H, W), geometry_out, logits)
        if logits is not None:
            out["depth_logits"] = logits
        if return_features:
            out["features"] = {"image": image, "tasks": task_feats}
        return out

    # ---------------------------------------------------------------------------------------------
    # Batch API
    # ---------------------------------------------------------------------------------------------

    def forward(
        self,
        images: torch.Tensor,
        intrinsics: torch.Tensor,
        poses: torch.Tensor,
        all_views: bool = False,
        return_features: bool = False,
    ) -> dict:
        """Predict the reference view (or every view) of each view set.

        Args:
            images: [B, V, 3, H, W] float RGB in [0, 1]; view 0 is the reference. V == 1 runs
                single-view mode (the reference duplicated with the identity pose).
            intrinsics: [B, V, 3, 3] at input resolution.
            poses: [B, V, 4, 4] T_world_cam.
            all_views: predict every view, each against all the others; outputs get a view dim.
            return_features: add "features": {"image": f(I) at stride 8 [B(,V), C, h, w],
                "tasks": {task: decoder feature before the predictor [B(,V), C_t, H/4, W/4]}}.

        Returns:
            "semantic" [B, K, H, W] logits, "depth" [B, 1, H, W] metres, "normals" [B, 3, H, W] unit
            (camera optical frame), "boundary" [B, 1, H, W] logits; [B, V, ...] with ``all_views``.
        """
        _check(images.dim() == 5 and images.shape[2] == 3, f"images must be [B, V, 3, H, W], got {tuple(images.shape)}")
        B, V = images.shape[:2]
        _check(tuple(intrinsics.shape) == (B, V, 3, 3), f"intrinsics must be [B, V, 3, 3] = [{B}, {V}, 3, 3], got {tuple(intrinsics.shape)}")
        _check(tuple(poses.shape) == (B, V, 4, 4), f"poses must be [B, V, 4, 4] = [{B}, {V}, 4, 4], got {tuple(poses.shape)}")
        frames = self.encode(images.flatten(0, 1))
        if not all_views:
            views = [frames.select(slice(v, None, V)) for v in range(V)]  # row b*V + v
            ref, srcs = views[0], views[1:] or [views[0]]
            if V == 1:
                T = torch.eye(4, dtype=poses.dtype, device=poses.device).expand(B, 1, 4, 4)
            else:
                T = geometry.relative_pose(poses[:, 1:], poses[:, :1])  # inv(T_world_src) @ T_world_ref
            return self.predict(ref, srcs, intrinsics[:, 0], T, return_features)
        # Every view against all others; V == 1 duplicates the view.
        cvm = None
        if self.cvm is not None:
            spatial = frames.spatial.view(B, V, *frames.spatial.shape[1:])
            if V == 1:
                spatial, intrinsics, poses = spatial.repeat(1, 2, 1, 1, 1), intrinsics.repeat(1, 2, 1, 1), poses.repeat(1, 2, 1, 1)
            T = geometry.relative_pose(poses[:, :, None], poses[:, None, :])  # [B, V, V]: view i <- view j
            H, W = frames.size
            cross, cost = self.cvm.match(spatial, intrinsics.float(), T.float(), (W, H), all_views=True)
            cvm = torch.cat([cost, cross.to(cost.dtype)], 2)[:, :V].flatten(0, 1)
        logits = span = None
        if self.matching is not None:
            match = frames.matching.view(B, V, *frames.matching.shape[1:])
            if V == 1:
                match = match.repeat(1, 2, 1, 1, 1)
            neighbours = nearest_views(T, self.config.cvm_max_sources)  # [B, V', k], as the CvM matches
            batch = torch.arange(B, device=match.device)[:, None, None]
            view = torch.arange(match.shape[1], device=match.device)[None, :, None]
            src = match[batch, neighbours]  # [B, V', k, C, h, w]
            T_n = T[batch, neighbours, view]  # neighbour <- view
            logits = self.sweep_logits(match.flatten(0, 1), src.flatten(0, 1), intrinsics.flatten(0, 1).float(),
                                       T_n.flatten(0, 1).float(), frames.size)
            span = self._span(intrinsics.flatten(0, 1), T_n.flatten(0, 1), frames.size, logits)
            logits = logits.view(B, -1, *logits.shape[1:])[:, :V].flatten(0, 1)
            span = None if span is None else span.view(B, -1, *span.shape[1:])[:, :V].flatten(0, 1)
        out = self._heads(frames, cvm, logits, return_features, span)
        return _unflatten(out, B, V)


def _unflatten(out, B: int, V: int):
    if isinstance(out, dict):
        return {k: _unflatten(v, B, V) for k, v in out.items()}
    return out.view(B, V, *out.shape[1:])


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)
