"""Camera plugins: image-folder and video-file replay, bad input, backoff, the frame encoder."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from citystream.ingest.gateway.cameras import (
    BadFrame,
    CameraError,
    CaptureSource,
    Image,
    ImageFolderSource,
    SimulatedSource,
    check_frame,
    encode_frame,
    open_camera,
)
from citystream.settings.gateway import CameraSpec, ImagesCamera, SimulatedCamera

pytestmark = pytest.mark.unit


def solid(level: int, width: int = 160, height: int = 90) -> Image:
    return np.full((height, width, 3), level, np.uint8)


def write_video(path: Path, frames: list[Image], fps: float = 25.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def camera(**fields: object) -> CameraSpec:
    spec: CameraSpec = TypeAdapter(CameraSpec).validate_python({"device_id": "cam1", **fields})
    return spec


def test_camera_type_selects_the_plugin(tmp_path: Path) -> None:
    assert isinstance(camera(type="images", path=str(tmp_path)), ImagesCamera)
    assert isinstance(camera(type="simulated"), SimulatedCamera)
    with pytest.raises(ValidationError, match="url"):
        camera(type="rtsp", url="ftp://camera.local/stream")
    with pytest.raises(ValidationError, match="does not match any of the expected tags|union_tag_invalid"):
        camera(type="thermal")


def test_image_folder_replays_in_name_order_with_media_time(tmp_path: Path) -> None:
    for name, level in (("b.jpg", 100), ("a.jpg", 50), ("c.jpg", 150), ("skip.png", 0)):
        cv2.imwrite(str(tmp_path / name), solid(level))
    spec = camera(type="images", path=str(tmp_path), fps=4, loop=False, realtime=False)
    source = open_camera(spec, threading.Event())
    got = []
    while (item := source.read()) is not None:
        frame, t = item
        got.append((int(frame.mean() + 0.5), t))
    source.close()
    assert [t for _, t in got] == [0.0, 0.25, 0.5]
    assert [level for level, _ in got] == pytest.approx([50, 100, 150], abs=2)


def test_image_folder_loops_when_asked(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.jpg"), solid(10))
    cv2.imwrite(str(tmp_path / "b.jpg"), solid(200))
    source = ImageFolderSource(camera(type="images", path=str(tmp_path), fps=10, realtime=False),  # type: ignore[arg-type]
                               threading.Event())
    times = [item[1] for item in (source.read() for _ in range(5)) if item is not None]
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_corrupt_image_is_a_bad_frame_and_the_folder_goes_on(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "1.jpg"), solid(60))
    (tmp_path / "2.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    cv2.imwrite(str(tmp_path / "3.jpg"), solid(120))
    source = open_camera(camera(type="images", path=str(tmp_path), loop=False, realtime=False), threading.Event())
    assert source.read() is not None
    with pytest.raises(BadFrame, match="2.jpg"):
        source.read()
    item = source.read()
    assert item is not None and abs(float(item[0].mean()) - 120) < 3
    assert source.read() is None


def test_empty_or_missing_folder_is_a_camera_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError) as err:
        open_camera(camera(type="images", path=str(tmp_path)), threading.Event())
    assert err.value.reason == "not_found"
    with pytest.raises(CameraError, match="not_found"):
        open_camera(camera(type="images", path=str(tmp_path / "nope")), threading.Event())


def test_video_file_replays_with_media_time_and_loops(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.avi", [solid(20 * i) for i in range(10)], fps=10)
    source = open_camera(camera(type="video", path=str(path), realtime=False), threading.Event())
    assert isinstance(source, CaptureSource)
    times = []
    while (item := source.read()) is not None:
        times.append(item[1])
        assert item[0].shape == (90, 160, 3)
    source.close()
    assert times == pytest.approx([i / 10 for i in range(10)])

    looping = open_camera(camera(type="video", path=str(path), realtime=False, loop=True), threading.Event())
    looped = [item[1] for item in (looping.read() for _ in range(25)) if item is not None]
    looping.close()
    assert looped == pytest.approx([i / 10 for i in range(25)])  # media time keeps growing across loops


def test_missing_or_garbage_video_is_a_camera_error(tmp_path: Path) -> None:
    with pytest.raises(CameraError) as err:
        open_camera(camera(type="video", path=str(tmp_path / "none.mp4")), threading.Event())
    assert err.value.reason == "not_found"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(CameraError) as err:
        open_camera(camera(type="video", path=str(garbage)), threading.Event())
    assert err.value.reason == "open_failed"


def test_unreachable_stream_is_a_camera_error() -> None:
    spec = camera(type="http", url="http://127.0.0.1:9/no-camera.mjpg")
    with pytest.raises(CameraError) as err:
        open_camera(spec, threading.Event())
    assert err.value.reason == "open_failed"


def test_check_frame_rejects_garbage_and_converts_grey() -> None:
    assert check_frame(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)
    for garbage in (None, b"jpeg", np.zeros((4, 4, 3), np.float32), np.zeros((1, 4, 3), np.uint8)):
        with pytest.raises(BadFrame):
            check_frame(garbage)


def test_encode_frame_fits_the_box_keeps_aspect_and_never_upscales() -> None:
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    jpeg, width, height = encode_frame(frame, 640, 640, 80)
    assert (width, height) == (640, 360)
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (360, 640, 3)
    assert encode_frame(frame[:100, :100], 640, 360, 80)[1:] == (100, 100)
    low = encode_frame(frame, 640, 360, 20)[0]
    assert len(low) < len(jpeg)


def test_simulated_camera_renders_moving_road_frames() -> None:
    spec = camera(type="simulated", width=320, height=180, fps=100, scenes=2, face_every=0, seed=3)
    source = SimulatedSource(spec, threading.Event())  # type: ignore[arg-type]
    first, second = source.read(), source.read()
    assert first is not None and second is not None
    assert first[0].shape == (180, 320, 3) and first[0].dtype == np.uint8
    assert second[1] >= first[1]
    assert not np.array_equal(first[0], second[0])
