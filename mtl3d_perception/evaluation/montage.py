"""Image montages of predictions and labels: one row per sample, one column per picture, and the colourings.

Columns (``COLUMNS``): RGB, semantic (prediction, label), depth (prediction, label, absolute error), normals
(prediction, label), boundary (prediction probability, label). Missing pictures are drawn grey; replay leaves out
the columns of a ground truth its bag does not have, and :func:`montage` those of a ground truth none of its rows
has (:func:`columns_for`). One row
builder, :func:`montage_row`, serves training and `mtl3d eval` (:func:`montage`, from batches) and replay
(from products and ground-truth messages), and one title row, :func:`with_titles`, heads both. Everything is
uint8 RGB ``[H,W,3]`` numpy, for PNG files (cv2) and TensorBoard (``dataformats="HWC"``).

Colourings are the ones the node publishes too: ``~/semantic/image_color`` is :func:`colorize_labels`,
``~/normals/image_color`` is :func:`colorize_normals` (DESIGN §4: the outward direction ``(1 - n) / 2``).
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
TITLES = ("RGB", "semantic", "semantic GT", "depth", "depth GT", "depth error", "normals", "normals GT",
          "boundary", "boundary GT")
# The columns each kind of ground truth feeds: a montage of data without it leaves them out (replay of a robot's bag).
GT_COLUMNS = {"depth": ("depth_gt", "depth_err", "normals_gt"), "semantic": ("semantic_gt", "boundary_gt")}


def columns_for(ground_truth: dict[str, bool]) -> tuple[str, ...]:
    """``COLUMNS`` without those of the ground-truth kinds (``depth``, ``semantic``) that ``ground_truth`` lacks."""
    dropped = {c for kind, cols in GT_COLUMNS.items() if not ground_truth.get(kind, False) for c in cols}
    return tuple(c for c in COLUMNS if c not in dropped)


def titles_for(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The title of each of ``columns`` (names from ``COLUMNS``)."""
    return tuple(TITLES[COLUMNS.index(c)] for c in columns)
_GREY = 96


def colorize_depth(depth: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    """Depth ``[H,W]`` metres -> RGB: turbo over ``depth_range`` in log depth, near red, far blue; NaN grey.

    The one depth colouring: montages and the node's ``~/depth/image_color``. Log depth, not inverse depth: over
    0.3–10 m inverse depth gives the 1–3 m of a room 8 % of the colour map (every indoor frame one blue), log depth a
    third of it.
    """
    lo, hi = depth_range
    ok = (depth > 0) & (depth < np.inf)  # NaN compares False
    # float32 and OpenCV's vectorised log: 1280x720 (output_resolution camera) in ~3 ms, not ~15-30 ms in float64
    log_d = np.clip(depth, lo, hi).astype(np.float32, copy=False)
    cv2.patchNaNs(log_d, hi)
    log_d = cv2.log(log_d)
    np.multiply(np.float32(np.log(hi)) - log_d, np.float32(255.0 / (np.log(hi) - np.log(lo))), out=log_d)
    log_d += np.float32(1e-3)  # float32 rounding must not floor an exact index (255 at the near end) to the one below
    index = np.clip(log_d, 0, 255, out=log_d).astype(np.uint8)  # 0 far (blue) .. 255 near (red)
    rgb = cv2.cvtColor(cv2.applyColorMap(index, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
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
    """Normals ``[H,W,3]`` (optical frame, pointing at the camera) -> RGB ``(1 - n) / 2 * 255``: the outward
    direction as colour, so a wall facing the camera is blue and a floor seen from above green; NaN grey.

    The one normal colouring (DESIGN §4): montages, reports and the node's ``~/normals/image_color`` all use it.
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


def montage_row(rgb: np.ndarray, *, depth_range: tuple[float, float], palette=NYU13_PALETTE,
                semantic: np.ndarray | None = None, semantic_gt: np.ndarray | None = None,
                depth: np.ndarray | None = None, depth_gt: np.ndarray | None = None,
                normals: np.ndarray | None = None, normals_gt: np.ndarray | None = None,
                boundary: np.ndarray | None = None, boundary_gt: np.ndarray | None = None,
                columns: tuple[str, ...] = COLUMNS) -> np.ndarray:
    """One montage row, ``columns`` (default ``COLUMNS``) side by side at ``rgb``'s size ``[H, W*len(columns), 3]``
    uint8.

    Args:
        rgb: ``[H,W,3]`` uint8; every other picture must have the same ``H, W`` (missing ones are grey).
        semantic, semantic_gt: ``[H,W]`` class ids (255 ignore); depth, depth_gt: ``[H,W]`` metres (NaN invalid);
        normals, normals_gt: ``[H,W,3]`` unit vectors; boundary, boundary_gt: ``[H,W]`` probabilities in [0, 1].
        depth_range: (near, far) metres of the depth colouring; the error scale is ``0.1 * far``.
    """
    H, W = rgb.shape[:2]
    blank = np.full((H, W, 3), _GREY, np.uint8)
    cells = {
        "rgb": rgb,
        "semantic": None if semantic is None else colorize_labels(semantic, palette),
        "semantic_gt": None if semantic_gt is None else colorize_labels(semantic_gt, palette),
        "depth": None if depth is None else colorize_depth(depth, depth_range),
        "depth_gt": None if depth_gt is None else colorize_depth(depth_gt, depth_range),
        "depth_err": None if depth is None or depth_gt is None else colorize_error(np.abs(depth - depth_gt),
                                                                                   0.1 * depth_range[1]),
        "normals": None if normals is None else colorize_normals(normals),
        "normals_gt": None if normals_gt is None else colorize_normals(normals_gt),
        "boundary": None if boundary is None else colorize_probability(boundary),
        "boundary_gt": None if boundary_gt is None else colorize_probability(boundary_gt),
    }
    return np.concatenate([blank if cells[c] is None else cells[c] for c in columns], axis=1)


def with_titles(rows: list[np.ndarray], columns: tuple[str, ...] = COLUMNS) -> np.ndarray | None:
    """Rows of :func:`montage_row` (of these ``columns``) stacked under a white title row naming them (None: no
    rows)."""
    if not rows:
        return None
    body = np.concatenate(rows, axis=0)
    cell_w = body.shape[1] // len(columns)
    title = np.full((18, body.shape[1], 3), 255, np.uint8)
    scale = min(0.45, cell_w / 230)
    for i, name in enumerate(titles_for(columns)):
        cv2.putText(title, name, (i * cell_w + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([title, body], axis=0)


def montage(batch, outputs: dict[str, torch.Tensor], *, depth_range: tuple[float, float] = (0.3, 10.0),
            palette=NYU13_PALETTE, max_rows: int = 4) -> np.ndarray:
    """Montage of the reference view of up to ``max_rows`` (>= 1) samples under the title row naming the columns
    (:func:`with_titles`, as replay's montage.png).

    Args:
        batch: a MultiViewBatch (labels of view 0 are shown; at least one sample).
        outputs: reference-view outputs (``[B,...]``; a view dim, if any, is reduced to view 0).

    Raises:
        ValueError: ``max_rows`` < 1.
    """
    if max_rows < 1:
        msg = f"max_rows must be >= 1, got {max_rows}"
        raise ValueError(msg)
    def ref(name: str) -> torch.Tensor | None:
        t = outputs.get(name)
        if t is None:
            return None
        expected = 4  # [B,C,H,W]
        return t[:, 0] if t.dim() == expected + 1 else t

    rows = []
    sem, dep, nrm, bnd = ref("semantic"), ref("depth"), ref("normals"), ref("boundary")
    n = min(batch.batch_size, max_rows)
    # no column for a ground truth none of the rows has (real frames: depth, no labels)
    columns = columns_for({kind: bool(batch.valid[kind][:n, 0].any()) for kind in GT_COLUMNS})
    for b in range(n):
        has = {t: bool(batch.valid[t][b, 0]) for t in batch.valid}
        rows.append(montage_row(
            np.uint8(np.clip(_np(batch.images[b, 0]).transpose(1, 2, 0) * 255 + 0.5, 0, 255)),
            depth_range=depth_range, palette=palette,
            semantic=None if sem is None else sem[b].argmax(0).cpu().numpy().astype(np.uint8),
            semantic_gt=batch.semantic[b, 0].cpu().numpy().astype(np.uint8) if has["semantic"] else None,
            depth=None if dep is None else _np(dep[b, 0]),
            depth_gt=_np(batch.depth[b, 0, 0]) if has["depth"] else None,
            normals=None if nrm is None else _np(nrm[b]).transpose(1, 2, 0),
            normals_gt=_np(batch.normals[b, 0]).transpose(1, 2, 0) if has["normals"] else None,
            boundary=None if bnd is None else _np(torch.sigmoid(bnd[b, 0].float())),
            boundary_gt=_np(batch.boundary[b, 0, 0]) if has["boundary"] else None, columns=columns,
        ))
    return with_titles(rows, columns)


def save_png(path, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG."""
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        msg = f"could not write {path}"
        raise OSError(msg)
