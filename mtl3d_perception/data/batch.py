"""`MultiViewBatch`: what every dataset yields and what the trainer, losses and metrics consume.

Shapes use DESIGN's letters. View 0 is the reference view (the frame the network predicts); views
1.. are its sources. Every task always has a label tensor, so batches from different sources collate;
whether a label exists is said by ``valid[task]`` ``[B,V]`` and, inside an image, by the label value
(semantic 255, depth / normals / boundary NaN).

- ``images``    ``[B,V,3,H,W]`` float32 RGB in [0, 1]
- ``K``         ``[B,V,3,3]`` float32, pixels, at (H, W)
- ``poses``     ``[B,V,4,4]`` float32, T_world_cam
- ``semantic``  ``[B,V,H,W]`` int64, 255 = ignore
- ``depth``     ``[B,V,1,H,W]`` float32 metres, NaN (or <= 0) = invalid
- ``normals``   ``[B,V,3,H,W]`` float32 unit, camera optical frame, towards the camera; NaN = invalid
- ``boundary``  ``[B,V,1,H,W]`` float32 in {0, 1}, NaN = invalid
- ``valid``     task -> ``[B,V]`` bool
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mtl3d_perception.classes import IGNORE_INDEX

TASKS: tuple[str, ...] = ("semantic", "depth", "normals", "boundary")


@dataclass
class ViewSample:
    """One view before tensor conversion (numpy, as datasets and augmentations handle it).

    Missing labels are ``None``. ``rgb`` ``[H,W,3]`` uint8; ``K`` ``[3,3]``; ``T_world_cam`` ``[4,4]``;
    ``depth`` ``[H,W]`` float32 m (NaN invalid); ``normals`` ``[H,W,3]`` float32 (NaN invalid);
    ``semantic`` ``[H,W]`` uint8 (255 ignore); ``boundary`` ``[H,W]`` float32 {0,1} (NaN invalid).
    """

    rgb: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    semantic: np.ndarray | None = None
    boundary: np.ndarray | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


@dataclass
class MultiViewBatch:
    """A batch of B samples of V views; see the module docstring for shapes."""

    images: torch.Tensor
    K: torch.Tensor
    poses: torch.Tensor
    semantic: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    boundary: torch.Tensor
    valid: dict[str, torch.Tensor]
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    @property
    def num_views(self) -> int:
        return self.images.shape[1]

    @property
    def hw(self) -> tuple[int, int]:
        return self.images.shape[-2], self.images.shape[-1]

    def label(self, task: str) -> torch.Tensor:
        """The label tensor of ``task`` (one of :data:`TASKS`)."""
        if task not in TASKS:
            msg = f"unknown task {task!r}; expected one of {', '.join(TASKS)}"
            raise KeyError(msg)
        return getattr(self, task)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultiViewBatch:
        """A copy with every tensor on ``device``."""
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)
        return MultiViewBatch(
            images=move(self.images), K=move(self.K), poses=move(self.poses),
            semantic=move(self.semantic), depth=move(self.depth), normals=move(self.normals),
            boundary=move(self.boundary), valid={k: move(v) for k, v in self.valid.items()},
            meta=list(self.meta),
        )

    def pin_memory(self) -> MultiViewBatch:
        """Called by DataLoader(pin_memory=True)."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).pin_memory() for f in dataclasses.fields(self)
                     if isinstance(getattr(self, f.name), torch.Tensor)},
            valid={k: v.pin_memory() for k, v in self.valid.items()},
        )

    def single_view(self) -> MultiViewBatch:
        """The reference view duplicated as its own source (paper protocol): identical image and pose.

        The source's labels are the reference's, so losses on all views stay meaningful.
        """
        V = self.num_views

        def dup(t: torch.Tensor) -> torch.Tensor:
            return t[:, :1].expand(-1, V, *t.shape[2:]).contiguous()
        return MultiViewBatch(
            images=dup(self.images), K=dup(self.K), poses=dup(self.poses), semantic=dup(self.semantic),
            depth=dup(self.depth), normals=dup(self.normals), boundary=dup(self.boundary),
            valid={k: dup(v) for k, v in self.valid.items()}, meta=list(self.meta),
        )

    @staticmethod
    def collate(items: list[MultiViewBatch]) -> MultiViewBatch:
        """Concatenate batches (usually single samples with B=1) along B; V and (H, W) must agree."""
        if not items:
            raise ValueError("cannot collate an empty list of samples")
        shapes = {tuple(b.images.shape[1:]) for b in items}
        if len(shapes) != 1:
            msg = f"samples disagree on [V,3,H,W]: {sorted(shapes)}; set one data.image_size and data.num_views"
            raise ValueError(msg)

        def cat(name: str) -> torch.Tensor:
            return torch.cat([getattr(b, name) for b in items], 0)
        return MultiViewBatch(
            images=cat("images"), K=cat("K"), poses=cat("poses"), semantic=cat("semantic"),
            depth=cat("depth"), normals=cat("normals"), boundary=cat("boundary"),
            valid={t: torch.cat([b.valid[t] for b in items], 0) for t in TASKS},
            meta=[m for b in items for m in b.meta],
        )

    @staticmethod
    def from_views(views: list[ViewSample], *, valid: dict[str, bool] | None = None,
                   meta: dict[str, Any] | None = None) -> MultiViewBatch:
        """One sample (B=1) from V numpy views of one size.

        A task's label is valid in a view when the view has it and ``valid.get(task, True)``; the
        tensors of missing labels are filled with the invalid value.
        """
        H, W = views[0].hw
        for i, v in enumerate(views):
            if v.hw != (H, W):
                msg = f"view {i} is {v.hw[1]}x{v.hw[0]} but view 0 is {W}x{H}; resize views to one size first"
                raise ValueError(msg)
        keep = valid or {}
        V = len(views)
        semantic = torch.full((1, V, H, W), IGNORE_INDEX, dtype=torch.long)
        depth = torch.full((1, V, 1, H, W), float("nan"))
        normals = torch.full((1, V, 3, H, W), float("nan"))
        boundary = torch.full((1, V, 1, H, W), float("nan"))
        flags = {t: torch.zeros(1, V, dtype=torch.bool) for t in TASKS}
        for i, v in enumerate(views):
            if v.semantic is not None and keep.get("semantic", True):
                semantic[0, i] = torch.from_numpy(np.asarray(v.semantic, np.int64))
                flags["semantic"][0, i] = True
            if v.depth is not None and keep.get("depth", True):
                depth[0, i, 0] = torch.from_numpy(np.asarray(v.depth, np.float32))
                flags["depth"][0, i] = True
            if v.normals is not None and keep.get("normals", True):
                normals[0, i] = torch.from_numpy(np.asarray(v.normals, np.float32)).permute(2, 0, 1)
                flags["normals"][0, i] = True
            if v.boundary is not None and keep.get("boundary", True):
                boundary[0, i, 0] = torch.from_numpy(np.asarray(v.boundary, np.float32))
                flags["boundary"][0, i] = True
        rgb = np.stack([np.asarray(v.rgb) for v in views])  # [V,H,W,3]
        images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255.0).unsqueeze(0)
        return MultiViewBatch(
            images=images,
            K=torch.from_numpy(np.stack([v.K for v in views]).astype(np.float32)).unsqueeze(0),
            poses=torch.from_numpy(np.stack([v.T_world_cam for v in views]).astype(np.float32)).unsqueeze(0),
            semantic=semantic, depth=depth, normals=normals, boundary=boundary, valid=flags,
            meta=[dict(meta or {})],
        )


def collate(items: list[MultiViewBatch]) -> MultiViewBatch:
    """DataLoader ``collate_fn``: see :meth:`MultiViewBatch.collate`."""
    return MultiViewBatch.collate(items)
