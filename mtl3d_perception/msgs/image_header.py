"""The declared size of a JPEG or PNG, read from its header before anything is decoded (decompression bombs).

A 631-byte JPEG can declare 32767 x 32767 pixels, and ``cv2.imdecode`` allocates the full image before it finds out
that the data is missing (issue 15: 19.7 s and 6.6 GB); a 149-byte PNG whose IDAT chunk length says 0x7FFFFFFF made
OpenCV allocate 2 GB. So a compressed image is accepted for decoding only when:

- it is a JPEG (``FF D8``) whose first frame header (SOFn, ITU-T T.81 B.2.2) declares a size, or a PNG (the 8-byte
  signature, then IHDR, PNG spec 11.2.2) whose every chunk fits inside the data, up to IEND;
- the declared ``width * height`` is within the caller's pixel limit (``runtime.frames.MAX_IMAGE_PIXELS``).

A decoder then allocates at most a fixed multiple of the limit (the output image, and for a progressive JPEG its
DCT coefficients: 2 bytes per sample). Every other format ``cv2.imdecode`` would sniff (TIFF, WebP, JPEG 2000, EXR,
...) is refused: ``compressed_image_transport`` writes JPEG and PNG only.

Why our own code: OpenCV has no header-only API, and its own cap (the ``OPENCV_IO_MAX_IMAGE_PIXELS`` environment
variable, 2^30 pixels by default) is read once when the library loads, applies process-wide and still allows a 3 GB
decode; Pillow (not a dependency) reads sizes lazily but does not check chunk lengths against the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): the markers that start a frame header
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length
_PNG_MAX_CHUNK = 2**31 - 1  # PNG spec 5.3: a chunk length is at most 2^31 - 1


@dataclass(frozen=True)
class ImageHeader:
    """What a compressed image declares: ``format`` (``jpeg`` / ``png``), ``width`` and ``height`` in pixels."""

    format: str
    width: int
    height: int


def _u16(data: bytes, at: int) -> int:
    return data[at] << 8 | data[at + 1]


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "big")


def read_image_header(data: np.ndarray) -> ImageHeader:
    """The format and declared size of JPEG or PNG bytes, without decoding.

    Args:
        data: the file's bytes as a flat uint8 array.

    Raises:
        ValueError: not JPEG or PNG data, or a header that is truncated, inconsistent or declares a zero size (for a
            PNG also a chunk that runs past the end of the data, or no IEND chunk).
    """
    data = np.ascontiguousarray(data, np.uint8).reshape(-1).tobytes()  # a copy of the compressed bytes: small
    head = data[:8]
    if head.startswith(_JPEG_SOI):
        return _jpeg_header(data)
    if head == PNG_SIGNATURE:
        return _png_header(data)
    raise ValueError(f"data ({len(data)} bytes, starting {head[:4].hex() or 'empty'}) is neither JPEG nor PNG")


def _jpeg_header(data: bytes) -> ImageHeader:
    n, at = len(data), 2
    while True:
        at = data.find(b"\xff", at)  # garbage between segments is skipped, as decoders do
        if at < 0:
            at = n
        while at < n and data[at] == 0xFF:  # fill bytes
            at += 1
        if at >= n:
            raise ValueError(f"JPEG data ({n} bytes) ends before a frame header (SOF)")
        marker = data[at]
        at += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI, SOS
            raise ValueError(f"JPEG data has no frame header (SOF) before its {'end' if marker == 0xD9 else 'scan'}")
        if at + 2 > n:
            raise ValueError(f"JPEG segment FF{marker:02X} is truncated")
        length = _u16(data, at)
        if length < 2 or at + length > n:
            raise ValueError(f"JPEG segment FF{marker:02X} declares {length} bytes; {n - at} remain")
        if marker in _JPEG_SOF:
            if length < 8:
                raise ValueError(f"JPEG frame header (SOF) is {length} bytes, shorter than 8")
            height, width = _u16(data, at + 3), _u16(data, at + 5)
            if width == 0 or height == 0:  # height 0 = defined later by a DNL marker: not supported by decoders here
                raise ValueError(f"JPEG frame header declares {width}x{height} pixels")
            return ImageHeader("jpeg", width, height)
        at += length


def _png_header(data: bytes) -> ImageHeader:
    n, at = len(data), 8
    header = None
    while True:
        if at + 8 > n:
            raise ValueError(f"PNG data ({n} bytes) ends without an IEND chunk (truncated)")
        length, kind = _u32(data, at), data[at + 4:at + 8]
        name = kind.decode("latin-1")
        if length > _PNG_MAX_CHUNK or at + 12 + length > n:
            raise ValueError(f"PNG chunk {name!r} at byte {at} declares {length} bytes but {max(0, n - at - 12)} "
                             "remain (corrupt or truncated)")
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise ValueError(f"PNG starts with chunk {name!r} of {length} bytes, expected IHDR of 13")
            width, height = _u32(data, at + 8), _u32(data, at + 12)
            if not (0 < width <= _PNG_MAX_CHUNK and 0 < height <= _PNG_MAX_CHUNK):
                raise ValueError(f"PNG header declares {width}x{height} pixels")
            header = ImageHeader("png", width, height)
        if kind == b"IEND":
            return header
        at += 12 + length
