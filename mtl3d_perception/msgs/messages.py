"""Messages <-> runtime objects, written once for the node and for replay (STYLE §1.2: each conversion once).

- :func:`frame_from_messages`: a synchronised ``sensor_msgs/Image`` + ``sensor_msgs/CameraInfo`` -> a
  :class:`~mtl3d_perception.runtime.frames.Frame` (colour converted, rectified where the input is raw, with the
  intrinsics camera_info gives the image), or :class:`BadInput` naming what is wrong;
- :func:`products_to_messages`: :class:`~mtl3d_perception.runtime.products.Products` -> one message per output
  of ``topics.OUTPUTS``, each with the input image's stamp and frame id (the cloud's frame per ``points_frame_id``).

No rclpy import: messages are read duck-typed and built through a ``types`` mapping (``conversions.rclpy_types()``
in the node, a rosbags ``typestore.types`` in replay), as in :mod:`mtl3d_perception.msgs.conversions`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from mtl3d_perception import topics
from mtl3d_perception.msgs import conversions
from mtl3d_perception.msgs.camera_model import CameraModel, CameraModels
from mtl3d_perception.runtime.frames import Frame

if TYPE_CHECKING:
    from mtl3d_perception.runtime.products import Products

# the image outputs; each is the Products field of the same name ("semantic/color" -> semantic_color),
# topics.OUTPUTS gives the encoding
IMAGE_OUTPUTS = ("depth", "semantic", "semantic/color", "normals", "normals/color", "boundary")


class BadInput(ValueError):
    """An input message the runtime cannot use; ``kind`` names the diagnostics counter (``bad_input.<kind>``).

    Kinds: ``encoding`` (not a colour image, or malformed data), ``intrinsics`` (unusable camera_info: K, P, ROI or
    an unknown distortion model), ``size_mismatch`` (the image size differs from the one camera_info gives, after
    binning and ROI), ``image`` (e.g. smaller than 2x2).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# Header problems that leave a frame usable but unposed (it runs single-view, DESIGN §8): the pair reason each
# gives, and the warning that says why.
HEADER_PROBLEMS = {
    "empty_frame_id": "the image header has an empty frame_id, so its pose cannot be looked up in TF; frames run "
                      "single-view (set the camera driver's frame_id)",
    "zero_stamp": "the image header stamp is zero, so its pose cannot be looked up in TF and frames cannot be "
                  "ordered; frames run single-view (the camera driver does not stamp its images)",
}


def frame_from_messages(image: Any, info: Any, *, image_kind: str = "image_raw",
                        cameras: CameraModels | None = None) -> Frame:
    """Image (or CompressedImage) + CameraInfo -> :class:`Frame` (no pose yet) with ``rgb`` ``[H,W,3]`` uint8 RGB
    and the intrinsics camera_info gives that image (``camera_model``: binning, ROI, rectification).

    ``rgb`` may share memory with the message and be read-only (bag buffers); the pipeline copies it only where
    it must (``PerceptionPipeline.preprocess``). An empty frame_id or a zero stamp is no reason to drop the frame:
    it gets ``header_problem`` (a key of ``HEADER_PROBLEMS``) and runs single-view.

    Args:
        image_kind: ``image_raw`` (rectified here when camera_info has distortion, R or a P other than K) or
            ``image_rect`` (already rectified: P's intrinsics); see ``camera_model.resolve_image_kind``.
        cameras: the cache of camera models and rectification maps (one per node or replay); None builds the model
            for this call only.

    Raises:
        BadInput: the encoding is not one of ``conversions.COLOUR_ENCODINGS`` (or the data is malformed or does
            not decode), camera_info is unusable, its size (after binning and ROI) differs from the image's, or the
            image is too small.
    """
    try:
        rgb = conversions.image_to_rgb8(image)
    except ValueError as exc:
        raise BadInput("encoding", str(exc)) from None
    try:
        camera = cameras.get(info) if cameras is not None else CameraModel.from_camera_info(info)
    except ValueError as exc:
        raise BadInput("intrinsics", str(exc)) from None
    height, width = rgb.shape[:2]  # a CompressedImage has no width/height fields
    known = camera.size != (0, 0)  # camera_info without width/height: nothing to check against
    if known and camera.size != (width, height):
        how = f" ({camera.window()})" if camera.window() else ""
        raise BadInput("size_mismatch", f"camera_info size {info.width}x{info.height}{how} gives a "
                                        f"{camera.size[0]}x{camera.size[1]} image; the image is {width}x{height}")
    if image_kind == "image_raw" and camera.rectify_raw:
        if not known:
            raise BadInput("intrinsics", "camera_info has width and height 0 and distortion to remove; "
                                         "the raw image cannot be rectified")
        rgb = camera.rectify(rgb)
    stamp_ns = conversions.stamp_to_ns(image.header.stamp)
    problem = "empty_frame_id" if not image.header.frame_id else "zero_stamp" if stamp_ns == 0 else None
    frame = Frame(stamp_ns, image.header.frame_id, rgb, camera.intrinsics(image_kind), header_problem=problem)
    try:
        frame.validate()
    except ValueError as exc:
        raise BadInput("image", str(exc)) from None
    return frame


def products_to_messages(types: Any, products: Products, *, outputs: Collection[str] | None = None) -> dict[str, Any]:
    """Products -> ``{output name: message}`` for every output that is present and wanted.

    Args:
        types: message classes by ``'sensor_msgs/msg/Image'``-style name.
        products: one frame's pipeline outputs.
        outputs: names from ``topics.OUTPUTS`` to build (None: all). ``depth/camera_info`` comes with the depth.

    Raises:
        ValueError: a name in ``outputs`` that is not in ``topics.OUTPUTS``.

    Returns:
        Images first, then ``depth/camera_info`` and ``points``; images carry the input's stamp and frame id, the cloud
        ``products.points_frame_id``.
    """
    wanted = set(topics.OUTPUTS) if outputs is None else set(outputs)
    if wanted - set(topics.OUTPUTS):
        msg = f"unknown outputs {sorted(wanted - set(topics.OUTPUTS))}; expected some of {', '.join(topics.OUTPUTS)}"
        raise ValueError(msg)
    header = conversions.make_header(types, products.stamp_ns, products.frame_id)
    messages: dict[str, Any] = {}
    for name in IMAGE_OUTPUTS:
        array = getattr(products, name.replace("/", "_"))
        if name in wanted and array is not None:
            messages[name] = conversions.make_image(types, header, array, topics.OUTPUTS[name][1])
    if "depth/camera_info" in wanted and products.depth is not None:
        W, H = products.size
        messages["depth/camera_info"] = conversions.make_camera_info(types, header, products.K, W, H)
    if "points" in wanted and products.points is not None:
        cloud = products.points
        cloud_header = conversions.make_header(types, products.stamp_ns, products.points_frame_id)
        messages["points"] = conversions.make_point_cloud2(types, cloud_header, cloud.points, rgb=cloud.rgb,
                                                           labels=cloud.labels)
    return messages
