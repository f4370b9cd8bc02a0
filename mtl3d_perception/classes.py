"""The NYUv2 13-class label set and its colour palette (DESIGN §4).

A checkpoint carries its own class list and palette; these are the defaults every part starts from.
"""

from __future__ import annotations

import numpy as np

NYU13_CLASSES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "painting", "sofa", "table", "tv", "wall", "window",
)
IGNORE_INDEX = 255

# One RGB colour per class, in NYU13_CLASSES order (the common NYUv2-13 visualisation palette).
NYU13_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255),      # bed
    (232, 88, 47),    # books
    (0, 217, 0),      # ceiling
    (148, 0, 240),    # chair
    (222, 241, 23),   # floor
    (255, 205, 205),  # furniture
    (0, 223, 228),    # objects
    (106, 135, 204),  # painting
    (116, 28, 41),    # sofa
    (240, 35, 235),   # table
    (0, 166, 156),    # tv
    (249, 139, 0),    # wall
    (225, 228, 194),  # window
)
IGNORE_COLOUR = (0, 0, 0)


def class_index(name: str, classes: tuple[str, ...] = NYU13_CLASSES) -> int:
    """Index of class ``name`` in ``classes``; raises ValueError naming the known classes."""
    try:
        return classes.index(name)
    except ValueError:
        msg = f"unknown class {name!r}; expected one of {', '.join(classes)}"
        raise ValueError(msg) from None


def labels_outside_ignored(inside: np.ndarray, depth: np.ndarray | None, semantic: np.ndarray | None
                           ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Ground truth with the pixels outside ``inside`` (``[H,W]`` bool: those with image data) left out: depth
    ``[H,W]`` NaN there (REP 118's invalid), semantic ``[H,W]`` ``IGNORE_INDEX`` there; None stays None. The one rule
    of training and eval bags (``data.sources.bag``) and replay's scoring (``replay.evaluation``)."""
    return (None if depth is None else np.where(inside, depth, np.float32(np.nan)),
            None if semantic is None else np.where(inside, semantic, np.uint8(IGNORE_INDEX)))


def colorize_labels(labels: np.ndarray, palette=NYU13_PALETTE) -> np.ndarray:
    """Map class ids ``[H,W]`` (uint8, 255 = ignore) to an RGB image ``[H,W,3]`` uint8."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    lut[IGNORE_INDEX] = IGNORE_COLOUR
    return lut[np.asarray(labels, np.uint8)]


def label_boundaries(semantic: np.ndarray) -> np.ndarray:
    """Semantic boundaries ``[H,W]`` uint8: 1 where a 4-neighbour has a different label (both sides of an edge)."""
    s = np.asarray(semantic)
    b = np.zeros(s.shape, bool)
    dx = s[:, 1:] != s[:, :-1]
    dy = s[1:, :] != s[:-1, :]
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    b[1:, :] |= dy
    b[:-1, :] |= dy
    return b.astype(np.uint8)


def boundaries_from_semantic(semantic: np.ndarray) -> np.ndarray:
    """Boundary label ``[H,W]`` float32 from semantic ids (training's boundary target, replay's boundary GT): 1 on
    label edges (:func:`label_boundaries`), 0 elsewhere, NaN where unlabelled (``IGNORE_INDEX``)."""
    b = label_boundaries(semantic).astype(np.float32)
    b[np.asarray(semantic) == IGNORE_INDEX] = np.nan
    return b
