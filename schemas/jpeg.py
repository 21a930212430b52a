"""The frame body contract: one complete baseline or progressive JPEG, checked from its markers alone.

:func:`inspect` walks the JPEG marker structure without decoding a pixel (microseconds for a
camera frame, so the bridge can afford it on every frame) and returns the frame header (SOF) facts,
or raises :class:`JpegRejected` with a DeadLetter reason:

- ``not_jpeg``: no start-of-image marker.
- ``bad_jpeg``: a segment runs past the end, no frame header or no scan, a second frame header, an
  unsupported coding process (only SOF0/1/2: baseline, extended, progressive Huffman), a scan
  without its end, a component or (progressive) coefficient that no scan completes (progressive
  scans cut short), **any byte after the first end-of-image marker**, or no end-of-image marker.
- ``frame_too_large``: the header declares more pixels than ``MAX_PIXELS_PER_BYTE`` times the file
  size: a decompression bomb (1.5 KB claiming 8192×8192). Real camera frames stay far below.

What it cannot see is inside the entropy-coded data (corrupt or cut-short scan data closed by an
appended EOI): only decoding finds that — see :mod:`citystream.processors.vision`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SOI = b"\xff\xd8"
EOI_MARKER = 0xD9
SOS = 0xDA
SUPPORTED_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}
# Start-of-frame markers (C4 = DHT, C8 = JPG, CC = DAC are not frame headers).
ANY_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# Inside entropy-coded data FF is followed by 00 (stuffing) or D0-D7 (restart); anything else is a marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
MAX_PIXELS_PER_BYTE = 2048
"""Most pixels a JPEG of n bytes may declare. Measured with Pillow/libjpeg: a flat colour frame takes 1 byte
per ~60 pixels (baseline) or ~170 (progressive), a flat grey progressive one at quality 1 per ~255 — the
cheapest a camera encoder writes. 2048 leaves an 8-fold margin and is far below a bomb (1.5 KB claiming
8192×8192 is ~44 000 pixels per byte)."""


class JpegRejected(Exception):
    """A frame body that is not one complete JPEG; ``reason`` is a DeadLetter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class JpegInfo:
    """What the frame header declares."""

    width: int
    height: int
    components: int
    progressive: bool


def _bad(detail: str) -> JpegRejected:
    return JpegRejected("bad_jpeg", detail)


def inspect(data: bytes) -> JpegInfo:
    """The frame header of one complete JPEG; raises JpegRejected (see the module docstring)."""
    if not data.startswith(SOI):
        raise JpegRejected("not_jpeg", f"starts with {data[:4].hex() or 'nothing'}, expected ffd8")
    walk = _Walk(data)
    info = walk.run()
    if info.width * info.height > len(data) * MAX_PIXELS_PER_BYTE:
        raise JpegRejected("frame_too_large", f"header declares {info.width}x{info.height} in {len(data)} bytes "
                           f"(more than {MAX_PIXELS_PER_BYTE} pixels per byte)")
    return info


class _Walk:
    """One pass over the markers, tracking what the scans cover."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.info: JpegInfo | None = None
        self.component_ids: list[int] = []
        self.scanned: set[int] = set()  # baseline: components some scan carried
        self.done: dict[int, list[bool]] = {}  # progressive: component -> coefficient refined to Al = 0

    def run(self) -> JpegInfo:
        data, n, i = self.data, len(self.data), 2
        while True:
            if i + 2 > n:
                raise _bad(f"no end-of-image marker in {n} bytes")
            if data[i] != 0xFF:
                raise _bad(f"expected a marker at byte {i}, found {data[i]:02x}")
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker == EOI_MARKER:
                self._complete(i)
                if i + 2 != n:
                    raise _bad(f"{n - i - 2} bytes after the end-of-image marker at byte {i}")
                assert self.info is not None
                return self.info
            if marker in STANDALONE:
                i += 2
                continue
            if i + 4 > n:
                raise _bad(f"segment {marker:02x} at byte {i} is cut off")
            length = int.from_bytes(data[i + 2:i + 4], "big")
            end = i + 2 + length
            if length < 2 or end > n:
                raise _bad(f"segment {marker:02x} at byte {i} claims {length} bytes, {n - i - 2} left")
            if marker in ANY_SOF:
                self._frame(marker, data[i + 4:end])
            elif marker == SOS:
                self._scan(data[i + 4:end], i)
                found = _NEXT_MARKER.search(data, end)
                if found is None:
                    raise _bad(f"scan at byte {i} has no end (truncated)")
                i = found.start()
                continue
            i = end

    def _frame(self, marker: int, body: bytes) -> None:
        if self.info is not None:
            raise _bad("more than one frame header")
        if marker not in SUPPORTED_SOF:
            raise _bad(f"unsupported coding process SOF{marker - 0xC0}")
        if len(body) < 6:
            raise _bad("frame header too short")
        height, width, count = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"), body[5]
        if len(body) != 6 + 3 * count or count not in (1, 3):
            raise _bad(f"frame header with {count} components does not fit {len(body)} bytes")
        if width == 0 or height == 0:
            raise _bad(f"frame header declares {width}x{height}")
        self.component_ids = [body[6 + 3 * k] for k in range(count)]
        progressive = marker == 0xC2
        self.info = JpegInfo(width, height, count, progressive)
        if progressive:
            self.done = {c: [False] * 64 for c in self.component_ids}

    def _scan(self, body: bytes, at: int) -> None:
        if self.info is None:
            raise _bad(f"scan at byte {at} before any frame header")
        if not body:
            raise _bad(f"empty scan header at byte {at}")
        count = body[0]
        if len(body) != 4 + 2 * count or count == 0:
            raise _bad(f"scan header at byte {at} does not fit its {count} components")
        ids = [body[1 + 2 * k] for k in range(count)]
        if any(c not in self.component_ids for c in ids):
            raise _bad(f"scan at byte {at} names a component the frame does not have")
        ss, se, approx = body[1 + 2 * count], body[2 + 2 * count], body[3 + 2 * count]
        if not self.info.progressive:
            self.scanned.update(ids)
            return
        if ss > se or se > 63:
            raise _bad(f"scan at byte {at} covers coefficients {ss}..{se}")
        if approx & 0x0F == 0:  # Al = 0: these coefficients are complete after this scan
            for c in ids:
                self.done[c][ss:se + 1] = [True] * (se - ss + 1)

    def _complete(self, at: int) -> None:
        if self.info is None:
            raise _bad(f"end-of-image at byte {at} before any frame header")
        if not self.info.progressive:
            missing = [c for c in self.component_ids if c not in self.scanned]
            if missing:
                raise _bad(f"no scan for component(s) {missing}")
            return
        short = {c: flags.count(False) for c, flags in self.done.items() if not all(flags)}
        if short:
            raise _bad(f"progressive scans cut short: coefficients never completed per component {short}")
