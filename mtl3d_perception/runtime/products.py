"""What the pipeline produces for one frame; the node turns it into messages, replay into bag records and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtl3d_perception.geometry import PointCloud

STAGES = ("preprocess", "encode", "predict", "pose_check", "postprocess", "cloud", "total")


@dataclass
class Products:
    """Outputs for one reference frame, fields named after the outputs (``topics.OUTPUTS``: ``semantic/image_color``
    is ``semantic_color``; ``messages.IMAGE_OUTPUTS``), all at ``size`` = (W, H) with intrinsics ``K`` (DESIGN §5).

    Attributes:
        stamp_ns, frame_id: the input image's header, copied to every output.
        size: (W, H) of the output images (network or camera resolution, see ``output_resolution``).
        K: ``[3,3]`` intrinsics matching ``size`` (published as ``depth/camera_info``).
        depth: ``[H,W]`` float32 metres, NaN invalid (REP 118 32FC1), or None when disabled.
        depth_confidence: ``[H,W]`` float32 in [0, 1], the model's ``depth_confidence`` output (``model/heads.py``:
            ``exp(-expected abs rel / 0.1)`` from the learned confidence head, or for models without one the
            peakedness of the cost volume's depth distribution times the agreement of the head's learned prior
            with the geometric depth; ~0 where nothing was matched, e.g. single-view mode; 0 where ``depth`` is
            NaN), same size as ``depth``; None when depth is disabled or the model has no geometric depth
            (``geometric_depth: false``, models from before issue 18).
        depth_color: ``[H,W,3]`` uint8 RGB of ``depth`` (``evaluation.montage.colorize_depth`` over the model's depth
            range: turbo in log depth, near red, invalid grey); None when depth is disabled.
        semantic: ``[H,W]`` uint8 class ids (mono8); ``semantic_color`` ``[H,W,3]`` uint8 RGB in the model's palette.
        normals: ``[H,W,3]`` float32 unit vectors in the optical frame, NaN invalid (32FC3);
            ``normals_color`` ``[H,W,3]`` uint8 (``evaluation.montage.colorize_normals``: ``(1 - n) / 2 * 255``,
            grey where invalid).
        boundary: ``[H,W]`` uint8 boundary probability * 255 (mono8).
        image_mask: ``[H,W]`` bool, the output pixels with image data behind them (``Frame.image_mask`` at the output
            size: a rectified raw image's border is False; depth and normals are NaN there, the confidence 0, the
            class ``classes.IGNORE_INDEX`` (255, drawn in ``IGNORE_COLOUR``), the boundary 0, the cloud has no points
            there, and replay scores none of them); None: every pixel.
        points: the labelled cloud, valid points every ``point_stride`` pixels, in ``points_frame_id``; None when
            disabled.
        single_view: True when no source view was used (duplicated reference, identity pose).
        pair_reason: why this source was chosen or why there is none (see ``history.ViewPair``; also
            ``pose_convention``: a source was chosen, but the poses do not fit the images, ``runtime.pose_convention``).
        source_stamp_ns: the source frame's stamp, or None in single-view mode.
        baseline_m: the distance between the source's and this frame's camera centres (metres; 0 in single view),
            the parallax the cost volume had.
        timings: stage -> seconds, stages from ``STAGES`` (``pose_check`` only on the frames that ran the check).
        warnings: (kind, message) for bad input the pipeline recovered from (NaN pose, time jump, ...).
        classes: class names indexing ``semantic``.
    """

    stamp_ns: int
    frame_id: str
    size: tuple[int, int]
    K: np.ndarray
    depth: np.ndarray | None = None
    depth_confidence: np.ndarray | None = None
    depth_color: np.ndarray | None = None
    semantic: np.ndarray | None = None
    semantic_color: np.ndarray | None = None
    normals: np.ndarray | None = None
    normals_color: np.ndarray | None = None
    boundary: np.ndarray | None = None
    image_mask: np.ndarray | None = None
    points: PointCloud | None = None
    points_frame_id: str = ""
    single_view: bool = True
    pair_reason: str = ""
    source_stamp_ns: int | None = None
    baseline_m: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    classes: tuple[str, ...] = ()
