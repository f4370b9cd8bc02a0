"""Messages <-> runtime objects, written once for the node and for replay (STYLE §1.2: each conversion once).

- :func:`frame_from_messages`: a synchronised ``sensor_msgs/Image`` + ``sensor_msgs/CameraInfo`` -> a
  :class:`~mtl3d_perception.runtime.frames.Frame`, or :class:`BadInput` naming what is wrong;
- :func:`products_to_messages`: :class:`~mtl3d_perception.runtime.products.Products` -> one message per output
  of ``topics.OUTPUTS``, each with the input image's stamp and frame id (the cloud's frame per ``points_frame_id``).

No rclpy import: messages are read duck-typed and built through a ``types`` mapping (``conversions.rclpy_types()``
in the node, a rosbags ``typestore.types`` in replay), as in :mod:`mtl3d_perception.msgs.conversions`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from mtl3d_perception import topics
from mtl3d_perception.geometry import check_intrinsics
from mtl3d_perception.msgs import conversions
from mtl3d_perception.runtime.frames import Frame

if TYPE_CHECKING:
    from mtl3d_perception.runtime.products import Products

# the image outputs; each is the Products field of the same name ("semantic/color" -> semantic_color),
# topics.OUTPUTS gives the encoding
IMAGE_OUTPUTS = ("depth", "semantic", "semantic/color", "normals", "normals/color", "boundary")


class BadInput(ValueError):
    """An input message the runtime cannot use; ``kind`` names the diagnostics counter (``bad_input.<kind>``).

    Kinds: ``encoding`` (not a colour image, or malformed data), ``intrinsics`` (unusable K), ``size_mismatch``
    (camera_info size differs from the image's), ``frame_id`` (empty), ``image`` (e.g. smaller than 2x2).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def frame_from_messages(image: Any, info: Any) -> Frame:
    """Image (or CompressedImage) + CameraInfo -> :class:`Frame` (no pose yet) with ``rgb`` ``[H,W,3]`` uint8 RGB
    and ``K`` from ``info.k``.

    ``rgb`` may share memory with the message and be read-only (bag buffers); the pipeline copies it only where
    it must (``PerceptionPipeline.preprocess``).

    Raises:
        BadInput: the encoding is not one of ``conversions.COLOUR_ENCODINGS`` (or the data is malformed or does
            not decode), K is
            unusable, the camera_info size differs from the image size, the frame id is empty, or the image is
            too small.
    """
    try:
        rgb = conversions.image_to_rgb8(image)
    except ValueError as exc:
        raise BadInput("encoding", str(exc)) from None
    try:
        K = check_intrinsics(conversions.camera_info_to_K(info), name="camera_info K")
    except ValueError as exc:
        raise BadInput("intrinsics", str(exc)) from None
    height, width = rgb.shape[:2]  # a CompressedImage has no width/height fields
    if (info.width, info.height) != (0, 0) and (info.width, info.height) != (width, height):
        raise BadInput("size_mismatch", f"camera_info size {info.width}x{info.height} differs from image size "
                                        f"{width}x{height}")
    if not image.header.frame_id:
        raise BadInput("frame_id", "image header has an empty frame_id; cannot look up its pose")
    frame = Frame(conversions.stamp_to_ns(image.header.stamp), image.header.frame_id, rgb, K)
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
