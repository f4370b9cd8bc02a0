"""msgs/conversions.py against both message flavours: rosbags dataclasses (no ROS) and rclpy messages (marker ros).

Every encoding round-trips; odd ``step`` padding and big-endian data are read correctly; compressed images decode
with compressed_image_transport's channel-order rules; messages built here serialise with the rosbags typestore
(so they are valid ROS 2 messages byte for byte).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from mtl3d_perception.geometry import pose_from_quat_trans, rotation_to_quat
from mtl3d_perception.msgs import conversions as cv

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


def _rclpy_types():
    pytest.importorskip("rclpy")
    return cv.rclpy_types()


FLAVOURS = [
    pytest.param(lambda: TYPESTORE.types, id="rosbags"),
    pytest.param(_rclpy_types, id="rclpy", marks=pytest.mark.ros),
]


def _sample(encoding: str, h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    dtype, channels = cv.ENCODINGS[encoding]
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype.kind == "f":
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("encoding", list(cv.ENCODINGS))
def test_image_roundtrip_every_encoding(flavour, encoding):
    types = flavour()
    arr = _sample(encoding)
    msg = cv.make_image(types, cv.make_header(types, 1_500_000_001, "cam"), arr, encoding)
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    np.testing.assert_array_equal(cv.image_to_array(msg), arr)
    assert cv.stamp_to_ns(msg.header.stamp) == 1_500_000_001
    assert msg.header.frame_id == "cam"


@pytest.mark.parametrize("encoding", list(cv.ENCODINGS))
@pytest.mark.parametrize("bigendian", [False, True], ids=["le", "be"])
def test_image_odd_step_and_endianness(encoding, bigendian):
    """A padded row (odd step) and big-endian data, written by hand the way another driver would."""
    arr = _sample(encoding, h=3, w=5, seed=1)
    dtype, channels = cv.ENCODINGS[encoding]
    row = 5 * channels * dtype.itemsize
    step = row + 3
    raw = np.zeros((3, step), np.uint8)
    raw[:, :row] = np.ascontiguousarray(arr, dtype.newbyteorder(">" if bigendian else "<")).view(np.uint8).reshape(3, row)
    header = cv.make_header(TYPESTORE.types, 0, "cam")
    msg = TYPESTORE.types["sensor_msgs/msg/Image"](
        header=header, height=3, width=5, encoding=encoding, is_bigendian=int(bigendian), step=step, data=raw.ravel()
    )
    out = cv.image_to_array(msg)
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_image_to_rgb8_channel_orders():
    types = TYPESTORE.types
    header = cv.make_header(types, 0, "cam")
    rgb = _sample("rgb8", seed=2)
    np.testing.assert_array_equal(cv.image_to_rgb8(cv.make_image(types, header, rgb, "rgb8")), rgb)
    np.testing.assert_array_equal(cv.image_to_rgb8(cv.make_image(types, header, rgb[..., ::-1], "bgr8")), rgb)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(cv.image_to_rgb8(cv.make_image(types, header, rgba, "rgba8")), rgb)
    bgra = np.concatenate([rgb[..., ::-1], rgba[..., 3:]], axis=2)
    np.testing.assert_array_equal(cv.image_to_rgb8(cv.make_image(types, header, bgra, "bgra8")), rgb)
    mono = rgb[..., 0]
    np.testing.assert_array_equal(cv.image_to_rgb8(cv.make_image(types, header, mono, "mono8")), np.stack([mono] * 3, -1))
    with pytest.raises(ValueError, match="32FC1"):
        cv.image_to_rgb8(cv.make_image(types, header, np.zeros((2, 2), np.float32), "32FC1"))


def _flat(encoding: str, rgb: tuple[int, int, int], h: int = 4, w: int = 6) -> np.ndarray:
    """A flat-colour image in ``encoding``'s raw layout (Bayer mosaics built by hand; 16-bit values x 257)."""
    dtype, channels = cv.ENCODINGS[encoding]
    r, g, b = (v * (257 if dtype == np.uint16 else 1) for v in rgb)
    family = encoding.rstrip("0123456789")
    if family.startswith("bayer_"):  # the colour each pixel of the 2x2 pattern samples, row by row
        pattern = {"r": r, "g": g, "b": b}
        cfa = [[pattern[c] for c in family[6:8]], [pattern[c] for c in family[8:10]]]
        return np.array([[cfa[y % 2][x % 2] for x in range(w)] for y in range(h)], dtype)
    pixel = {"rgb": [r, g, b], "bgr": [b, g, r], "rgba": [r, g, b, 9], "bgra": [b, g, r, 9], "mono": [r]}[family]
    return np.broadcast_to(np.array(pixel, dtype), (h, w, channels)).reshape((h, w) if channels == 1 else (h, w, channels))


YUV_ENCODINGS = ("uyvy", "yuyv", "yuv422", "yuv422_yuy2", *cv.PLANAR_YUV_ENCODINGS)


@pytest.mark.parametrize("encoding", [e for e in cv.COLOUR_ENCODINGS if e not in YUV_ENCODINGS])
def test_image_to_rgb8_every_colour_encoding(encoding):
    """Every colour / mono encoding cv_bridge converts to rgb8 (one cv2 conversion per family, 16 bit scaled by
    255/65535), big-endian 16-bit data included."""
    types = TYPESTORE.types
    colour = (120, 120, 120) if encoding.startswith("mono") else (200, 100, 30)
    arr = _flat(encoding, colour)
    msg = cv.make_image(types, cv.make_header(types, 0, "cam"), arr, encoding)
    if arr.dtype == np.uint16:
        msg.is_bigendian, msg.data = 1, np.frombuffer(arr.astype(">u2").tobytes(), np.uint8)
    out = cv.image_to_rgb8(msg)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.broadcast_to(np.array(colour, np.uint8), out.shape))


@pytest.mark.parametrize(("encoding", "packing"),
                         [("yuv422_yuy2", "YUYV"), ("yuv422", "UYVY"), ("yuyv", "YUYV"), ("uyvy", "UYVY")])
def test_yuv422_flat_colour(encoding, packing):
    """The usb_cam / webcam encodings: Y=120 U=100 V=160 is RGB (172, 106, 65) within 4 levels (issue 12)."""
    types = TYPESTORE.types
    byte = {"Y": 120, "U": 100, "V": 160}
    row = np.array([byte[c] for c in packing] * 4, np.uint8)  # 8 pixels: two bytes each
    msg = types["sensor_msgs/msg/Image"](header=cv.make_header(types, 0, "cam"), height=3, width=8, encoding=encoding,
                                         is_bigendian=0, step=16, data=np.tile(row, 3))
    out = cv.image_to_rgb8(msg)
    assert out.shape == (3, 8, 3)
    assert np.abs(out.astype(int) - [172, 106, 65]).max() <= 4
    msg.width, msg.step = 7, 14  # 4:2:2 needs pixel pairs: an odd width is malformed, not a crash
    with pytest.raises(ValueError, match=encoding):
        cv.image_to_rgb8(msg)


def _planar(encoding: str, y: np.ndarray, u: np.ndarray, v: np.ndarray, pad: int = 3):
    """A planar YUV message as a driver writes it: rows padded by ``pad`` bytes of 255 (the Y plane's stride is
    ``step``; a chroma row holds the interleaved samples of one row of the chroma plane, stride ``step`` for
    4:2:0 and ``2 * step`` for 4:4:4)."""
    h, w = y.shape
    step = w + pad
    order = (v, u) if encoding == "nv21" else (u, v)
    chroma = np.stack(order, -1).reshape(u.shape[0], -1)  # interleaved pairs
    stride = step if encoding != "nv24" else 2 * step
    rows = [np.pad(y, ((0, 0), (0, step - w)), constant_values=255),
            np.pad(chroma, ((0, 0), (0, stride - chroma.shape[1])), constant_values=255)]
    data = np.concatenate([r.ravel() for r in rows])
    return TYPESTORE.types["sensor_msgs/msg/Image"](header=cv.make_header(TYPESTORE.types, 0, "cam"), height=h, width=w,
                                                    encoding=encoding, is_bigendian=0, step=step, data=data)


@pytest.mark.parametrize("encoding", list(cv.PLANAR_YUV_ENCODINGS))
@pytest.mark.parametrize("width", [8, 7])
def test_planar_yuv_flat_colour(encoding, width):
    """Jetson / Android / V4L2 cameras' planar encodings: Y=120 U=100 V=160 is RGB (172, 106, 65) within 4 levels, as
    for UYVY; padded rows are skipped. 4:2:0 data of an odd size is malformed (ValueError), 4:4:4 is not."""
    h, w = 4, width
    cw, ch = (w, h) if encoding == "nv24" else (w // 2, h // 2)
    msg = _planar(encoding, np.full((h, w), 120, np.uint8), np.full((ch, cw), 100, np.uint8), np.full((ch, cw), 160, np.uint8))
    if encoding != "nv24" and width % 2:
        with pytest.raises(ValueError, match=f"{encoding}.*even width"):
            cv.image_to_rgb8(msg)
        return
    out = cv.image_to_rgb8(msg)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - [172, 106, 65]).max() <= 4
    msg.data = msg.data[:-1]
    with pytest.raises(ValueError, match=f"{encoding} image data has"):
        cv.image_to_rgb8(msg)


@pytest.mark.parametrize("encoding", list(cv.PLANAR_YUV_ENCODINGS))
def test_planar_yuv_image_matches_opencv_i420(encoding):
    """A colour gradient through each planar layout gives OpenCV's I420 conversion of the same samples (nv24 carries
    the 4:2:0 chroma repeated over each 2x2 block, so its pair average changes nothing): the planes and the chroma
    order are read right."""
    rgb = _smooth_rgb(12, 16)
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)  # [1.5 H, W]: Y, then the U plane, then the V plane
    h, w = rgb.shape[:2]
    y, uv = i420[:h], i420[h:].reshape(2, h // 2, w // 2)
    u, v = uv
    if encoding == "nv24":
        u, v = (np.repeat(np.repeat(c, 2, 0), 2, 1) for c in (u, v))
    expected = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    out = cv.image_to_rgb8(_planar(encoding, y, u, v))
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert np.abs(out.astype(int) - rgb).mean() < 8  # and that is the picture (4:2:0 chroma blurs a little)


def test_bad_images_raise_value_error_naming_the_problem():
    types = TYPESTORE.types
    header = cv.make_header(types, 0, "cam")
    msg = cv.make_image(types, header, np.zeros((2, 3, 3), np.uint8), "rgb8")
    msg.encoding = "64FC1"
    with pytest.raises(ValueError, match=r"'64FC1'.*supported: rgb8, bgr8"):
        cv.image_to_array(msg)
    msg.encoding = "nv12"
    with pytest.raises(ValueError, match="planar 'nv12' image has no per-pixel layout"):
        cv.image_to_array(msg)
    with pytest.raises(ValueError, match="nv12"):
        cv.make_image(types, header, np.zeros((2, 3, 3), np.uint8), "nv12")
    msg.encoding = "8UC3"  # cv_bridge: "[8UC3] is not a color format"; the list names every supported one
    with pytest.raises(ValueError, match=r"'8UC3' is not a colour or mono encoding; supported: .*yuv422_yuy2.*bayer_grbg16"):
        cv.image_to_rgb8(msg)
    with pytest.raises(ValueError, match="channel"):
        cv.make_image(types, header, np.zeros((2, 3), np.uint8), "rgb8")
    msg = cv.make_image(types, header, np.zeros((2, 3, 3), np.uint8), "rgb8")
    msg.height = 4
    with pytest.raises(ValueError, match="bytes"):
        cv.image_to_array(msg)


# --------------------------------------------------------------------------- compressed images


def _smooth_rgb(h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth colour image (JPEG keeps it within a few grey levels), distinct in every channel."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)


def _compressed(types, fmt: str, data: bytes | np.ndarray):
    cls = types["sensor_msgs/msg/CompressedImage"]
    return cls(header=cv.make_header(types, 0, "cam"), format=fmt, data=cv._uint8_field(cls, data))


def _encode(ext: str, array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("fmt", cv.COMPRESSED_FORMATS)
def test_compressed_image_roundtrip(flavour, fmt):
    types = flavour()
    rgb = _smooth_rgb()
    msg = cv.make_compressed_image(types, cv.make_header(types, 5, "cam"), rgb, fmt)
    assert msg.format == f"rgb8; {fmt} compressed bgr8"  # what compressed_image_transport writes
    assert cv.is_compressed_image(msg) and not cv.is_compressed_image(cv.make_image(types, msg.header, rgb, "rgb8"))
    back = cv.image_to_rgb8(msg)
    assert back.shape == rgb.shape and back.dtype == np.uint8
    if fmt == "png":
        np.testing.assert_array_equal(back, rgb)
    else:  # lossy, but colours stay in place (a swapped R and B would be off by ~100 levels)
        assert np.abs(back.astype(int) - rgb).mean() < 3


@pytest.mark.parametrize(("fmt", "order"), [
    ("jpeg", "bgr"),  # older drivers: no encoding prefix, OpenCV's BGR
    ("png", "bgr"),
    ("", "bgr"),  # an empty format: the data itself says what it is
    ("bgr8; png compressed bgr8", "bgr"),
    ("rgb8; png compressed bgr8", "bgr"),
    ("rgb8; png compressed rgb8", "rgb"),  # the codec was given RGB
    ("rgba8; png compressed bgr8", "bgr"),
])
def test_compressed_channel_order_follows_the_format(fmt, order):
    rgb = _smooth_rgb()
    data = _encode(".png", rgb[:, :, ::-1] if order == "bgr" else rgb)
    np.testing.assert_array_equal(cv.image_to_rgb8(_compressed(TYPESTORE.types, fmt, data)), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "mono8; jpeg compressed mono8", "mono8; png compressed mono8"])
def test_compressed_mono_gives_grey_rgb(fmt):
    grey = _smooth_rgb()[:, :, 0]
    data = _encode(".png" if "png" in fmt else ".jpg", grey)
    out = cv.image_to_rgb8(_compressed(TYPESTORE.types, fmt, data))
    assert out.shape == (*grey.shape, 3)
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    assert np.abs(out[:, :, 0].astype(int) - grey).max() <= (0 if "png" in fmt else 8)


def test_compressed_16bit_png_and_alpha_decode_to_rgb8():
    rgb = _smooth_rgb()
    bgr16 = rgb[:, :, ::-1].astype(np.uint16) * 257
    np.testing.assert_array_equal(cv.image_to_rgb8(_compressed(TYPESTORE.types, "png", _encode(".png", bgr16))), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(cv.image_to_rgb8(_compressed(TYPESTORE.types, "png", _encode(".png", bgra))), rgb)


@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_QUALITY, 60],
                                    [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]],
                         ids=["baseline", "progressive", "q60", "444"])
@pytest.mark.parametrize("grey", [False, True], ids=["colour", "grey"])
def test_jpeg_decodes_to_opencvs_pixels(params, grey):
    """JPEG goes through Pillow (it refuses corrupt data, which OpenCV decodes with grey blocks): the same pixels as
    cv2.imdecode, for colour and grey, baseline and progressive, 4:2:0 and 4:4:4."""
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), (5, 5), 0)
    image = image[:, :, 0] if grey else image
    ok, data = cv2.imencode(".jpg", image, params)
    expected = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(cv.image_to_rgb8(_compressed(TYPESTORE.types, "jpeg", data.tobytes())), expected)


def test_corrupt_jpeg_data_is_refused_not_decoded_grey():
    """A hostile-input trial: 200 bytes of a JPEG's entropy-coded data overwritten: OpenCV decoded it with 53 % of the
    picture grey and only libjpeg's stderr line said so; the frame was mapped. It is refused, naming the data."""
    rgb = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8), (3, 3), 0)
    data = bytearray(_encode(".jpg", rgb))
    middle = len(data) // 2
    data[middle:middle + 200] = b"\xff" * 200
    with pytest.raises(ValueError, match=r"CompressedImage \(\d+ bytes, format 'jpeg'\) holds corrupt or truncated "
                                         r"JPEG data \(broken data stream"):
        cv.image_to_rgb8(_compressed(TYPESTORE.types, "jpeg", bytes(data)))
    good = _encode(".jpg", rgb)
    with pytest.raises(ValueError, match="holds corrupt or truncated JPEG data .*truncated"):
        cv.image_to_rgb8(_compressed(TYPESTORE.types, "jpeg", good[: len(good) * 3 // 4]))  # cut in its scan


def test_bad_compressed_images_raise_value_error_naming_the_format():
    types = TYPESTORE.types
    with pytest.raises(ValueError, match=r"\(10 bytes, format 'rgb8; jpeg compressed bgr8'\) refused before decoding: "
                                         r"data .* is neither JPEG nor PNG"):
        cv.image_to_rgb8(_compressed(types, "rgb8; jpeg compressed bgr8", b"not a jpeg"))
    with pytest.raises(ValueError, match=r"\(0 bytes, format 'jpeg'\)"):
        cv.image_to_rgb8(_compressed(types, "jpeg", b""))
    good = _encode(".jpg", _smooth_rgb())
    with pytest.raises(ValueError, match=r"holds corrupt or truncated JPEG data \(Truncated File Read\)"):
        cv.image_to_rgb8(_compressed(types, "jpeg", good[: len(good) // 3]))  # cut off inside its headers
    depth_png = _encode(".png", np.full((4, 4), 1000, np.uint16))
    for fmt in ("16UC1; png compressed mono16", "32FC1; compressedDepth png"):
        with pytest.raises(ValueError, match=f"format '{fmt}' holds a '{fmt.split(';')[0]}' image, not a colour one"):
            cv.image_to_rgb8(_compressed(types, fmt, depth_png))
    msg = cv.make_compressed_image(types, cv.make_header(types, 0, "cam"), _smooth_rgb())
    with pytest.raises(ValueError, match="CompressedImage .* has no raw layout"):
        cv.image_to_array(msg)
    with pytest.raises(ValueError, match="'webp' is not supported; expected one of jpeg, png"):
        cv.make_compressed_image(types, msg.header, _smooth_rgb(), "webp")
    with pytest.raises(ValueError, match=r"\[H,W,3\] uint8 RGB image, got shape \(24, 32\)"):
        cv.make_compressed_image(types, msg.header, _smooth_rgb()[:, :, 0])


@pytest.mark.ros
def test_rclpy_compressed_image_decodes_and_serialises():
    """An rclpy CompressedImage (``data`` an array.array) decodes, and its bytes read back through rosbags."""
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage

    rgb = _smooth_rgb()
    msg = CompressedImage(format="png", data=_encode(".png", rgb[:, :, ::-1]))
    np.testing.assert_array_equal(cv.image_to_rgb8(msg), rgb)
    built = cv.make_compressed_image(cv.rclpy_types(), cv.make_header(cv.rclpy_types(), 0, "cam"), rgb, "png")
    back = TYPESTORE.deserialize_cdr(serialize_message(built), "sensor_msgs/msg/CompressedImage")
    np.testing.assert_array_equal(cv.image_to_rgb8(back), rgb)


def test_rosbags_messages_serialise():
    types = TYPESTORE.types
    header = cv.make_header(types, 42, "cam")
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    msgs = {
        "sensor_msgs/msg/Image": cv.make_image(types, header, _sample("32FC1"), "32FC1"),
        "sensor_msgs/msg/CameraInfo": cv.make_camera_info(types, header, K, 64, 48),
        "sensor_msgs/msg/PointCloud2": cv.make_point_cloud2(
            types, header, np.ones((4, 3)), rgb=np.zeros((4, 3), np.uint8), labels=np.arange(4)
        ),
        "geometry_msgs/msg/TransformStamped": cv.make_transform_stamped(types, header, "child", np.eye(4)),
        "sensor_msgs/msg/CompressedImage": cv.make_compressed_image(types, header, _sample("rgb8")),
    }
    for name, msg in msgs.items():
        back = TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(msg, name), name)
        assert back.header.frame_id == "cam"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_camera_info_roundtrip(flavour):
    types = flavour()
    K = np.array([[50.0, 0, 31.5], [0, 51.0, 23.5], [0, 0, 1]])
    msg = cv.make_camera_info(types, cv.make_header(types, 0, "cam"), K, 64, 48)
    assert (msg.width, msg.height, msg.distortion_model) == (64, 48, "plumb_bob")
    np.testing.assert_array_equal(cv.camera_info_to_K(msg), K)
    np.testing.assert_array_equal(np.asarray(msg.r).reshape(3, 3), np.eye(3))
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4)[:, :3], K)
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4)[:, 3], 0)
    np.testing.assert_array_equal(np.asarray(msg.d), np.zeros(5))


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("with_rgb", [False, True], ids=["xyz", "rgb"])
@pytest.mark.parametrize("with_labels", [False, True], ids=["", "label"])
def test_point_cloud_roundtrip(flavour, with_rgb, with_labels):
    types = flavour()
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(6, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(6, 3)).astype(np.uint8) if with_rgb else None
    labels = rng.integers(0, 300, size=6).astype(np.uint16) if with_labels else None
    msg = cv.make_point_cloud2(types, cv.make_header(types, 5, "odom"), pts, rgb=rgb, labels=labels)
    names = [f.name for f in msg.fields]
    assert names[:3] == ["x", "y", "z"] and ("rgb" in names) == with_rgb and ("label" in names) == with_labels
    assert (msg.height, msg.width, msg.is_dense) == (1, 6, True)
    assert msg.row_step == msg.point_step * 6 and len(msg.data) == msg.row_step
    if with_rgb and with_labels:  # PCL's PointXYZRGBL: label UINT32 (datatype 6), point_step 20
        label = next(f for f in msg.fields if f.name == "label")
        assert (label.datatype, label.offset, label.count, msg.point_step) == (6, 16, 1, 20)
    back = cv.point_cloud2_to_arrays(msg)
    np.testing.assert_array_equal(back.points, pts)
    if with_rgb:
        np.testing.assert_array_equal(back.rgb, rgb)
    if with_labels:
        np.testing.assert_array_equal(back.labels, labels)


def test_point_cloud_organised_with_nan():
    types = TYPESTORE.types
    pts = np.ones((2, 3, 3), np.float32)
    pts[1, 2] = np.nan
    msg = cv.make_point_cloud2(types, cv.make_header(types, 0, "cam"), pts.reshape(-1, 3), organised_hw=(2, 3))
    assert (msg.height, msg.width, msg.is_dense) == (2, 3, False)
    back = cv.point_cloud2_to_arrays(msg)
    assert back.hw == (2, 3) and np.isnan(back.points[5]).all()
    with pytest.raises(ValueError, match="organised_hw"):
        cv.make_point_cloud2(types, cv.make_header(types, 0, "cam"), pts.reshape(-1, 3), organised_hw=(4, 4))


def test_point_cloud_foreign_layout_big_endian_padded():
    """A cloud laid out by another driver: float64 xyz, rgba, big-endian, padded points and rows."""
    types = TYPESTORE.types
    field = types["sensor_msgs/msg/PointField"]
    fields = [field(name=n, offset=8 * i, datatype=8, count=1) for i, n in enumerate("xyz")]
    fields.append(field(name="rgba", offset=24, datatype=6, count=1))
    dtype = np.dtype({"names": ["x", "y", "z", "rgba"], "formats": [">f8"] * 3 + [">u4"],
                      "offsets": [0, 8, 16, 24], "itemsize": 32})
    cloud = np.zeros((2, 3), dtype)
    cloud["x"], cloud["y"], cloud["z"] = 1.5, -2.0, 3.25
    cloud["rgba"] = (10 << 16) | (20 << 8) | 30
    raw = np.zeros((2, 3 * 32 + 8), np.uint8)
    raw[:, : 3 * 32] = cloud.view(np.uint8).reshape(2, -1)
    msg = types["sensor_msgs/msg/PointCloud2"](
        header=cv.make_header(types, 0, "cam"), height=2, width=3, fields=fields, is_bigendian=True,
        point_step=32, row_step=3 * 32 + 8, data=raw.ravel(), is_dense=True,
    )
    back = cv.point_cloud2_to_arrays(msg)
    np.testing.assert_array_equal(back.points, np.tile([1.5, -2.0, 3.25], (6, 1)).astype(np.float32))
    np.testing.assert_array_equal(back.rgb, np.tile([10, 20, 30], (6, 1)))
    assert back.labels is None and back.hw == (2, 3)


def test_pack_rgb_is_pcl_layout():
    packed = cv.pack_rgb(np.array([[255, 128, 1]], np.uint8))
    assert packed.dtype == np.float32 and packed.view(np.uint32)[0] == 0x00FF8001
    np.testing.assert_array_equal(cv.unpack_rgb(packed), [[255, 128, 1]])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_transform_roundtrip(flavour):
    types = flavour()
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    T = pose_from_quat_trans(rotation_to_quat(R), np.array([1.0, 2.0, -3.0]))
    msg = cv.make_transform_stamped(types, cv.make_header(types, 7, "odom"), "base_link", T)
    assert msg.header.frame_id == "odom" and msg.child_frame_id == "base_link"
    np.testing.assert_allclose(cv.transform_to_matrix(msg.transform), T, atol=1e-12)


@pytest.mark.ros
def test_rclpy_messages_serialise_and_read_back():
    """rclpy's own serializer accepts what we build, and rosbags deserialises it (byte compatibility)."""
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message

    types = cv.rclpy_types()
    header = cv.make_header(types, 3_000_000_123, "cam")
    img = cv.make_image(types, header, _sample("16UC1"), "16UC1")
    back = TYPESTORE.deserialize_cdr(serialize_message(img), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(cv.image_to_array(back), _sample("16UC1"))
    cloud = cv.make_point_cloud2(types, header, np.ones((3, 3)), labels=np.array([1, 2, 3]))
    back = TYPESTORE.deserialize_cdr(serialize_message(cloud), "sensor_msgs/msg/PointCloud2")
    np.testing.assert_array_equal(cv.point_cloud2_to_arrays(back).labels, [1, 2, 3])


def test_rclpy_types_unknown_name():
    with pytest.raises(KeyError, match="not importable"):
        cv.rclpy_types()["no_such_pkg/msg/Nothing"]


# --------------------------------------------------------------------------- msgs/messages.py (node and replay)

K_SMALL = np.array([[8.0, 0.0, 3.5], [0.0, 8.0, 2.5], [0.0, 0.0, 1.0]])


def _frame_messages(types, *, encoding="rgb8", K=K_SMALL, info_wh=(7, 5), frame_id="cam"):
    header = cv.make_header(types, 7_000_000_123, frame_id)
    image = cv.make_image(types, header, _sample(encoding), encoding)
    return image, cv.make_camera_info(types, header, K, *info_wh)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_frame_from_messages_and_bad_input(flavour):
    from mtl3d_perception.msgs.messages import BadInput, frame_from_messages

    types = flavour()
    image, info = _frame_messages(types, encoding="bgr8")
    frame = frame_from_messages(image, info)
    assert (frame.stamp_ns, frame.frame_id, frame.size, frame.T_world_cam) == (7_000_000_123, "cam", (7, 5), None)
    np.testing.assert_array_equal(frame.rgb, _sample("bgr8")[..., ::-1])
    np.testing.assert_array_equal(frame.K, K_SMALL)
    bad = {"encoding": {"encoding": "16UC1"}, "intrinsics": {"K": np.zeros((3, 3))},
           "size_mismatch": {"info_wh": (14, 10)}}
    for kind, kwargs in bad.items():
        with pytest.raises(BadInput) as caught:
            frame_from_messages(*_frame_messages(types, **kwargs))
        assert caught.value.kind == kind, str(caught.value)
    image, info = _frame_messages(types, encoding="rgb8")
    info.distortion_model, info.d = "kannala_brandt", _float64s(types, [0.1, 0, 0, 0])
    with pytest.raises(BadInput, match="'kannala_brandt'.*supported: plumb_bob, rational_polynomial, equidistant"):
        frame_from_messages(image, info)
    info.distortion_model, info.d = "plumb_bob", _float64s(types, [0.1, 0.0, 0.0])
    with pytest.raises(BadInput, match="3 plumb_bob distortion coefficients; expected 4, 5, 8, 12 or 14"):
        frame_from_messages(image, info)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_header_problems_make_unposed_frames_not_drops(flavour):
    """An empty frame_id or a zero stamp: the frame is kept and says why it cannot be posed (issue 12, kind 6)."""
    from mtl3d_perception.msgs.messages import HEADER_PROBLEMS, frame_from_messages
    from mtl3d_perception.runtime.history import FrameHistory

    types = flavour()
    frame = frame_from_messages(*_frame_messages(types, frame_id=""))
    assert frame.header_problem == "empty_frame_id" and "empty frame_id" in HEADER_PROBLEMS[frame.header_problem]
    assert FrameHistory().select(frame).reason == "empty_frame_id"
    image, info = _frame_messages(types)
    image.header.stamp = cv.make_stamp(types, 0)
    frame = frame_from_messages(image, info)
    assert frame.header_problem == "zero_stamp" and FrameHistory().select(frame).reason == "zero_stamp"
    assert frame_from_messages(*_frame_messages(types)).header_problem is None


# --------------------------------------------------------------------------- camera_info (msgs/camera_model.py)

K_CASE = np.array([[50.2299, 0.0, 31.5], [0.0, 50.2299, 23.5], [0.0, 0.0, 1.0]])  # ../shared/cases: 64x48


def _float64s(types, values):
    return cv._float64_field(types["sensor_msgs/msg/CameraInfo"], values, fixed=False)


def _camera_info(types, K=K_CASE, wh=(64, 48), *, model="plumb_bob", D=(), P=None, binning=(0, 0),
                 roi=(0, 0, 0, 0), frame_id="cam"):
    info = cv.make_camera_info(types, cv.make_header(types, 1, frame_id), K, *wh)
    info.distortion_model, info.d = model, _float64s(types, list(D))
    if P is not None:
        P34 = np.zeros((3, 4))
        P34[:, :3] = P
        info.p = cv._float64_field(type(info), P34, fixed=True)
    info.binning_x, info.binning_y = binning
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = roi
    return info


def test_a_camera_info_with_only_p_serves_rectified_images_and_an_empty_one_is_uncalibrated():
    """A node trial: an image_rect topic whose camera_info has K all zero and P set (drivers of rectified streams)
    dropped every frame ("non-positive focal length"); image_geometry projects rectified images with P alone. K is
    needed only to rectify a raw image with D or R. All zero (camera_info_manager without a calibration) is named as
    an uncalibrated camera, not as a focal length."""
    from mtl3d_perception.msgs.camera_model import CameraModel
    from mtl3d_perception.msgs.messages import BadInput, frame_from_messages

    types = TYPESTORE.types
    image = cv.make_image(types, cv.make_header(types, 1, "cam"), _smooth_rgb(48, 64), "rgb8")
    only_p = _camera_info(types, K=np.zeros((3, 3)), P=K_CASE)
    for kind in ("image_rect", "image_raw"):  # no D, no R: the raw image is the rectified one
        np.testing.assert_allclose(frame_from_messages(image, only_p, image_kind=kind).K, K_CASE)
    assert "image_raw: no distortion, intrinsics from P (K all zero)" in CameraModel.from_camera_info(only_p).describe(
        "image_raw")  # a trial: the note said "from K"
    distorted = _camera_info(types, K=np.zeros((3, 3)), P=K_CASE, D=(-0.1, 0.0, 0.0, 0.0, 0.0))
    np.testing.assert_allclose(frame_from_messages(image, distorted, image_kind="image_rect").K, K_CASE)
    with pytest.raises(BadInput, match=r"K is all zero but D \[-0.1, 0.0, 0.0, 0.0, 0.0\] or R asks to rectify"):
        frame_from_messages(image, distorted, image_kind="image_raw")
    assert CameraModel.from_camera_info(distorted).raw_problem is not None
    uncalibrated = _camera_info(types, K=np.zeros((3, 3)))  # P = [K | 0]: all zero too
    with pytest.raises(BadInput, match="camera_info K and P are all zero: the camera is uncalibrated") as caught:
        frame_from_messages(image, uncalibrated, image_kind="image_rect")
    assert caught.value.kind == "intrinsics"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_binning_scales_k(flavour):
    """camera_info_binning: full-resolution 64x48 K with binning 2x2 describes a 32x24 image (issue 12)."""
    from mtl3d_perception.msgs.camera_model import CameraModel
    from mtl3d_perception.msgs.messages import frame_from_messages

    types = flavour()
    info = _camera_info(types, binning=(2, 2))
    model = CameraModel.from_camera_info(info)
    assert model.size == (32, 24) and not model.rectify_raw
    K = model.intrinsics("image_raw")
    assert K[0, 0] == pytest.approx(25.11, abs=0.01) and K[1, 1] == pytest.approx(25.11, abs=0.01)
    assert 15.5 <= K[0, 2] <= 15.75 and 11.5 <= K[1, 2] <= 11.75
    image = cv.make_image(types, cv.make_header(types, 1, "cam"), _smooth_rgb(24, 32), "rgb8")
    np.testing.assert_array_equal(frame_from_messages(image, info).K, K)
    image = cv.make_image(types, cv.make_header(types, 1, "cam"), _smooth_rgb(48, 64), "rgb8")
    with pytest.raises(ValueError, match=r"64x48 \(binning 2x2\) gives a 32x24 image; the image is 64x48"):
        frame_from_messages(image, info)


def test_roi_offsets_k_before_binning():
    """ROI in full-resolution pixels, then binning (image_geometry's order); the image is roi / binning."""
    from mtl3d_perception.msgs.camera_model import CameraModel

    model = CameraModel.from_camera_info(_camera_info(TYPESTORE.types, binning=(2, 2), roi=(8, 4, 32, 24)))
    assert model.size == (16, 12)
    np.testing.assert_allclose(model.K[:2, 2], [((31.5 - 8) + 0.5) / 2 - 0.5, ((23.5 - 4) + 0.5) / 2 - 0.5])
    with pytest.raises(ValueError, match="outside the 64x48 sensor"):
        CameraModel.from_camera_info(_camera_info(TYPESTORE.types, roi=(40, 0, 32, 24)))


def test_an_roi_in_a_corner_of_the_sensor_runs_with_its_far_principal_point():
    """A camera trial: a 16x12 ROI at (48, 36) of a 64x48 sensor gives cx = 31.5 - 48 = -16.5, outside the ROI image,
    as image_geometry's PinholeCameraModel computes it and uses it; it was refused as "implausible" (within one image
    size), every frame dropped. So was a driver's already-cropped K with an empty ROI, and the Python API's Frame with
    it. Every pixel's ray stays near the axis there, so they run; a K whose rays would leave the 84 deg bound does not."""
    from mtl3d_perception.model import build_model, resolve_config
    from mtl3d_perception.msgs.messages import BadInput, frame_from_messages
    from mtl3d_perception.runtime import Frame, PerceptionPipeline

    types = TYPESTORE.types
    info = _camera_info(types, roi=(48, 36, 16, 12))
    image = cv.make_image(types, cv.make_header(types, 1, "cam"), _smooth_rgb(12, 16), "rgb8")
    frame = frame_from_messages(image, info)
    np.testing.assert_allclose(frame.K[:2, 2], [K_CASE[0, 2] - 48, K_CASE[1, 2] - 36])
    cropped = frame_from_messages(image, _camera_info(types, K=frame.K, wh=(16, 12)))  # the driver cropped K itself
    np.testing.assert_allclose(cropped.K, frame.K)
    pipeline = PerceptionPipeline(build_model(resolve_config("tiny").replace(input_size=(32, 24), pretrained=False)))
    assert pipeline.process(Frame(1, "cam", frame.rgb, frame.K, None)).depth is not None
    far = frame.K.copy()
    far[0, 2] = -20 * far[0, 0]  # rays 20 focal lengths off axis: a corrupt K, not a crop
    with pytest.raises(BadInput, match=r"cx = -\d+.* is implausible for a 16x12 image with focal length .*every "
                                       r"pixel's ray within 10 focal lengths"):
        frame_from_messages(image, _camera_info(types, K=far, wh=(16, 12)))


@pytest.mark.parametrize(("edit", "message"), [
    (dict(D=(np.nan, 0, 0, 0, 0)), r"camera_info D contains NaN or inf: \[nan, 0\.0, 0\.0, 0\.0, 0\.0\]"),
    (dict(D=(0, np.inf, 0, 0, 0)), "camera_info D contains NaN or inf"),
    (dict(R=np.full((3, 3), np.nan)), "camera_info R contains NaN or inf"),
    (dict(R=2 * np.eye(3)), r"camera_info R is not orthonormal with det \+1"),
    (dict(R=np.diag([1.0, 1.0, -1.0])), r"camera_info R is not orthonormal with det \+1 .*det = -1\.0000"),
    (dict(P=np.nan), r"camera_info P contains NaN or inf: \[\[.*nan\]"),  # Tx (P[0][3]): a second trial
    (dict(roi=(10, 20, 0, 0)), r"camera_info roi \(x 10, y 20, 0x0\) has no size; expected all zero"),
    (dict(roi=(0, 0, 32, 0)), "has no size"),
], ids=["D_nan", "D_inf", "R_nan", "R_scaled", "R_reflection", "P_tx_nan", "roi_offset_only", "roi_no_height"])
def test_camera_info_values_that_would_give_a_silently_wrong_image_are_refused(edit, message):
    """A hostile-input trial: NaN in D or R rectified every frame to black (the cloud all black, semantics predicted
    on it) with diagnostics OK; an ROI with an offset but no size shifted K by the offset without a word. Refused as
    bad input (intrinsics), naming the field."""
    from mtl3d_perception.msgs.messages import BadInput, frame_from_messages

    types = TYPESTORE.types
    edit = dict(edit)
    R, tx = edit.pop("R", None), edit.pop("P", None)
    info = _camera_info(types, **edit)
    if R is not None:
        info.r = cv._float64_field(type(info), np.asarray(R, float), fixed=True)
    if tx is not None:
        P = np.hstack([K_CASE, [[tx], [0.0], [0.0]]])
        info.p = cv._float64_field(type(info), P, fixed=True)
    image = cv.make_image(types, cv.make_header(types, 1, "cam"), _smooth_rgb(48, 64), "rgb8")
    with pytest.raises(BadInput, match=message) as caught:
        frame_from_messages(image, info)
    assert caught.value.kind == "intrinsics"


def test_a_calibration_that_rectifies_to_mostly_black_is_named():
    """Legal but wrong values (k1 = 1e6; a 90-degree R) leave most of the rectified image black: the frames are kept
    (the camera_info is what it is) but the camera description warns, which the node logs and counts."""
    from mtl3d_perception.msgs.camera_model import CameraModel

    fine = CameraModel.from_camera_info(_camera_info(TYPESTORE.types, D=(-0.1, 0.02, 0.0, 0.0, 0.0)))
    assert fine.rectified_coverage() > 0.95 and fine.rectification_problem("image_raw") is None
    assert "WARNING" not in fine.describe("image_raw")
    turned = _camera_info(TYPESTORE.types)
    R = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # a quarter turn about y
    turned.r = cv._float64_field(type(turned), R, fixed=True)
    for info in (_camera_info(TYPESTORE.types, D=(1e6, 0.0, 0.0, 0.0, 0.0)), turned):
        model = CameraModel.from_camera_info(info)
        assert model.rectified_coverage() < 0.5
        problem = model.rectification_problem("image_raw")
        assert problem is not None and "of the image black (sampled outside the raw image): check its D, R and P" \
            in problem
        assert model.describe("image_raw").endswith("WARNING: " + problem)
        assert model.rectification_problem("image_rect") is None  # a rectified topic is not remapped


def test_a_rectified_border_is_masked_in_the_frame():
    """A replay trial: a raw image with plumb_bob k1 = 0.4 rectified to P = K leaves 22.9 % of the image black (no
    raw data) where the outputs had finite depth and black cloud points. The frame carries the rectified pixels that
    sample inside the raw image (``Frame.image_mask``), the same ones ``rectified_coverage`` counts; no mask when the
    image is not remapped or every pixel is covered."""
    from mtl3d_perception.msgs.camera_model import CameraModel
    from mtl3d_perception.msgs.messages import frame_from_messages

    types = TYPESTORE.types
    info = _camera_info(types, D=(0.4, 0.0, 0.0, 0.0, 0.0))
    model = CameraModel.from_camera_info(info)
    image = cv.make_image(types, cv.make_header(types, 1, "cam"), np.full((48, 64, 3), 200, np.uint8), "rgb8")
    frame = frame_from_messages(image, info, image_kind="image_raw")
    mask = frame.image_mask
    assert mask.shape == (48, 64) and mask.dtype == bool and 0.05 < 1 - mask.mean() < 0.5
    assert mask.mean() == model.rectified_coverage() and not mask[0, 0] and mask[24, 32]
    assert (frame.rgb[~mask].max(-1) < 200).all()  # the border is (partly) black: the mask covers it
    assert frame_from_messages(image, info, image_kind="image_rect").image_mask is None  # not remapped
    small = _camera_info(types, D=(-0.02, 0.0, 0.0, 0.0, 0.0))  # barrel: the rectified image stays inside
    assert frame_from_messages(image, small, image_kind="image_raw").image_mask is None
    assert frame_from_messages(image, _camera_info(types), image_kind="image_raw").image_mask is None


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_equidistant_raw_image_is_rectified_to_p(flavour):
    """camera_info_distortion_equidistant: raw pixel (8, 6) rectifies to (7.38, 5.54) and (56, 42) to (57.01, 42.76)
    (K, D -> P); the frame carries P's intrinsics; an image_rect topic takes P without remapping (issue 12)."""
    from mtl3d_perception.msgs.camera_model import CameraModels
    from mtl3d_perception.msgs.messages import frame_from_messages

    types = flavour()
    P = K_CASE.copy()
    P[0, 0] = P[1, 1] = 45.2069
    info = _camera_info(types, model="equidistant", D=(-0.02, 0.005, 0.0, 0.0), P=P)
    cameras = CameraModels()
    model = cameras.get(info)
    assert model.rectify_raw and cameras.get(info) is model  # built once per camera_info
    map_x, map_y = model.rectification_maps()
    for raw, rectified in (((8, 6), (7.38, 5.54)), ((56, 42), (57.01, 42.76))):
        sampled = [cv2.getRectSubPix(m, (1, 1), rectified)[0, 0] for m in (map_x, map_y)]
        np.testing.assert_allclose(sampled, raw, atol=0.02)
    raw = np.zeros((48, 64, 3), np.uint8)
    raw[42, 56] = 255  # a dot at a raw pixel lands at its rectified position
    image = cv.make_image(types, cv.make_header(types, 1, "cam"), raw, "rgb8")
    frame = frame_from_messages(image, info, image_kind="image_raw", cameras=cameras)
    np.testing.assert_allclose(frame.K, P, atol=1e-4)
    v, u = np.unravel_index(np.argmax(frame.rgb[..., 0]), frame.rgb.shape[:2])
    assert (u, v) == (57, 43)
    rect = frame_from_messages(image, info, image_kind="image_rect", cameras=cameras)
    np.testing.assert_array_equal(rect.rgb, raw)
    np.testing.assert_allclose(rect.K, P, atol=1e-4)


@pytest.mark.parametrize("model_name", ["plumb_bob", "rational_polynomial"])
def test_pinhole_distortion_models_rectify(model_name):
    """plumb_bob (5 coefficients) and rational_polynomial (8) go through cv2.initUndistortRectifyMap: the map
    agrees with cv2.undistortPoints."""
    from mtl3d_perception.msgs.camera_model import CameraModel

    D = [-0.1, 0.02, 0.001, -0.001, 0.0] + ([0.01, 0.0, 0.0] if model_name == "rational_polynomial" else [])
    model = CameraModel.from_camera_info(_camera_info(TYPESTORE.types, model=model_name, D=D))
    assert model.rectify_raw
    raw = np.array([[[5.0, 4.0]]])
    u, v = cv2.undistortPoints(raw, model.K, np.array(D), R=model.R, P=model.P)[0, 0]
    sampled = [cv2.getRectSubPix(m, (1, 1), (float(u), float(v)))[0, 0] for m in model.rectification_maps()]
    np.testing.assert_allclose(sampled, raw[0, 0], atol=0.05)


def test_image_kind_follows_the_topic_name():
    from mtl3d_perception.msgs.camera_model import resolve_image_kind

    assert resolve_image_kind("auto", "/camera/color/image_raw") == "image_raw"
    assert resolve_image_kind("auto", "/camera/color/image_raw/compressed") == "image_raw"
    assert resolve_image_kind("auto", "/camera/image_rect_color") == "image_rect"
    assert resolve_image_kind("auto", "/camera/depth/image_rect_raw/compressed") == "image_rect"
    assert resolve_image_kind("image_rect", "/camera/color/image_raw") == "image_rect"
    with pytest.raises(ValueError, match="auto, image_raw, image_rect"):
        resolve_image_kind("rectified", "/x")


def test_frame_from_bag_message_is_read_only_view():
    """A deserialised bag message's buffer is read-only; the frame may share it (the pipeline copies if needed)."""
    from mtl3d_perception.msgs.messages import frame_from_messages

    image, info = _frame_messages(TYPESTORE.types)
    image = TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(image, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(frame_from_messages(image, info).rgb, _sample("rgb8"))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_products_to_messages(flavour):
    from mtl3d_perception import topics
    from mtl3d_perception.geometry import PointCloud
    from mtl3d_perception.msgs.messages import products_to_messages
    from mtl3d_perception.runtime.products import Products

    types = flavour()
    mono, colour = _sample("mono8"), _sample("rgb8")
    cloud = PointCloud(points=np.ones((4, 3), np.float32), rgb=np.zeros((4, 3), np.uint8),
                       labels=np.arange(4, dtype=np.uint16), pixels=np.zeros((4, 2), int))
    confidence = np.linspace(0.0, 1.0, 35, dtype=np.float32).reshape(5, 7)
    products = Products(stamp_ns=9_000_000_001, frame_id="cam", size=(7, 5), K=K_SMALL, depth=_sample("32FC1"),
                        depth_confidence=confidence, semantic=mono, semantic_color=colour, normals=_sample("32FC3"),
                        normals_color=colour, boundary=mono, points=cloud, points_frame_id="odom",
                        depth_color=colour)
    msgs = products_to_messages(types, products)
    assert set(msgs) == set(topics.OUTPUTS)
    np.testing.assert_array_equal(cv.image_to_array(msgs["depth/confidence"]), confidence)
    for name, msg in msgs.items():
        assert cv.stamp_to_ns(msg.header.stamp) == 9_000_000_001
        assert msg.header.frame_id == ("odom" if name == "points" else "cam")
        encoding = topics.OUTPUTS[name][1]
        if encoding is not None:
            assert (msg.encoding, msg.width, msg.height) == (encoding, 7, 5)
    np.testing.assert_array_equal(cv.image_to_array(msgs["semantic/image"]), mono)
    for group in ("depth", "semantic", "normals", "boundary"):  # each image's sibling camera_info
        np.testing.assert_allclose(cv.camera_info_to_K(msgs[f"{group}/camera_info"]), K_SMALL)
        assert (msgs[f"{group}/camera_info"].width, msgs[f"{group}/camera_info"].height) == (7, 5)
    np.testing.assert_array_equal(cv.point_cloud2_to_arrays(msgs["points"]).labels, np.arange(4))
    assert set(products_to_messages(types, products, outputs=["depth/image", "points"])) == {"depth/image", "points"}
    products.depth_confidence = None  # a model without a confidence: no confidence image, the rest unchanged
    assert set(products_to_messages(types, products)) == set(topics.OUTPUTS) - {"depth/confidence"}
    products.depth = None  # no depth: no depth image and no depth/camera_info
    assert not {"depth/image", "depth/camera_info"} & set(products_to_messages(types, products))
    with pytest.raises(ValueError, match="unknown outputs"):
        products_to_messages(types, products, outputs=["depth/image", "nope"])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_resolution_or_intrinsics_switch_is_a_new_calibration(flavour):
    """A node trial: a camera switching 320x240 (fx 300) -> 640x480 (fx 600) -> back logged nothing and /diagnostics
    kept the first description. The description names the size and intrinsics, so each switch is new once."""
    from mtl3d_perception.msgs.camera_model import CameraModels

    types = flavour()
    header = cv.make_header(types, 0, "cam")
    small = cv.make_camera_info(types, header, np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]]), 320, 240)
    large = cv.make_camera_info(types, header, np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]), 640, 480)
    cameras = CameraModels()
    first, new, _ = cameras.describe(small, "image_raw")
    assert new and first.endswith("320x240 fx 300.0 fy 300.0 cx 159.5 cy 119.5")
    assert cameras.describe(small, "image_raw")[1] is False
    switched, new, _ = cameras.describe(large, "image_raw")
    assert new and switched.endswith("640x480 fx 600.0 fy 600.0 cx 319.5 cy 239.5")
    assert cameras.describe(small, "image_raw") == (first, False, None)  # back: known, not new again


def _compressed_depth_message(types, fmt: str, value: np.ndarray, quant: tuple[float, float] = (0.0, 0.0)):
    """A CompressedImage as compressed_depth_image_transport's codec.cpp writes it, built by hand: its ConfigHeader
    (int32 format = 0 (INV_DEPTH), float depthParam[2]) then a 16-bit PNG."""
    import struct

    ok, png = cv2.imencode(".png", value.astype(np.uint16))
    assert ok
    cls = types["sensor_msgs/msg/CompressedImage"]
    return cls(header=cv.make_header(types, 5, "cam"), format=fmt,
               data=np.frombuffer(struct.pack("<iff", 0, *quant) + png.tobytes(), np.uint8).copy())


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_compressed_depth_of_image_transport_decodes_to_metres(flavour):
    """A bag-format trial: a RealSense's depth recorded through image_transport's compressedDepth plugin could not be
    read as ground truth (peers decode it). 16UC1: millimetres in the PNG; 32FC1: the quantised inverse depth
    v = A / z + B with A = q (q + 1), B = 1 - A / depth_max (the plugin's defaults q = 100, depth_max 10 m), 0 invalid."""
    types = flavour()
    mm = np.array([[0, 500, 1234], [65535, 2000, 9999]], np.uint16)
    msg = _compressed_depth_message(types, "16UC1; compressedDepth png", mm)
    out = cv.depth_image_to_metres(msg)
    assert out.dtype == np.float32 and np.isnan(out[0, 0])
    np.testing.assert_allclose(out[0, 1:], [0.5, 1.234], rtol=1e-6)
    legacy = _compressed_depth_message(types, "16UC1; compressedDepth", mm)  # the plugin's older format: png
    np.testing.assert_array_equal(cv.depth_image_to_metres(legacy), out)
    z = np.array([[0.4, 1.0, 2.5], [7.5, np.nan, 12.0]], np.float32)
    A = np.float32(100.0 * 101.0)
    B = np.float32(1.0 - A / np.float32(10.0))
    v = np.where(np.isfinite(z) & (z < 10.0), A / np.nan_to_num(z, nan=1.0) + B, 0).astype(np.uint16)
    out = cv.depth_image_to_metres(_compressed_depth_message(types, "32FC1; compressedDepth png", v, (A, B)))
    assert np.isnan(out[1, 1]) and np.isnan(out[1, 2])  # NaN, and beyond depth_max (sent as 0)
    np.testing.assert_allclose(out[0], z[0], rtol=2e-3)  # the quantisation step at these depths
    np.testing.assert_allclose(out[1, 0], 7.5, rtol=0.06)  # inverse-depth steps grow with depth
    back = cv.depth_image_to_metres(cv.make_compressed_depth(types, msg.header, z))  # the encoder used by tests
    np.testing.assert_array_equal(np.isnan(back), np.isnan(out))
    np.testing.assert_allclose(back[0], z[0], rtol=2e-3)


def test_compressed_depth_that_cannot_be_read_is_refused_naming_the_format():
    types = TYPESTORE.types
    value = np.full((4, 6), 1000, np.uint16)
    with pytest.raises(ValueError, match="compressedDepth RVL data .* is not decoded here"):
        cv.depth_image_to_metres(_compressed_depth_message(types, "16UC1; compressedDepth rvl", value))
    with pytest.raises(ValueError, match="must be image_transport's compressedDepth .* got format 'rgb8; jpeg"):
        cv.depth_image_to_metres(cv.make_compressed_image(types, cv.make_header(types, 5, "cam"), _smooth_rgb()))
    grey = _compressed_depth_message(types, "16UC1; compressedDepth png", value)
    ok, png8 = cv2.imencode(".png", value.astype(np.uint8))
    grey.data = np.concatenate([grey.data[:12], png8.ravel()])
    with pytest.raises(ValueError, match="does not decode as a 16-bit single-channel PNG"):
        cv.depth_image_to_metres(grey)
    with pytest.raises(ValueError, match="declares it"):  # a PNG header declaring more pixels than allowed
        cv.depth_image_to_metres(_compressed_depth_message(types, "16UC1; compressedDepth png", value), max_pixels=10)


@pytest.mark.parametrize(("encoding", "ext"), [("bayer_rggb8", ".png"), ("bayer_rggb16", ".png"),
                                               ("bayer_grbg8", ".png"), ("bayer_rggb8", ".jpg")])
def test_a_compressed_bayer_mosaic_is_debayered_as_the_raw_one(encoding, ext):
    """A camera trial: compressed_image_transport stores a Bayer camera's image (FLIR/Spinnaker BayerRG8) as its
    mosaic, format "bayer_rggb8; png compressed " with no target encoding, and its subscriber + cv_bridge debayer it;
    decoded as colour it came out a grey checkerboard (walls of (200, 60, 30) and (30, 80, 200) as (200, 200, 200)
    and (30, 30, 30)), replayed without a word. It now gives the raw encoding's colours."""
    types = TYPESTORE.types
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :16], rgb[:, 16:] = (200, 60, 30), (30, 80, 200)
    pattern = encoding[6:10].upper()  # RGGB, GRBG: the colours at (0,0), (0,1), (1,0), (1,1)
    mosaic = np.zeros((24, 32), np.uint8)
    for (dy, dx), channel in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(channel)]
    if encoding.endswith("16"):
        mosaic = mosaic.astype(np.uint16) * 257
    header = cv.make_header(types, 1, "cam")
    raw = cv.image_to_rgb8(cv.make_image(types, header, mosaic, encoding))
    np.testing.assert_array_equal(raw[4:-4, 4:12], np.broadcast_to([200, 60, 30], (16, 8, 3)))  # the raw path: right
    ok, data = cv2.imencode(ext, mosaic)
    assert ok
    cls = types["sensor_msgs/msg/CompressedImage"]
    fmt = f"{encoding}; {'png' if ext == '.png' else 'jpeg'} compressed "
    decoded = cv.image_to_rgb8(cls(header=header, format=fmt, data=np.frombuffer(data.tobytes(), np.uint8).copy()))
    if ext == ".png":
        np.testing.assert_array_equal(decoded, raw)
    else:  # lossy, but red stays red and blue blue (grey was the defect)
        assert np.abs(decoded[4:-4, 4:12].astype(int) - [200, 60, 30]).mean() < 25
        assert np.abs(decoded[4:-4, 20:28].astype(int) - [30, 80, 200]).mean() < 25
