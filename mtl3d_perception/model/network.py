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

from dataclasses import dataclass

import torch
from torch import nn

from mtl3d_perception import geometry
from mtl3d_perception.model.config import ModelConfig
from mtl3d_perception.model.cvm import STRIDE, CrossViewModule
from mtl3d_perception.model.encoders import IMAGENET_MEAN, IMAGENET_STD, build_encoder
from mtl3d_perception.model.heads import MultiTaskHeads


@dataclass
class FrameFeatures:
    """Per-frame features, cacheable: the encoder levels f(I) and the CvM spatial features s(I).

    Attributes:
        image: encoder levels, ``[B, C_i, H/r_i, W/r_i]`` (see ``model.encoder.feature_info``).
        spatial: ``[B, C_cvm, H/8, W/8]``, or None when the model has no CvM.
        size: the input (H, W).
    """

    image: list[torch.Tensor]
    spatial: torch.Tensor | None
    size: tuple[int, int]

    def to(self, *args, **kwargs) -> FrameFeatures:
        return FrameFeatures(
            [f.to(*args, **kwargs) for f in self.image],
            None if self.spatial is None else self.spatial.to(*args, **kwargs),
            self.size,
        )

    def detach(self) -> FrameFeatures:
        return FrameFeatures([f.detach() for f in self.image], None if self.spatial is None else self.spatial.detach(), self.size)

    def select(self, index) -> FrameFeatures:
        """Batch slice/index (keeps the batch dim for a slice or index tensor)."""
        return FrameFeatures([f[index] for f in self.image], None if self.spatial is None else self.spatial[index], self.size)

    @property
    def batch_size(self) -> int:
        return self.image[0].shape[0]

    @staticmethod
    def cat(items: list[FrameFeatures]) -> FrameFeatures:
        spatial = None if items[0].spatial is None else torch.cat([f.spatial for f in items])
        levels = [torch.cat([f.image[i] for f in items]) for i in range(len(items[0].image))]
        return FrameFeatures(levels, spatial, items[0].size)


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
        image = self.encoder((images - self.image_mean) / self.image_std)
        spatial = None
        if self.cvm is not None:
            spatial = self.cvm.spatial((images - self.cvm_mean) / self.cvm_std)
        return FrameFeatures(list(image), spatial, (int(H), int(W)))

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
        return self._heads(ref, cvm, return_features)

    def _heads(self, frames: FrameFeatures, cvm: torch.Tensor | None, return_features: bool) -> dict:
        H, W = frames.size
        image = self.heads.image_feature(frames.image, (H // STRIDE, W // STRIDE))
        out, task_feats = self.heads(frames.image, image, cvm, (H, W))
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
        out = self._heads(frames, cvm, return_features)
        return _unflatten(out, B, V)


def _unflatten(out, B: int, V: int):
    if isinstance(out, dict):
        return {k: _unflatten(v, B, V) for k, v in out.items()}
    return out.view(B, V, *out.shape[1:])


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)
