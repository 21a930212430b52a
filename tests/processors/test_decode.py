"""Unit: the worker's strict decode (processors/vision.py) — libjpeg warnings are errors, nothing after EOI,
decoded size = FrameMeta size, bombs refused before decoding. Also the canary of the warning capture."""

from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from citystream.processors import vision
from citystream.processors.frames_agent import analyse_frame
from citystream.processors.vision import FrameRejected, decode
from tests.ingest.malformed import progressive_cut, with_sof_size

pytestmark = pytest.mark.unit
BUDGET = 8192 * 8192


def encode(width: int = 320, height: int = 240, progressive: bool = False, seed: int = 1) -> bytes:
    """A JPEG of noise (dense entropy-coded data, so cuts and corruption land inside scans)."""
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=80, progressive=progressive)
    return out.getvalue()


def scan_start(data: bytes) -> int:
    return data.find(b"\xff\xda")


BASE = encode()
PROG = encode(progressive=True)
_S = scan_start(BASE)
_NOISE = bytes(np.random.default_rng(2).integers(0, 255, 300, dtype=np.uint8)).replace(b"\xff", b"\x00")

DECODE_ONLY = {  # marker structure intact: only a decode can tell
    "scan data cut short, EOI appended": BASE[:(_S + len(BASE)) // 2] + b"\xff\xd9",
    "corrupt entropy data": BASE[:_S + 400] + _NOISE + BASE[_S + 700:],
    "last progressive scan cut short": PROG[:len(PROG) - 200] + b"\xff\xd9",
}
STRUCTURAL = {
    "bytes after EOI": BASE + b"junk\xff\xd9",
    "a second JPEG after the first EOI": BASE + BASE,
    "zero padding after EOI": BASE + b"\x00" * 16,
    "progressive scans missing": progressive_cut(PROG, 2),
}


@pytest.mark.parametrize("name", list(DECODE_ONLY))
def test_libjpeg_warnings_are_errors(name: str) -> None:
    data = DECODE_ONLY[name]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV alone accepts it
    with pytest.raises(FrameRejected) as caught:
        decode(data, BUDGET, (320, 240))
    assert caught.value.reason == "corrupt_jpeg" and "libjpeg" in caught.value.detail


@pytest.mark.parametrize("name", list(STRUCTURAL))
def test_anything_but_one_complete_jpeg_is_refused(name: str) -> None:
    with pytest.raises(FrameRejected) as caught:
        decode(STRUCTURAL[name], BUDGET, (320, 240))
    assert caught.value.reason == "bad_jpeg", caught.value.detail


def test_clean_frames_decode_to_the_frame_meta_size() -> None:
    for data in (BASE, PROG):
        assert decode(data, BUDGET, (320, 240)).shape == (240, 320, 3)
    with pytest.raises(FrameRejected) as caught:
        decode(BASE, BUDGET, (640, 480))
    assert caught.value.reason == "frame_size_mismatch"


def test_a_bomb_at_the_pixel_budget_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    small = encode(32, 24)
    bomb = with_sof_size(small, 8192, 8192)  # ~1 KB claiming exactly the default worker.max_frame_pixels
    assert len(bomb) < 2048

    def no_decode(*_args: object) -> None:
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(vision.cv2, "imdecode", no_decode)
    with pytest.raises(FrameRejected) as caught:
        decode(bomb, 8192 * 8192, (8192, 8192))
    assert caught.value.reason == "frame_too_large"
    result = analyse_frame(bomb, 8192 * 8192, np.zeros((0, 128), np.float32), 0.6, 0, (8192, 8192))
    assert result.rejected is not None and result.rejected[0] == "frame_too_large"


def test_warnings_still_reach_stderr_and_other_output_is_not_a_warning(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FrameRejected):
        decode(DECODE_ONLY["scan data cut short, EOI appended"], BUDGET)
    assert "Corrupt JPEG data" in capfd.readouterr().err
    with vision.libjpeg_messages() as found:
        os.write(2, b"an unrelated line\n")
    assert found == [] and "an unrelated line" in capfd.readouterr().err


def test_the_worker_dead_letters_corrupt_frames_with_the_reason() -> None:
    cases = ((DECODE_ONLY["corrupt entropy data"], (320, 240), "corrupt_jpeg"), (BASE + BASE, (320, 240), "bad_jpeg"),
             (BASE, (320, 241), "frame_size_mismatch"))
    for data, size, reason in cases:
        result = analyse_frame(data, BUDGET, np.zeros((0, 128), np.float32), 0.6, 0, size)
        assert result.rejected is not None and result.rejected[0] == reason
        assert result.plates == [] and result.faces == 0


def test_offline_tools_may_decode_leniently_within_the_budget() -> None:
    assert decode(BASE + b"\x00\x00", BUDGET, strict=False).shape == (240, 320, 3)
    assert decode(DECODE_ONLY["corrupt entropy data"], BUDGET, strict=False).shape == (240, 320, 3)
    with pytest.raises(FrameRejected):
        decode(with_sof_size(encode(32, 24), 8192, 8192), BUDGET, strict=False)


def test_only_libjpeg_warning_lines_count() -> None:
    with vision.libjpeg_messages() as found:
        os.write(2, b"x.py:3: UserWarning: Warning about something\nCorrupt JPEG data: bad Huffman code\n")
    assert found == [b"Corrupt JPEG data: bad Huffman code"]


def test_the_budget_leaves_headroom_for_progressive_decoding() -> None:
    baseline, progressive = encode(320, 240), encode(320, 240, progressive=True)
    budget = 320 * 240  # exactly the frame: a baseline frame fits, a progressive one needs 3x the memory
    assert decode(baseline, budget).shape == (240, 320, 3)
    with pytest.raises(FrameRejected) as caught:
        decode(progressive, budget)
    assert caught.value.reason == "frame_too_large" and "progressive" in caught.value.detail
    assert decode(progressive, 3 * budget).shape == (240, 320, 3)
