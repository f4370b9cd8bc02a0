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
from mtl3d_perception.geometry import check_intrinsics
from mtl3d_perception.msgs import conversions
from mtl3d_perception.msgs.camera_model import CameraModel, CameraModels
from mtl3d_perception.runtime.frames import MAX_IMAGE_PIXELS, Frame, ImageTooLarge, bare_frame_id

if TYPE_CHECKING:
    from mtl3d_perception.runtime.products import Products

# output name -> the Products field holding its image (the output's group, ``_color`` for ``image_color``,
# ``_confidence`` for ``confidence``); topics.OUTPUTS gives the encoding
IMAGE_OUTPUTS = {
    "depth/image": "depth",
    "depth/confidence": "depth_confidence",
    "depth/image_color": "depth_color",
    "semantic/image": "semantic",
    "semantic/image_color": "semantic_color",
    "normals/image": "normals",
    "normals/image_color": "normals_color",
    "boundary/image": "boundary",
}


class BadInput(ValueError):
    """An input message the runtime cannot use; ``kind`` names the diagnostics counter (``bad_input.<kind>``).

    Kinds: ``image_size`` (above the pixel limit), ``encoding`` (not a colour image, or malformed data),
    ``intrinsics`` (unusable camera_info: K, P, ROI or an unknown distortion model; or intrinsics implausible for
    the image size), ``size_mismatch`` (the image size differs from the one camera_info gives, after binning and
    ROI), ``image`` (e.g. smaller than 2x2).
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
    "invalid_stamp": "the image header stamp is not a valid time (sec < 0, or nanosec >= 1e9: a wrapped or "
                     "uninitialised stamp), so the frame is taken as unstamped (outputs stamped 0, no TF lookup, not "
                     "ordered); frames run single-view (fix the camera driver's stamps)",
}


# A ROS 1 driver or a converted ROS 1 bag stamps '/camera_optical_frame': tf2 strips the slash from transforms
# (BufferCore::setTransform) but refuses it in lookups, so every frame waited tf_timeout_s and ran single-view (a node
# trial); the frame is used under the bare name, as its transforms are stored.
SLASHED_FRAME_ID = ("the image header frame_id {given!r} starts with '/', which tf2 refuses in lookups (it strips the "
                    "slash from transforms): the frames are looked up and published as {bare!r} (set the camera "
                    "driver's frame_id to {bare!r})")


def header_message(frame: Frame) -> str | None:
    """The warning for a frame's header (``Frame.header_problem`` or ``header_note``), or None when it is sound."""
    if frame.header_problem:
        return HEADER_PROBLEMS[frame.header_problem]
    return frame.header_note


# a camera_info whose stamp is not a time is taken as unstamped: only an image stamped as badly pairs with it
CAMERA_INFO_STAMP_PROBLEM = ("a camera_info header stamp is not a time (sec < 0 or nanosec >= 1e9): it is taken as "
                             "unstamped, so only an image stamped as badly pairs with it and its own image is dropped "
                             "(fix the camera driver's stamps)")


def frame_from_messages(image: Any, info: Any, *, image_kind: str = "image_raw",
                        cameras: CameraModels | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> Frame:
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
        max_pixels: larger images are refused (``image_size``), a compressed one from its header, before decoding.

    Raises:
        BadInput: the image has more than ``max_pixels`` pixels (``image_size``; checked on a compressed image's
            header, before decoding), the encoding is not one of ``conversions.COLOUR_ENCODINGS`` (or the data is
            malformed or does not decode), camera_info is unusable or its intrinsics implausible for the image size,
            its size (after binning and ROI) differs from the image's, or the image is too small.
    """
    try:
        rgb = conversions.image_to_rgb8(image, max_pixels=max_pixels)
    except ImageTooLarge as exc:
        raise BadInput("image_size", str(exc)) from None
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
    K = camera.intrinsics(image_kind)
    try:  # absurd but finite values (fx = 1e-300, cx = 1e308) would give an all-inf cloud
        check_intrinsics(K, name=f"camera_info {'P' if K is camera.P else 'K'}", size=(width, height))
        if K is not camera.K:
            check_intrinsics(camera.K, name="camera_info K", size=(width, height))
    except ValueError as exc:
        raise BadInput("intrinsics", str(exc)) from None
    if image_kind == "image_raw" and camera.rectify_raw:
        if camera.raw_problem is not None:
            raise BadInput("intrinsics", camera.raw_problem)
        if not known:
            raise BadInput("intrinsics", "camera_info has width and height 0 and distortion to remove; "
                                         "the raw image cannot be rectified")
        rgb, image_mask = camera.rectify(rgb), camera.rectified_mask()
    else:
        image_mask = None
    stamp_ns = conversions.header_stamp_ns(image.header.stamp)
    frame_id, note = bare_frame_id(image.header.frame_id), None
    if frame_id != image.header.frame_id:
        note = SLASHED_FRAME_ID.format(given=image.header.frame_id, bare=frame_id)
    problem = ("empty_frame_id" if not frame_id else
               "invalid_stamp" if not conversions.stamp_is_valid(image.header.stamp) else
               "zero_stamp" if stamp_ns == 0 else None)
    frame = Frame(stamp_ns, frame_id, rgb, K, header_problem=problem, header_note=note, image_mask=image_mask)
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
        outputs: names from ``topics.OUTPUTS`` to build (None: all). A ``<group>/camera_info`` comes with its
            ``<group>/image``.

    Raises:
        ValueError: a name in ``outputs`` that is not in ``topics.OUTPUTS``.

    Returns:
        Images first, then the camera_infos and ``points``; images carry the input's stamp and frame id, the cloud
        ``products.points_frame_id``. An output whose product is None (disabled, or ``depth/confidence`` of a model
        without one) is left out.
    """
    wanted = set(topics.OUTPUTS) if outputs is None else set(outputs)
    if wanted - set(topics.OUTPUTS):
        msg = f"unknown outputs {sorted(wanted - set(topics.OUTPUTS))}; expected some of {', '.join(topics.OUTPUTS)}"
        raise ValueError(msg)
    header = conversions.make_header(types, products.stamp_ns, products.frame_id)
    messages: dict[str, Any] = {}
    for name, field in IMAGE_OUTPUTS.items():
        array = getattr(products, field)
        if name in wanted and array is not None:
            messages[name] = conversions.make_image(types, header, array, topics.OUTPUTS[name][1])
    for name in [n for n in topics.OUTPUTS if n.endswith("/camera_info") and n in wanted]:
        image = getattr(products, IMAGE_OUTPUTS[f"{topics.output_group(name)}/image"])
        if image is not None:  # the sibling camera_info of each image that is there
            W, H = products.size
            messages[name] = conversions.make_camera_info(types, header, products.K, W, H)
    if "points" in wanted and products.points is not None:
        cloud = products.points
        cloud_header = conversions.make_header(types, products.stamp_ns, products.points_frame_id)
        messages["points"] = conversions.make_point_cloud2(types, cloud_header, cloud.points, rgb=cloud.rgb,
                                                           labels=cloud.labels)
    return messages
