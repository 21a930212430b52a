"""Frame decoding with guards: hostile or broken JPEGs are rejected before they cost memory or CPU.

:func:`check_jpeg` reads only the JPEG markers: empty input, a missing SOI, a header declaring a
zero dimension or more pixels than allowed (a 20000×20000 header in a few hundred bytes), and a
stream without its EOI marker (truncated in transit) are rejected with a machine-readable
reason. :func:`decode` then lets OpenCV decode what passed. A :class:`FrameRejected` becomes a
dead letter in the worker; it never stops the stage.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
# Start-of-frame markers carry the dimensions (C4 = DHT, C8 = JPG, CC = DAC are not SOFs).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class FrameRejected(Exception):
    """A frame that cannot be processed; ``reason`` is a DeadLetter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment, or None when no SOF precedes the end of data."""
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in STANDALONE:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in SOF_MARKERS:
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any SOF, or a broken length
            return None
        i += 2 + length
    return None


def check_jpeg(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Validate the JPEG container cheaply; return (width, height) or raise FrameRejected."""
    if not data:
        raise FrameRejected("empty_frame", "frame has no bytes")
    if not data.startswith(SOI):
        raise FrameRejected("not_jpeg", f"starts with {data[:4].hex()}, expected ffd8")
    dims = jpeg_dimensions(data)
    if dims is None:
        raise FrameRejected("bad_jpeg_header", "no frame header (SOF) found")
    width, height = dims
    if width == 0 or height == 0:
        raise FrameRejected("zero_size", f"header declares {width}x{height}")
    if width * height > max_pixels:
        raise FrameRejected("frame_too_large", f"header declares {width}x{height} > {max_pixels} pixels")
    if not data.rstrip(b"\x00").endswith(EOI):
        raise FrameRejected("truncated_jpeg", f"no end-of-image marker in {len(data)} bytes")
    return width, height


def decode(data: bytes, max_pixels: int) -> NDArray[np.uint8]:
    """A BGR image from JPEG bytes, or FrameRejected."""
    width, height = check_jpeg(data, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise FrameRejected("undecodable", f"OpenCV could not decode {len(data)} bytes ({width}x{height} header)")
    bgr: NDArray[np.uint8] = image
    return bgr
