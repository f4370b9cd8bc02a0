"""Image montages of predictions and labels: one row per sample, one column per picture.

Columns: RGB, semantic (prediction, label), depth (prediction, label, absolute error), normals
(prediction, label), boundary (prediction probability, label). Missing labels are drawn grey.
Everything is uint8 RGB ``[H,W,3]`` numpy, for PNG files (cv2) and TensorBoard (``dataformats="HWC"``).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from mtl3d_perception.classes import NYU13_PALETTE, colorize_labels

COLUMNS: tuple[str, ...] = (
    "rgb", "semantic", "semantic_gt", "depth", "depth_gt", "depth_err", "normals", "normals_gt",
    "boundary", "boundary_gt",
)
_GREY = 96


def colorize_depth(depth: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    """Depth ``[H,W]`` metres -> RGB (turbo in inverse depth: near is red); NaN grey."""
    lo, hi = depth_range
    ok = np.isfinite(depth) & (depth > 0)
    inv = np.where(ok, 1.0 / np.clip(np.where(ok, depth, hi), lo, hi), 1.0 / hi)
    t = (inv - 1.0 / hi) / (1.0 / lo - 1.0 / hi)
    rgb = cv2.applyColorMap(np.uint8(np.clip(t, 0, 1) * 255), cv2.COLORMAP_TURBO)[..., ::-1]
    rgb = np.ascontiguousarray(rgb)
    rgb[~ok] = _GREY
    return rgb


def colorize_error(err: np.ndarray, max_err: float) -> np.ndarray:
    """Non-negative error ``[H,W]`` -> RGB (black to white through magma-like hot colours); NaN grey."""
    ok = np.isfinite(err)
    t = np.uint8(np.clip(np.where(ok, err, 0) / max(max_err, 1e-9), 0, 1) * 255)
    rgb = np.ascontiguousarray(cv2.applyColorMap(t, cv2.COLORMAP_INFERNO)[..., ::-1])
    rgb[~ok] = _GREY
    return rgb


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """Normals ``[H,W,3]`` -> RGB ``(1 - n) / 2``: the outward direction as colour, so a wall facing the
    camera is blue and the floor green; NaN grey.
    """
    ok = np.isfinite(normals).all(-1)
    n = -np.where(ok[..., None], normals, 0.0)
    rgb = np.uint8(np.clip((n + 1.0) * 127.5, 0, 255))
    rgb[~ok] = _GREY
    return rgb


def colorize_probability(p: np.ndarray) -> np.ndarray:
    ok = np.isfinite(p)
    g = np.uint8(np.clip(np.where(ok, p, 0), 0, 1) * 255)
    rgb = np.repeat(g[..., None], 3, -1)
    rgb[~ok] = _GREY
    return rgb


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def montage(batch, outputs: dict[str, torch.Tensor], *, depth_range: tuple[float, float] = (0.3, 10.0),
            palette=NYU13_PALETTE, max_rows: int = 4) -> np.ndarray:
    """Montage of the reference view of up to ``max_rows`` samples.

    Args:
        batch: a MultiViewBatch (labels of view 0 are shown).
        outputs: reference-view outputs (``[B,...]``; a view dim, if any, is reduced to view 0).
    """
    def ref(name: str) -> torch.Tensor | None:
        t = outputs.get(name)
        if t is None:
            return None
        expected = 4  # [B,C,H,W]
        return t[:, 0] if t.dim() == expected + 1 else t

    rows = []
    B = min(batch.batch_size, max_rows)
    H, W = batch.hw
    blank = np.full((H, W, 3), _GREY, np.uint8)
    sem, dep, nrm, bnd = ref("semantic"), ref("depth"), ref("normals"), ref("boundary")
    for b in range(B):
        cells = {"rgb": np.uint8(np.clip(_np(batch.images[b, 0]).transpose(1, 2, 0) * 255 + 0.5, 0, 255))}
        gt_sem = batch.semantic[b, 0].cpu().numpy().astype(np.uint8)
        has = {t: bool(batch.valid[t][b, 0]) for t in batch.valid}
        cells["semantic"] = colorize_labels(sem[b].argmax(0).cpu().numpy().astype(np.uint8), palette) if sem is not None else blank
        cells["semantic_gt"] = colorize_labels(gt_sem, palette) if has["semantic"] else blank
        gt_d = _np(batch.depth[b, 0, 0])
        pd = _np(dep[b, 0]) if dep is not None else None
        cells["depth"] = colorize_depth(pd, depth_range) if pd is not None else blank
        cells["depth_gt"] = colorize_depth(gt_d, depth_range) if has["depth"] else blank
        if pd is not None and has["depth"]:
            err = np.abs(pd - gt_d)
            cells["depth_err"] = colorize_error(err, 0.2 * depth_range[1] / 2)
        else:
            cells["depth_err"] = blank
        cells["normals"] = colorize_normals(_np(nrm[b]).transpose(1, 2, 0)) if nrm is not None else blank
        cells["normals_gt"] = colorize_normals(_np(batch.normals[b, 0]).transpose(1, 2, 0)) if has["normals"] else blank
        cells["boundary"] = colorize_probability(_np(torch.sigmoid(bnd[b, 0].float()))) if bnd is not None else blank
        cells["boundary_gt"] = colorize_probability(_np(batch.boundary[b, 0, 0])) if has["boundary"] else blank
        rows.append(np.concatenate([cells[c] for c in COLUMNS], axis=1))
    return np.concatenate(rows, axis=0)


def save_png(path, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG."""
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        msg = f"could not write {path}"
        raise OSError(msg)
