"""ROS message <-> numpy conversions, written once for the node, the bag writer and replay.

numpy (and OpenCV / Pillow for compressed images) only: this module never imports rclpy, so replay and the bag
writer run without ROS. Readers are duck-typed (they only touch message attributes), so they accept rclpy
messages and ``rosbags`` dataclasses alike. Writers build messages through a ``types`` mapping from ``'sensor_msgs/msg/Image'``
style names to classes: ``typestore.types`` of a rosbags typestore, or :func:`rclpy_types`.

The two message flavours differ in what array fields accept: rosbags dataclasses need every field as a
constructor keyword and numpy arrays for array fields; rclpy classes store ``uint8[]`` as
``array.array('B')`` and reject numpy integers when ``ROS_PYTHON_CHECK_FIELDS`` is set. The private
``_uint8_field`` / ``_float64_field`` helpers hide that difference.

Why not cv_bridge: it is not installable here, and the PyPI ``cv-bridge`` is a ROS 1 port that fails with
numpy 2 and maps 16UC1 wrongly (see ``../shared/notes/ros2_ecosystem.md`` A.0).

Why not ``rosbags-image`` (measured with 0.10.4, issue 14): its ``message_to_cvimage`` ignores ``step``, so an
image with padded rows decodes to wrong pixels; it decodes every CompressedImage as BGR whatever the format says
(``"rgb8; png compressed rgb8"`` comes out with red and blue swapped); undecodable data ends in a bare
``AssertionError``; and it does not refuse depth formats where a colour image is expected. Speed is the same
(bgr8 640x480 -> rgb8: 44 us here, 42 us there). So these readers stay.
"""

from __future__ import annotations

import array
import importlib
import io
import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mtl3d_perception.msgs.image_header import read_image_header
from mtl3d_perception.runtime.frames import MAX_IMAGE_PIXELS, check_image_size

_U8, _U16 = np.dtype(np.uint8), np.dtype(np.uint16)

_BAYER = ("bayer_rggb", "bayer_bggr", "bayer_gbrg", "bayer_grbg")

# encoding -> (numpy dtype of one channel, channels): the sensor_msgs/image_encodings layouts read and written here.
# REP 118: depth is 32FC1 metres or 16UC1 millimetres. uyvy (alias yuv422) and yuyv (alias yuv422_yuy2) pack two
# pixels in 4 bytes: 2 uint8 channels per pixel, as image_encodings.hpp counts them. The planar YUV encodings
# (nv12, nv21, nv24) have no per-pixel layout: they are only read, to RGB (PLANAR_YUV_ENCODINGS).
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (_U8, 3), "bgr8": (_U8, 3), "rgba8": (_U8, 4), "bgra8": (_U8, 4), "mono8": (_U8, 1),
    "rgb16": (_U16, 3), "bgr16": (_U16, 3), "rgba16": (_U16, 4), "bgra16": (_U16, 4), "mono16": (_U16, 1),
    "uyvy": (_U8, 2), "yuyv": (_U8, 2), "yuv422": (_U8, 2), "yuv422_yuy2": (_U8, 2),
    **{f"{bayer}8": (_U8, 1) for bayer in _BAYER}, **{f"{bayer}16": (_U16, 1) for bayer in _BAYER},
    "8UC1": (_U8, 1),
    "16UC1": (_U16, 1),
    "32FC1": (np.dtype(np.float32), 1),
    "32FC3": (np.dtype(np.float32), 3),
}

# Colour and mono encoding -> the one cv2 conversion to RGB (None: already RGB), as cv_bridge converts them to
# rgb8 (ros-perception/vision_opencv cv_bridge/src/cv_bridge.cpp, getConversionCodes): one code per family,
# 16-bit data then scaled by 255/65535. OpenCV names Bayer patterns by the second row, hence RGGB -> BayerBG.
# Generic encodings (8UC3, 16UC1, ...) carry no colour meaning and are refused, as cv_bridge refuses them.
COLOUR_ENCODINGS: dict[str, int | None] = {
    **{f"rgb{bits}": None for bits in (8, 16)},
    **{f"bgr{bits}": cv2.COLOR_BGR2RGB for bits in (8, 16)},
    **{f"rgba{bits}": cv2.COLOR_RGBA2RGB for bits in (8, 16)},
    **{f"bgra{bits}": cv2.COLOR_BGRA2RGB for bits in (8, 16)},
    **{f"mono{bits}": cv2.COLOR_GRAY2RGB for bits in (8, 16)},
    **{name: cv2.COLOR_YUV2RGB_UYVY for name in ("uyvy", "yuv422")},
    **{name: cv2.COLOR_YUV2RGB_YUY2 for name in ("yuyv", "yuv422_yuy2")},
    **{f"bayer_rggb{bits}": cv2.COLOR_BayerBG2RGB for bits in (8, 16)},
    **{f"bayer_bggr{bits}": cv2.COLOR_BayerRG2RGB for bits in (8, 16)},
    **{f"bayer_gbrg{bits}": cv2.COLOR_BayerGR2RGB for bits in (8, 16)},
    **{f"bayer_grbg{bits}": cv2.COLOR_BayerGB2RGB for bits in (8, 16)},
}
# Planar YUV (image_encodings.hpp; layouts of the V4L2 pixel formats of the same names): a Y plane of ``height``
# rows of ``step`` bytes, then the chroma plane with the same row stride per sample pair: nv12 (UV) and nv21
# (VU) at half resolution both ways (``height / 2`` rows, 1.5 x ``height x step`` bytes in all), nv24 (UV) at full
# resolution (``height`` rows of ``2 x step`` bytes, 3 x ``height x step`` in all). OpenCV has no NV24 conversion:
# its chroma is averaged over horizontal pixel pairs into YUYV and converted as that (the same BT.601 video-range
# formula as the other YUV encodings; the half-resolution chroma is below the network's input resolution).
PLANAR_YUV_ENCODINGS: dict[str, int] = {
    "nv12": cv2.COLOR_YUV2RGB_NV12, "nv21": cv2.COLOR_YUV2RGB_NV21, "nv24": cv2.COLOR_YUV2RGB_YUY2,
}
COLOUR_ENCODINGS.update(PLANAR_YUV_ENCODINGS)

# sensor_msgs/PointField datatype constants (identical in every ROS 2 distro).
_POINT_FIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8), 2: np.dtype(np.uint8), 3: np.dtype(np.int16), 4: np.dtype(np.uint16),
    5: np.dtype(np.int32), 6: np.dtype(np.uint32), 7: np.dtype(np.float32), 8: np.dtype(np.float64),
}
_FLOAT32, _UINT32 = 7, 6


def _unsupported(encoding: str) -> ValueError:
    return ValueError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")


def _uint8_buffer(data: Any) -> np.ndarray:
    """A message's ``uint8[]`` field (numpy array, ``array.array``, bytes or list) as a flat uint8 array, no copy
    where the field allows it."""
    return np.asarray(data, np.uint8) if isinstance(data, list) else np.frombuffer(data, np.uint8)


# --------------------------------------------------------------------------- message construction


def _is_rclpy_class(cls: type) -> bool:
    """rclpy message classes carry rosidl's field table; rosbags dataclasses do not."""
    return hasattr(cls, "_fields_and_field_types")


def _uint8_field(cls: type, data: np.ndarray | bytes) -> Any:
    """A ``uint8[]`` field value in the form ``cls`` stores."""
    if _is_rclpy_class(cls):
        return array.array("B", data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes())
    return np.frombuffer(data, np.uint8) if isinstance(data, bytes) else np.ascontiguousarray(data, np.uint8).ravel()


def _float64_field(cls: type, values: Any, fixed: bool) -> Any:
    """A ``float64[]`` (``fixed=False``) or ``float64[N]`` field value in the form ``cls`` stores."""
    values = np.asarray(values, np.float64).ravel()
    if _is_rclpy_class(cls) and not fixed:
        return array.array("d", values.tolist())
    return values.copy()


def rclpy_types() -> dict[str, type]:
    """A ``types`` mapping backed by the installed rclpy message packages.

    Names resolve lazily (``'sensor_msgs/msg/Image'`` imports ``sensor_msgs.msg.Image`` on first use), so
    only the message packages actually used need to be installed.
    """
    return _RclpyTypes()


class _RclpyTypes(dict):
    def __missing__(self, name: str) -> type:
        try:
            package, kind, msg_name = name.split("/")
            cls = getattr(importlib.import_module(f"{package}.{kind}"), msg_name)
        except (ValueError, ImportError, AttributeError) as exc:
            raise KeyError(f"message type {name!r} is not importable: {exc}") from None
        self[name] = cls
        return cls


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def stamp_is_valid(stamp: Any) -> bool:
    """Whether a ``builtin_interfaces/Time`` is a time ROS can hold: ``sec`` >= 0 and ``nanosec`` in [0, 1e9) (rclpy's
    ``Time`` refuses negative times; a year-2100 stamp wraps the int32 ``sec`` negative)."""
    return int(stamp.sec) >= 0 and 0 <= int(stamp.nanosec) < 1_000_000_000


def header_stamp_ns(stamp: Any, invalid: int = 0) -> int:
    """A header's stamp in integer nanoseconds, ``invalid`` for one that is not a valid time (:func:`stamp_is_valid`):
    by default 0 ("not stamped", ROS's convention), so such a frame is unstamped everywhere downstream, never a time
    jump; ``runtime.sync.pairing_advice`` takes -1 to name it as no time."""
    return stamp_to_ns(stamp) if stamp_is_valid(stamp) else invalid


def make_stamp(types: Any, stamp_ns: int) -> Any:
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def make_header(types: Any, stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/Header`` with the stamp in nanoseconds."""
    return types["std_msgs/msg/Header"](stamp=make_stamp(types, stamp_ns), frame_id=str(frame_id))


# --------------------------------------------------------------------------- images


def image_to_array(msg: Any, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/Image`` -> ndarray in the message's own layout (cv_bridge "passthrough").

    Returns ``[H,W]`` for one-channel encodings and ``[H,W,C]`` otherwise, in native byte order, with row
    padding (``step`` > ``width * bytes per pixel``) removed. Channel order is the encoding's (``bgr8``
    stays BGR); use :func:`image_to_rgb8` for the pipeline's RGB input.

    Raises:
        ImageTooLarge: ``width * height`` above ``max_pixels`` (``runtime.frames.MAX_IMAGE_PIXELS``).
        ValueError: a ``CompressedImage``, an unsupported encoding, an empty image, or ``data`` shorter than
            ``height * step``.
    """
    if is_compressed_image(msg):
        raise ValueError(f"a CompressedImage (format {msg.format!r}) has no raw layout; "
                         "image_to_rgb8 decodes colour ones")
    encoding = str(msg.encoding)
    if encoding in PLANAR_YUV_ENCODINGS:
        raise ValueError(f"a planar {encoding!r} image has no per-pixel layout; image_to_rgb8 converts it")
    if encoding not in ENCODINGS:
        raise _unsupported(encoding)
    dtype, channels = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_image_size(width, height, max_pixels, what=f"{encoding} image")
    if width <= 0 or height <= 0:  # cv2 returns None for an empty image instead of raising (found by fuzzing)
        raise ValueError(f"{encoding} image is {width}x{height}: empty")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f"image step {step} < width {width} x {channels} channels x {dtype.itemsize} bytes")
    buf = _uint8_buffer(msg.data)
    if buf.size < height * step:
        raise ValueError(f"image data has {buf.size} bytes, expected height {height} x step {step} = {height * step}")
    rows = buf[: height * step].reshape(height, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    out = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).astype(dtype, copy=False)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return out.reshape(shape)


def _planar_yuv(msg: Any, max_pixels: int) -> np.ndarray:
    """A planar YUV image (``PLANAR_YUV_ENCODINGS``) as the array its cv2 conversion reads: ``[1.5 H, W]`` uint8 for
    nv12 / nv21, ``[H, W, 2]`` YUYV for nv24. Raises ValueError for odd sizes of 4:2:0 data or short data."""
    encoding = str(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_image_size(width, height, max_pixels, what=f"{encoding} image")
    if width <= 0 or height <= 0:
        raise ValueError(f"{encoding} image is {width}x{height}: empty")
    if step < width:
        raise ValueError(f"{encoding} image step {step} < width {width} (the Y plane's row length in bytes)")
    half = encoding != "nv24"
    if half and (width % 2 or height % 2):
        raise ValueError(f"a {encoding} image (4:2:0 chroma) needs an even width and height, got {width}x{height}")
    size = height * step * 3 // (2 if half else 1)
    buf = _uint8_buffer(msg.data)
    if buf.size < size:
        raise ValueError(f"{encoding} image data has {buf.size} bytes, expected {size} for {width}x{height}, step {step}")
    luma = buf[: height * step].reshape(height, step)[:, :width]
    if half:
        chroma = buf[height * step: size].reshape(height // 2, step)[:, :width]
        return np.ascontiguousarray(np.concatenate([luma, chroma]))
    uv = buf[height * step: size].reshape(height, 2 * step)[:, : 2 * width].reshape(height, width, 2).astype(np.uint16)
    if width % 2:  # repeat the last column so that every pixel has a partner
        luma, uv = np.concatenate([luma, luma[:, -1:]], 1), np.concatenate([uv, uv[:, -1:]], 1)
    pairs = (uv[:, 0::2] + uv[:, 1::2] + 1) // 2  # [H, W/2, (U, V)]
    yuyv = np.empty((height, luma.shape[1], 2), np.uint8)
    yuyv[..., 0] = luma
    yuyv[:, 0::2, 1], yuyv[:, 1::2, 1] = pairs[..., 0], pairs[..., 1]
    return yuyv


def image_to_rgb8(msg: Any, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A colour or mono ``sensor_msgs/Image`` (any of ``COLOUR_ENCODINGS``), or a colour
    ``sensor_msgs/CompressedImage`` -> ``[H,W,3]`` uint8 RGB (the pipeline's input).

    Raw images convert as cv_bridge's ``toCvShare(msg, "rgb8")`` does: one cv2 colour conversion per family (UYVY,
    YUYV, planar NV12 / NV21 / NV24 (see ``PLANAR_YUV_ENCODINGS``), Bayer demosaicing, channel order, grey to RGB),
    then 16-bit values scaled by 255/65535. Compressed images
    are decoded as ``compressed_image_transport`` does (see :func:`is_compressed_image`), and only after their
    header (``msgs.image_header``) declares a JPEG or PNG of at most ``max_pixels`` pixels.

    Raises:
        ImageTooLarge: the image (or what a compressed one declares) has more than ``max_pixels`` pixels.
        ValueError: the encoding is not one of ``COLOUR_ENCODINGS`` (the message lists them), the data is malformed
            (e.g. an odd width for a YUV 4:2:2 image, data shorter than a planar layout needs), or a compressed
            image's format names a non-colour encoding, its header is not a sound JPEG / PNG one, or its data does
            not decode.
    """
    if is_compressed_image(msg):
        return _decode_compressed_rgb8(msg, max_pixels)
    encoding = str(msg.encoding)
    if encoding not in COLOUR_ENCODINGS:
        raise ValueError(
            f"image encoding {encoding!r} is not a colour or mono encoding; supported: {', '.join(COLOUR_ENCODINGS)}"
        )
    planar = encoding in PLANAR_YUV_ENCODINGS
    img = _planar_yuv(msg, max_pixels) if planar else image_to_array(msg, max_pixels=max_pixels)
    img = _to_rgb8(img, encoding)
    if planar and img.shape[1] != msg.width:  # nv24 of an odd width: drop the repeated column
        img = np.ascontiguousarray(img[:, : msg.width])
    return img


def _to_rgb8(img: np.ndarray, encoding: str) -> np.ndarray:
    """An image array in ``encoding`` (one of ``COLOUR_ENCODINGS``) -> ``[H,W,3]`` uint8 RGB: cv_bridge's cvtColor
    for it, then its 16 -> 8 bit scaling. Raises ValueError where OpenCV cannot convert it."""
    code = COLOUR_ENCODINGS[encoding]
    if code is not None:
        try:
            img = cv2.cvtColor(img, code)
        except cv2.error as exc:
            raise ValueError(f"a {img.shape[1]}x{img.shape[0]} {encoding!r} image does not convert to RGB: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)  # cv_bridge's 16 -> 8 bit scaling, rounded
    return img


def make_image(types: Any, header: Any, array_: np.ndarray, encoding: str) -> Any:
    """ndarray -> ``sensor_msgs/Image`` (little-endian, unpadded rows).

    ``array_`` is ``[H,W]`` or ``[H,W,C]`` with C matching the encoding; values are cast to the encoding's
    dtype (e.g. float64 depth -> float32 for 32FC1).

    Raises:
        ValueError: unsupported encoding or a channel count that does not match it.
    """
    if encoding not in ENCODINGS:
        raise _unsupported(encoding)
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(array_)
    got = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else -1)
    if got != channels:
        raise ValueError(f"encoding {encoding!r} needs {channels} channel(s), got an array of shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype.newbyteorder("<"))
    height, width = arr.shape[:2]
    cls = types["sensor_msgs/msg/Image"]
    return cls(
        header=header, height=int(height), width=int(width), encoding=encoding, is_bigendian=0,
        step=int(width * channels * dtype.itemsize), data=_uint8_field(cls, arr.tobytes()),
    )


# --------------------------------------------------------------------------- compressed images

# what make_compressed_image writes; reading accepts whatever cv2.imdecode recognises from the data itself
COMPRESSED_FORMATS = ("jpeg", "png")
JPEG_QUALITY = 95  # compressed_image_transport's default jpeg_quality


def is_compressed_image(msg: Any) -> bool:
    """True for a ``sensor_msgs/CompressedImage`` (it has ``format`` and no ``encoding``), of either message flavour.

    Its ``format`` is ``"jpeg"`` / ``"png"`` (older drivers: the data is BGR or grey) or, as
    ``compressed_image_transport`` writes it, ``"<encoding>; <jpeg|png> compressed <bgr8|rgb8|mono8...>"``:
    the raw image's encoding, then the channel order the codec was given.
    """
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _decode_jpeg_rgb(buf: np.ndarray, fmt: str) -> np.ndarray | None:
    """JPEG bytes -> ``[H,W,3]`` uint8 in the file's own colour order (RGB; what OpenCV returns reversed) through
    Pillow, or None where it cannot read them.

    Pillow and OpenCV decode with the same libjpeg-turbo settings (the same pixels: test_conversions), but OpenCV
    decodes corrupt data with grey blocks and only prints libjpeg's "Corrupt JPEG data" to stderr, where Pillow
    raises, so a corrupt frame is refused as bad input instead of being mapped. EXIF orientation is ignored, as ROS
    decoders do.

    Raises:
        ValueError: the entropy-coded data is corrupt or truncated (naming the size, format and Pillow's reason).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(buf.tobytes()), formats=["JPEG"]) as image:
            image.load()
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # one copy
    except UnidentifiedImageError:
        return None
    except (OSError, SyntaxError) as exc:  # "broken data stream ...", "image file is truncated ..."
        raise ValueError(f"CompressedImage ({buf.size} bytes, format {fmt!r}) holds corrupt or truncated JPEG data "
                         f"({exc})") from None


def _checked_header(buf: np.ndarray, what: str, max_pixels: int) -> Any:
    """The JPEG/PNG header of ``buf`` (``msgs.image_header``), read and its size checked before anything is decoded
    (a decompression bomb is refused in microseconds). Raises ValueError naming ``what``."""
    try:
        header = read_image_header(buf)
    except ValueError as exc:
        raise ValueError(f"{what} refused before decoding: {exc}") from None
    check_image_size(header.width, header.height, max_pixels, what=f"{what}: its {header.format} header declares it")
    return header


def _decode_compressed_rgb8(msg: Any, max_pixels: int) -> np.ndarray:
    fmt = str(msg.format)
    encoding, has_encoding, compression = (part.strip() for part in fmt.partition(";"))
    if has_encoding and encoding not in COLOUR_ENCODINGS:
        # e.g. "16UC1; png compressed mono16" or "32FC1; compressedDepth png": depth, not a camera picture
        raise ValueError(f"CompressedImage format {fmt!r} holds a {encoding!r} image, not a colour one; "
                         f"supported encodings: {', '.join(COLOUR_ENCODINGS)}")
    buf = _uint8_buffer(msg.data)
    header = _checked_header(buf, f"CompressedImage ({buf.size} bytes, format {fmt!r})", max_pixels)
    if encoding.startswith("bayer_"):
        # compressed_image_transport stores a Bayer image as its mosaic, with no target encoding ("bayer_rggb8; png
        # compressed "): its subscriber decodes it unchanged and cv_bridge debayers it (a camera trial: decoded as
        # colour it came out a grey checkerboard, without a word); a debayered one decodes as colour below
        try:
            mosaic = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            mosaic = None
        if mosaic is not None and mosaic.ndim == 2:
            return _to_rgb8(mosaic, encoding)
    # compressed_image_transport's subscriber: with an encoding prefix the codec saw RGB unless it says
    # "compressed bgr"; without one (plain "jpeg") it saw BGR, as OpenCV writes.
    codec_saw_rgb = bool(has_encoding) and "compressed bgr" not in compression
    # Pillow warns above its MAX_IMAGE_PIXELS and refuses twice that as a decompression bomb; the size was checked
    # against max_image_pixels (ours) above, so a JPEG larger than Pillow's limit goes through OpenCV
    from PIL import Image

    if header.format == "jpeg" and header.width * header.height <= (Image.MAX_IMAGE_PIXELS or float("inf")):
        colours = _decode_jpeg_rgb(buf, fmt)
        if colours is not None:  # the file's own order, the reverse of OpenCV's
            return np.ascontiguousarray(colours[:, :, ::-1]) if codec_saw_rgb else colours
    # IMREAD_COLOR gives 8-bit 3-channel data for grey, 16-bit and alpha images alike; orientation is ignored
    # because ROS decoders (IMREAD_UNCHANGED) ignore EXIF orientation too.
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if buf.size else None
    except cv2.error:  # most undecodable data gives None; some codecs raise instead
        bgr = None
    if bgr is None:
        raise ValueError(f"CompressedImage data ({buf.size} bytes) does not decode as an image; format {fmt!r}, "
                         f"expected jpeg or png data")
    return bgr if codec_saw_rgb else np.ascontiguousarray(bgr[:, :, ::-1])


def make_compressed_image(types: Any, header: Any, rgb: np.ndarray, fmt: str = "jpeg", *,
                          jpeg_quality: int = JPEG_QUALITY) -> Any:
    """``[H,W,3]`` uint8 RGB -> ``sensor_msgs/CompressedImage`` as ``compressed_image_transport`` publishes it.

    The format is ``"rgb8; <fmt> compressed bgr8"`` (the data is a standard JPEG / PNG file).

    Raises:
        ValueError: ``fmt`` not in ``COMPRESSED_FORMATS``, or ``rgb`` not ``[H,W,3]`` uint8.
    """
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed format {fmt!r} is not supported; expected one of {', '.join(COMPRESSED_FORMATS)}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an [H,W,3] uint8 RGB image, got shape {rgb.shape} {rgb.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(rgb[:, :, ::-1]), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape[1]}x{rgb.shape[0]} image as {fmt}")
    cls = types["sensor_msgs/msg/CompressedImage"]
    return cls(header=header, format=f"rgb8; {fmt} compressed bgr8", data=_uint8_field(cls, encoded.tobytes()))


DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")  # REP 118: metres, millimetres (mono16: some drivers' 16UC1)
LABEL_ENCODINGS = ("mono8", "8UC1")  # class ids


# compressed_depth_image_transport's ConfigHeader before the PNG data (codec.cpp: int32 format, float depthParam[2])
COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")


def _compressed_depth_to_metres(msg: Any, max_pixels: int) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` of image_transport's ``compressedDepth`` plugin (format ``"16UC1;
    compressedDepth png"``, ``"32FC1; compressedDepth png"``, older ``"16UC1; compressedDepth"``) -> ``[H,W]`` float32
    metres, NaN invalid, decoded as ``compressed_depth_image_transport::decodeCompressedDepthImage`` does: after the
    12-byte ConfigHeader a 16-bit PNG, millimetres for 16UC1, for 32FC1 a quantised inverse depth ``v`` with depth
    ``depthParam[0] / (v - depthParam[1])`` and 0 invalid. RVL data is refused (not decoded here).

    Raises:
        ValueError: another format, RVL, data that does not decode as a 16-bit single-channel PNG, or one too large.
    """
    from mtl3d_perception.geometry import depth_from_mm

    fmt = str(msg.format)
    encoding, _, compression = (part.strip() for part in fmt.partition(";"))
    if "compressedDepth" not in compression or encoding not in ("32FC1", *DEPTH_ENCODINGS):
        raise ValueError(f"a compressed depth image must be image_transport's compressedDepth (format like '16UC1; "
                         f"compressedDepth png'), got format {fmt!r}")
    if "rvl" in compression:
        raise ValueError(f"compressedDepth RVL data (format {fmt!r}) is not decoded here; record the depth with the "
                         "plugin's png format (its `format` parameter) or raw")
    buf = _uint8_buffer(msg.data)
    if buf.size <= COMPRESSED_DEPTH_HEADER.size:
        raise ValueError(f"compressedDepth message of {buf.size} bytes: expected a {COMPRESSED_DEPTH_HEADER.size}-byte "
                         "header and PNG data")
    _, quant_a, quant_b = COMPRESSED_DEPTH_HEADER.unpack(buf[:COMPRESSED_DEPTH_HEADER.size].tobytes())
    png = buf[COMPRESSED_DEPTH_HEADER.size:]
    _checked_header(png, f"compressedDepth data ({png.size} bytes, format {fmt!r})", max_pixels)
    value = cv2.imdecode(png, cv2.IMREAD_UNCHANGED)
    if value is None or value.dtype != np.uint16 or value.ndim != 2:
        got = "nothing" if value is None else f"{value.dtype} {value.shape}"
        raise ValueError(f"compressedDepth data (format {fmt!r}) does not decode as a 16-bit single-channel PNG "
                         f"(got {got})")
    if encoding != "32FC1":
        return depth_from_mm(value)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(quant_a) / (value.astype(np.float32) - np.float32(quant_b))
    return np.where((value > 0) & np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan)).astype(np.float32)


def make_compressed_depth(types: Any, header: Any, depth_m: np.ndarray, encoding: str = "32FC1", *,
                          depth_max: float = 10.0, depth_quantization: float = 100.0) -> Any:
    """``[H,W]`` metres (NaN invalid) -> ``sensor_msgs/CompressedImage`` as compressed_depth_image_transport's PNG
    encoder writes it (``encodeCompressedDepthImage``, its default ``depth_max`` 10 m and ``depth_quantization``
    100): ``32FC1`` as a quantised inverse depth, ``16UC1`` as millimetres (beyond ``depth_max``: 0). For tests and
    tools; the inverse of :func:`depth_image_to_metres` on such a message."""
    depth = np.asarray(depth_m, np.float32)
    valid = np.isfinite(depth) & (depth > 0) & (depth < depth_max)
    if encoding == "32FC1":
        quant_a = np.float32(depth_quantization * (depth_quantization + 1.0))
        quant_b = np.float32(1.0 - quant_a / np.float32(depth_max))
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(valid, quant_a / depth + quant_b, 0).astype(np.uint16)
    elif encoding == "16UC1":
        quant_a = quant_b = np.float32(0.0)
        value = np.where(valid, np.rint(depth * 1000.0), 0).astype(np.uint16)
    else:
        raise ValueError(f"compressedDepth encodes 32FC1 or 16UC1 depth, got {encoding!r}")
    ok, png = cv2.imencode(".png", value)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {value.shape[1]}x{value.shape[0]} depth image as PNG")
    data = COMPRESSED_DEPTH_HEADER.pack(0, float(quant_a), float(quant_b)) + png.tobytes()
    cls = types["sensor_msgs/msg/CompressedImage"]
    return cls(header=header, format=f"{encoding}; compressedDepth png", data=_uint8_field(cls, data))


def label_image_encoding(msg: Any) -> str:
    """The encoding of a ground-truth image message: an ``Image``'s ``encoding``; for a ``CompressedImage`` of the
    ``compressedDepth`` plugin the encoding before its ``;`` (``16UC1``, ``32FC1``), else its whole ``format`` (no
    depth or label encoding: a colour image)."""
    if not is_compressed_image(msg):
        return str(msg.encoding)
    encoding, _, compression = (part.strip() for part in str(msg.format).partition(";"))
    return encoding if "compressedDepth" in compression else str(msg.format)


def label_image_size(msg: Any) -> tuple[int, int]:
    """(width, height) of a ground-truth image message without decoding it: an ``Image``'s fields; a
    ``compressedDepth`` one's from its PNG header; (0, 0) where that cannot be read (the size is then unknown)."""
    if not is_compressed_image(msg):
        return int(msg.width), int(msg.height)
    try:
        header = read_image_header(_uint8_buffer(msg.data)[COMPRESSED_DEPTH_HEADER.size:])
    except ValueError:
        return 0, 0
    return int(header.width), int(header.height)


def depth_image_to_metres(msg: Any, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A depth image (REP 118: ``32FC1`` metres or ``16UC1`` / ``mono16`` millimetres, 0 invalid; or a
    ``CompressedImage`` of image_transport's ``compressedDepth`` plugin, as RealSense bags often hold it) -> ``[H,W]``
    float32 metres, NaN invalid (non-positive and non-finite values included).

    Raises:
        ValueError: another encoding or compressed format.
    """
    from mtl3d_perception.geometry import depth_from_mm, valid_depth

    if is_compressed_image(msg):
        return _compressed_depth_to_metres(msg, max_pixels)
    if msg.encoding == "32FC1":
        d = image_to_array(msg).astype(np.float32)
        return np.where(valid_depth(d), d, np.float32(np.nan))
    if msg.encoding in DEPTH_ENCODINGS:
        return depth_from_mm(image_to_array(msg))
    raise ValueError(f"depth images must be 32FC1 (m) or 16UC1 (mm), got {msg.encoding!r}")


def label_image_to_ids(msg: Any) -> np.ndarray:
    """A ``mono8`` (or ``8UC1``) image of class ids -> ``[H,W]`` uint8.

    Raises:
        ValueError: another encoding.
    """
    if msg.encoding not in LABEL_ENCODINGS:
        raise ValueError(f"semantic labels must be mono8 class ids, got {msg.encoding!r}")
    return image_to_array(msg).astype(np.uint8)


# --------------------------------------------------------------------------- camera info


def camera_info_to_K(msg: Any) -> np.ndarray:
    """``sensor_msgs/CameraInfo`` -> K ``[3,3]`` float64 (row-major ``k``)."""
    k = np.asarray(msg.k, np.float64)
    if k.size != 9:
        raise ValueError(f"CameraInfo.k has {k.size} values, expected 9")
    return k.reshape(3, 3).copy()


def make_camera_info(types: Any, header: Any, K: np.ndarray, width: int, height: int) -> Any:
    """K at ``(width, height)`` -> ``sensor_msgs/CameraInfo`` for a rectified image.

    plumb_bob with zero distortion, R identity, P = [K | 0], no binning, empty ROI.
    """
    K = np.asarray(K, np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    cls = types["sensor_msgs/msg/CameraInfo"]
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return cls(
        header=header, height=int(height), width=int(width), distortion_model="plumb_bob",
        d=_float64_field(cls, np.zeros(5), fixed=False), k=_float64_field(cls, K, fixed=True),
        r=_float64_field(cls, np.eye(3), fixed=True), p=_float64_field(cls, P, fixed=True),
        binning_x=0, binning_y=0, roi=roi,
    )


# --------------------------------------------------------------------------- point clouds


@dataclass
class CloudArrays:
    """The contents of a PointCloud2 as arrays: ``points [N,3]`` float32 (NaN kept for organised clouds),
    ``rgb [N,3]`` uint8 or None, ``labels [N]`` uint32 or None, ``hw`` = (height, width) of the cloud."""

    points: np.ndarray
    rgb: np.ndarray | None
    labels: np.ndarray | None
    hw: tuple[int, int]


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``[N,3]`` uint8 -> ``[N]`` float32 carrying the 0x00RRGGBB bit pattern (the PCL / RViz RGB8 convention)."""
    rgb = np.asarray(rgb, np.uint32)
    return ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).astype(np.uint32).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: ``[N]`` float32 (or uint32) -> ``[N,3]`` uint8."""
    bits = np.ascontiguousarray(packed).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=-1).astype(np.uint8)


def make_point_cloud2(
    types: Any,
    header: Any,
    points: np.ndarray,
    rgb: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    organised_hw: tuple[int, int] | None = None,
) -> Any:
    """Arrays -> ``sensor_msgs/PointCloud2`` with fields x, y, z (float32), [rgb (float32-packed)], [label (uint32)].

    The layout is PCL's ``PointXYZRGBL`` (``PointXYZL`` without rgb): PCL matches fields by name, datatype and
    count, so ``label`` must be UINT32 for ``pcl::fromROSMsg`` to read it; every field is 4 bytes, 4-byte aligned
    (point_step 20 with rgb and label). RViz colours by ``rgb`` (RGB8) or by any field (Intensity).

    Args:
        points: ``[N,3]``; NaN rows mark invalid points of an organised cloud.
        rgb: ``[N,3]`` uint8 colours, or None.
        labels: ``[N]`` class ids (stored as uint32), or None.
        organised_hw: (H, W) with H * W == N for an organised cloud; None for an unorganised one (height 1).
    """
    points = np.asarray(points, np.float32).reshape(-1, 3)
    n = points.shape[0]
    if organised_hw is None:
        height, width = 1, n
    else:
        height, width = (int(v) for v in organised_hw)
        if height * width != n:
            raise ValueError(f"organised_hw {organised_hw} does not match {n} points")
    layout = [("x", np.float32, _FLOAT32), ("y", np.float32, _FLOAT32), ("z", np.float32, _FLOAT32)]
    if rgb is not None:
        layout.append(("rgb", np.float32, _FLOAT32))
    if labels is not None:
        layout.append(("label", np.uint32, _UINT32))
    names, formats, field_types = (list(col) for col in zip(*layout))
    offsets = [4 * i for i in range(len(layout))]  # every field starts 4-byte aligned
    point_step = 4 * len(layout)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    cloud = np.zeros(n, dtype)
    cloud["x"], cloud["y"], cloud["z"] = points[:, 0], points[:, 1], points[:, 2]
    if rgb is not None:
        cloud["rgb"] = pack_rgb(np.asarray(rgb).reshape(n, 3))
    if labels is not None:
        cloud["label"] = np.asarray(labels).reshape(n).astype(np.uint32)
    field_cls = types["sensor_msgs/msg/PointField"]
    fields = [field_cls(name=nm, offset=off, datatype=dt, count=1) for nm, off, dt in zip(names, offsets, field_types)]
    cls = types["sensor_msgs/msg/PointCloud2"]
    return cls(
        header=header, height=height, width=width, fields=fields, is_bigendian=False, point_step=point_step,
        row_step=point_step * width, data=_uint8_field(cls, cloud.tobytes()),
        is_dense=bool(np.isfinite(points).all()),
    )


def point_cloud2_to_arrays(msg: Any) -> CloudArrays:
    """``sensor_msgs/PointCloud2`` -> :class:`CloudArrays` (any field layout, endianness and row padding).

    ``rgb`` is read from a field named ``rgb`` or ``rgba``; ``labels`` from ``label``.

    Raises:
        ValueError: no x/y/z fields, an unknown field datatype, or data shorter than ``height * row_step``.
    """
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if int(f.datatype) not in _POINT_FIELD_DTYPES:
            raise ValueError(f"PointField {f.name!r} has unknown datatype {f.datatype}")
        base = _POINT_FIELD_DTYPES[int(f.datatype)].newbyteorder(order)
        names.append(f.name)
        formats.append(base if int(f.count) <= 1 else (base, int(f.count)))
        offsets.append(int(f.offset))
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"PointCloud2 has fields {names}; x, y and z are required")
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    buf = _uint8_buffer(msg.data)
    if buf.size < height * row_step or row_step < width * point_step:
        raise ValueError(
            f"PointCloud2 data has {buf.size} bytes for {height} rows of row_step {row_step} "
            f"({width} points of {point_step} bytes)"
        )
    rows = buf[: height * row_step].reshape(height, row_step)[:, : width * point_step]
    cloud = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    points = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1).astype(np.float32)
    rgb_name = "rgb" if "rgb" in names else ("rgba" if "rgba" in names else None)
    rgb = None
    if rgb_name is not None:  # reinterpret the bits in the message's byte order, never convert the float value
        bits = np.ascontiguousarray(cloud[rgb_name]).view(np.dtype(np.uint32).newbyteorder(order))
        rgb = unpack_rgb(bits.astype(np.uint32))
    labels = cloud["label"].astype(np.uint32) if "label" in names else None
    return CloudArrays(points=points, rgb=rgb, labels=labels, hw=(height, width))


# --------------------------------------------------------------------------- transforms


def transform_to_matrix(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` (``msg.transform`` of a TransformStamped) -> ``[4,4]`` float64 ``T_parent_child``.

    Raises:
        ValueError: a quaternion tf2 would refuse (NaN, or ``|q|^2`` not within 1e-2 of 1:
            ``geometry.check_unit_quaternion``).
    """
    from mtl3d_perception.geometry import check_unit_quaternion, pose_from_quat_trans

    q, t = transform.rotation, transform.translation
    quat = check_unit_quaternion([q.x, q.y, q.z, q.w], name="rotation")
    return pose_from_quat_trans(quat, np.array([t.x, t.y, t.z], np.float64))


def make_transform(types: Any, T: np.ndarray) -> Any:
    """``[4,4]`` -> ``geometry_msgs/Transform``."""
    from mtl3d_perception.geometry import pose_to_quat_trans

    q, t = pose_to_quat_trans(np.asarray(T, np.float64))
    q, t = [float(v) for v in q], [float(v) for v in t]
    return types["geometry_msgs/msg/Transform"](
        translation=types["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
        rotation=types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
    )


def make_transform_stamped(types: Any, header: Any, child_frame_id: str, T: np.ndarray) -> Any:
    """``T_parent_child`` ``[4,4]`` -> ``geometry_msgs/TransformStamped`` (parent = ``header.frame_id``)."""
    return types["geometry_msgs/msg/TransformStamped"](
        header=header, child_frame_id=str(child_frame_id), transform=make_transform(types, T)
    )
