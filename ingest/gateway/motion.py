"""Motion gating: decide per frame whether it is worth publishing.

Frame differencing on a small, blurred grey copy of each frame: the motion score is the fraction of
pixels whose grey level changed by more than ``pixel_threshold`` since the previous frame. A frame is
published when the score reaches ``min_changed_fraction``; a static scene still sends a keyframe
every ``keyframe_interval_s`` (the first frame is always a keyframe). Time is the caller's clock
(media time for files, monotonic seconds for live cameras), so tests are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.settings.gateway import MotionSettings

Image = NDArray[np.uint8]


@dataclass(frozen=True)
class Decision:
    """Whether to publish a frame, its motion score and whether it is a keyframe."""

    publish: bool
    score: float
    keyframe: bool


class MotionGate:
    """Stateful per-camera gate."""

    def __init__(self, settings: MotionSettings) -> None:
        self.settings = settings
        self._previous: Image | None = None
        self._last_sent: float | None = None

    def _small_grey(self, frame: Image) -> Image:
        height, width = frame.shape[:2]
        target_w = min(self.settings.analysis_width, width)
        target_h = max(1, round(height * target_w / width))
        small = cv2.resize(frame, (target_w, target_h), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        blurred: Image = cv2.GaussianBlur(grey, (5, 5), 0)
        return blurred

    def score(self, frame: Image) -> float:
        """Fraction of pixels that changed since the previous frame (1.0 for the first one)."""
        grey = self._small_grey(frame)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return 1.0
        changed = cv2.absdiff(grey, previous) > self.settings.pixel_threshold
        return float(np.count_nonzero(changed)) / float(changed.size)

    def check(self, frame: Image, now: float) -> Decision:
        """Score the frame and decide; updates the gate's state."""
        score = self.score(frame)
        due = self._last_sent is None or now - self._last_sent >= self.settings.keyframe_interval_s
        moving = score >= self.settings.min_changed_fraction and self._last_sent is not None
        if not self.settings.enabled or moving or due:
            self._last_sent = now
            return Decision(True, score, keyframe=due and not (moving and self.settings.enabled))
        return Decision(False, score, keyframe=False)
