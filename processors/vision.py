"""Strict frame decoding: a frame is analysed only if it is one JPEG that decodes cleanly and completely.

Who rejects what, and why there:

- **bridge** (``ingest.validate`` with :func:`citystream.schemas.jpeg.inspect`, markers only, no pixel
  decoded — it must keep up with the broker): no SOI/EOI, broken or incomplete marker structure,
  bytes after the first EOI, progressive scans cut short, a header size that differs from FrameMeta's,
  a decompression bomb (far more pixels than the file's size can hold). Those never reach Kafka.
- **worker** (here, in a vision process, before any detector runs): everything the bridge checks,
  again (a record can reach ``raw.frames`` without the bridge), then the pixel budget from the
  header *before* decoding, with headroom for what decoding holds besides the image (a progressive
  frame keeps all its DCT coefficients: 2 bytes per component and pixel), then a decode in which
  **every libjpeg warning is an error** (``corrupt_jpeg``): corrupt entropy-coded data, scan data
  cut short and closed by an appended EOI ("premature end of data segment") — OpenCV prints such a
  warning and returns a grey-filled image, which the marker walk cannot see. Last, the decoded size
  must equal FrameMeta's.

Reasons (DeadLetter ``reason``, stage ``worker``): ``empty_frame``, ``not_jpeg``, ``bad_jpeg_header``,
``zero_size``, ``frame_too_large`` (header above ``worker.max_frame_pixels`` or above
``schemas.jpeg.MAX_PIXELS_PER_BYTE`` per byte), ``truncated_jpeg``, ``undecodable``, ``corrupt_jpeg``,
``bad_jpeg`` (marker structure), ``frame_size_mismatch``.

How warnings are seen: libjpeg (inside OpenCV) reports a warning by writing one line to the process's
standard error (file descriptor 2); OpenCV has no switch to fail on it. :func:`decode` points fd 2 at
a private file for the length of one ``imdecode`` call (under a lock, so decodes in one process do not
interleave), reads what libjpeg wrote, and writes it back to the real stderr so nothing is hidden.
Only lines that start like a libjpeg warning ("Corrupt JPEG data…", "Premature end of JPEG file", …:
``LIBJPEG_WARNING``) count, so a Python warning printed meanwhile by another thread does not. A
canary test (tests/processors/test_decode.py) fails if a known corrupt JPEG stops being caught, e.g.
after an OpenCV upgrade that silences libjpeg.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.schemas import jpeg as jpeg_contract

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
# Start-of-frame markers carry the dimensions (C4 = DHT, C8 = JPG, CC = DAC are not SOFs).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# The line starts of libjpeg(-turbo)'s warnings (jerror.h, JWRN_*); anything else on fd 2 is not one.
LIBJPEG_WARNING = re.compile(rb"(?:Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|"
                             rb"Unknown Adobe color transform|Inconsistent progression sequence|"
                             rb"Application transferred too many scanlines|Warning: unknown JFIF revision|"
                             rb"Warning: thumbnail image size)")


class FrameRejected(Exception):
    """A frame that cannot be processed; ``reason`` is a DeadLetter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF segment, or None when no SOF precedes the end of data."""
    header = frame_header(data)
    return None if header is None else (header[0], header[1])


def frame_header(data: bytes) -> tuple[int, int, int, bool] | None:
    """(width, height, components, progressive) of the first SOF segment, or None when there is none."""
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
            if i + 10 > n:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return width, height, data[i + 9], marker in PROGRESSIVE_SOF
        if marker == 0xDA or length < 2:  # start of scan before any SOF, or a broken length
            return None
        i += 2 + length
    return None


def check_jpeg(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Validate the JPEG container and pixel budget cheaply (before decoding); return (width, height) or raise."""
    if not data:
        raise FrameRejected("empty_frame", "frame has no bytes")
    if not data.startswith(SOI):
        raise FrameRejected("not_jpeg", f"starts with {data[:4].hex()}, expected ffd8")
    header = frame_header(data)
    if header is None:
        raise FrameRejected("bad_jpeg_header", "no frame header (SOF) found")
    width, height, components, progressive = header
    if width == 0 or height == 0:
        raise FrameRejected("zero_size", f"header declares {width}x{height}")
    if width * height > max_pixels:
        raise FrameRejected("frame_too_large", f"header declares {width}x{height} > {max_pixels} pixels")
    # Headroom: the budget is the memory of decoding a baseline frame of max_pixels (3 bytes a pixel); a
    # progressive frame also holds every DCT coefficient (2 bytes per component and pixel) until its last scan.
    cost = width * height * (3 + (2 * components if progressive else 0))
    if cost > max_pixels * 3:
        raise FrameRejected("frame_too_large", f"decoding the {'progressive ' if progressive else ''}{width}x{height}"
                            f" header needs ~{cost >> 20} MiB, above the budget of {max_pixels} baseline pixels")
    if width * height > len(data) * jpeg_contract.MAX_PIXELS_PER_BYTE:
        raise FrameRejected("frame_too_large", f"header declares {width}x{height} in only {len(data)} bytes "
                            f"(decompression bomb: > {jpeg_contract.MAX_PIXELS_PER_BYTE} pixels per byte)")
    if not data.rstrip(b"\x00").endswith(EOI):  # zero padding after EOI is refused later, as bad_jpeg
        raise FrameRejected("truncated_jpeg", f"no end-of-image marker in {len(data)} bytes")
    return width, height


_CAPTURE_LOCK = threading.Lock()
_capture_file: IO[bytes] | None = None


@contextmanager
def libjpeg_messages() -> Iterator[list[bytes]]:
    """Collect what native code writes to fd 2 inside the block (then echoed to the real stderr)."""
    global _capture_file
    with _CAPTURE_LOCK:
        if _capture_file is None:
            _capture_file = tempfile.TemporaryFile()  # one per process, reused
        sink = _capture_file
        sink.seek(0)
        sink.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        found: list[bytes] = []
        try:
            os.dup2(sink.fileno(), 2)
            yield found
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if os.fstat(sink.fileno()).st_size:
                sink.seek(0)
                text = sink.read()
                os.write(2, text)
                found.extend(line for line in text.splitlines() if LIBJPEG_WARNING.match(line))


def decode(data: bytes, max_pixels: int, expected: tuple[int, int] | None = None, *,
           strict: bool = True) -> NDArray[np.uint8]:
    """A BGR image from one clean, complete JPEG of the ``expected`` (width, height), or FrameRejected.

    ``strict=False`` (offline tools reading people's photos, which may carry a trailer after EOI) keeps
    the budget and header checks but accepts what OpenCV decodes despite warnings or trailing bytes.
    """
    width, height = check_jpeg(data, max_pixels)
    if expected is not None and (width, height) != expected:
        raise FrameRejected("frame_size_mismatch", f"JPEG header {width}x{height} but FrameMeta "
                            f"{expected[0]}x{expected[1]}")
    with libjpeg_messages() as warnings:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise FrameRejected("undecodable", f"OpenCV could not decode {len(data)} bytes ({width}x{height} header)")
    if not strict:
        return image  # type: ignore[no-any-return]
    if warnings:
        raise FrameRejected("corrupt_jpeg", "libjpeg: " + "; ".join(w.decode(errors="replace") for w in warnings)[:900])
    try:
        jpeg_contract.inspect(data)  # what decoding does not complain about: bytes after EOI, missing scans
    except jpeg_contract.JpegRejected as exc:
        raise FrameRejected(exc.reason, exc.detail) from None
    if image.shape[1] != width or image.shape[0] != height:
        raise FrameRejected("frame_size_mismatch",
                            f"decoded {image.shape[1]}x{image.shape[0]}, header {width}x{height}")
    bgr: NDArray[np.uint8] = image
    return bgr
