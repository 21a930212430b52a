"""Camera plugins (chosen by ``type``) and the frame encoder.

Every source implements :class:`CameraSource`: ``read()`` returns ``(BGR frame, t)`` where ``t`` is
seconds on the source's own clock (media time for files and folders, monotonic time for live and
simulated cameras), ``None`` at the end of a finite source, raises :class:`BadFrame` for one
unusable frame (skipped) and :class:`CameraError` when the source must be reopened (the gateway
reopens it with backoff). File-like sources pace themselves to ``fps`` unless ``realtime`` is off.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.ingest.gateway import scenes
from citystream.settings.gateway import (
    CameraSpec,
    ImagesCamera,
    SimulatedCamera,
    UrlCamera,
    UsbCamera,
    VideoCamera,
)

Image = NDArray[np.uint8]
Capture = tuple[Image, float]  # a camera image and its capture time (epoch seconds)


class CameraError(Exception):
    """The source failed (unreachable, closed, broken); ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class BadFrame(Exception):
    """One frame is unusable (garbage, wrong shape); the source stays open."""


class CameraSource(Protocol):
    """What the gateway needs from a camera plugin."""

    def read(self) -> Capture | None:
        """The next frame and its time, or None at the end of a finite source."""
        ...

    def close(self) -> None:
        """Release the device or stream."""
        ...


def check_frame(frame: object) -> Image:
    """The frame as a BGR uint8 image; BadFrame if it is not one."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3) \
            or frame.shape[0] < 2 or frame.shape[1] < 2:
        raise BadFrame(f"not an image: {type(frame).__name__} {getattr(frame, 'shape', '')}")
    if frame.ndim == 2:
        return np.asarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    return frame


class Pacer:
    """Sleeps so that a file-like source is read at ``fps`` frames per second of wall time."""

    def __init__(self, fps: float, enabled: bool, stop: threading.Event) -> None:
        self.period = 1.0 / fps
        self.enabled = enabled
        self.stop = stop
        self._next = time.monotonic()

    def wait(self) -> None:
        """Block until the next frame is due."""
        if not self.enabled:
            return
        delay = self._next - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)
        self._next = max(self._next + self.period, time.monotonic() - self.period)


class CaptureSource:
    """OpenCV ``VideoCapture`` on a file, a device index or an RTSP/HTTP URL."""

    def __init__(self, spec: VideoCamera | UsbCamera | UrlCamera, stop: threading.Event) -> None:
        self.spec = spec
        self.live = not isinstance(spec, VideoCamera)
        target: str | int = spec.index if isinstance(spec, UsbCamera) else (
            spec.url if isinstance(spec, UrlCamera) else str(spec.path))
        if isinstance(spec, VideoCamera) and not spec.path.is_file():
            raise CameraError("not_found", f"no video file {spec.path}")
        self.cap = cv2.VideoCapture(target)
        if not self.cap.isOpened():
            raise CameraError("open_failed", f"cannot open {target!r}")
        realtime = isinstance(spec, VideoCamera) and spec.realtime
        self.pacer = Pacer(spec.fps if not self.live else 1000.0, realtime, stop)
        self._offset = 0.0
        self._last_t = 0.0

    def read(self) -> Capture | None:
        """Next frame; files loop or end, live sources raise CameraError when the stream breaks."""
        self.pacer.wait()
        ok, frame = self.cap.read()
        if not ok:
            if self.live:
                raise CameraError("read_failed", "no frame from the stream")
            if isinstance(self.spec, VideoCamera) and self.spec.loop:
                self._offset = self._last_t + 1.0 / max(self.cap.get(cv2.CAP_PROP_FPS) or 25.0, 1.0)
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self.cap.read()
            if not ok:
                return None
        if self.live:
            return check_frame(frame), time.monotonic()
        self._last_t = self._offset + float(self.cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
        return check_frame(frame), self._last_t

    def close(self) -> None:
        """Release the capture."""
        self.cap.release()


class ImageFolderSource:
    """Images of a folder in name order; frame ``i`` is at media time ``i / fps``."""

    def __init__(self, spec: ImagesCamera, stop: threading.Event) -> None:
        self.files = sorted(spec.path.glob(spec.pattern)) if spec.path.is_dir() else []
        if not self.files:
            raise CameraError("not_found", f"no {spec.pattern} images in {spec.path}")
        self.spec = spec
        self.index = 0
        self.pacer = Pacer(spec.fps, spec.realtime, stop)

    def read(self) -> Capture | None:
        """Next image; BadFrame for a file OpenCV cannot decode."""
        if self.index >= len(self.files):
            if not self.spec.loop:
                return None
        self.pacer.wait()
        path = self.files[self.index % len(self.files)]
        t = self.index / self.spec.fps
        self.index += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise BadFrame(f"cannot decode {path.name}")
        return check_frame(image), t

    def close(self) -> None:
        """Nothing to release."""


class SimulatedSource:
    """Road scenes with Thai plates (and sometimes a face) drifting across the view, at ``fps``."""

    def __init__(self, spec: SimulatedCamera, stop: threading.Event) -> None:
        self.scenes = scenes.scene_set(spec.seed or random.Random(spec.device_id).randint(0, 2**31),
                                       spec.scenes, spec.width, spec.height, spec.face_every)
        self.pacer = Pacer(spec.fps, True, stop)
        self.index = 0

    def read(self) -> Capture | None:
        """The next animated frame."""
        self.pacer.wait()
        frame = scenes.animate(self.scenes, self.index)
        self.index += 1
        return frame, time.monotonic()

    def close(self) -> None:
        """Nothing to release."""


def open_camera(spec: CameraSpec, stop: threading.Event) -> CameraSource:
    """Open the plugin for ``spec``; CameraError when the source cannot be opened."""
    if isinstance(spec, SimulatedCamera):
        return SimulatedSource(spec, stop)
    if isinstance(spec, ImagesCamera):
        return ImageFolderSource(spec, stop)
    return CaptureSource(spec, stop)


def encode_frame(frame: Image, width: int, height: int, quality: int) -> tuple[bytes, int, int]:
    """Downscale to fit ``width`` x ``height`` (keeping the aspect) and JPEG-encode; returns bytes, w, h."""
    h, w = frame.shape[:2]
    scale = min(width / w, height / h, 1.0)
    if scale < 1.0:
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BadFrame("JPEG encoding failed")
    return bytes(buf), w, h
