"""Detectors: what the vision processes look for in a frame, chosen by ``type`` in ``worker.detectors``.

A detector is a small class behind the :class:`Detector` protocol, in two halves:

- in a **vision process** (off the event loop, see :class:`~citystream.processors.frames_agent.VisionPool`):
  ``load()`` once when the process starts, then ``analyse(image, meta)`` per frame, returning its
  findings as a small picklable value. ``meta`` (:class:`AnalysisMeta`) is the frame's FrameMeta and the
  tenant's face watchlist templates; templates of people not on a watchlist never leave that process.
- in the **frames agent**: ``emit(out, found)`` turns the findings into events through
  :class:`FrameOutputs` (``send`` to the topics the detector names in ``outputs``, ``dead_letter``,
  ``alert`` with the per-camera cooldown).

Every configured detector analyses every decoded frame, in the order of ``worker.detectors``, and the
frame's events are sent in that order before its offset is acknowledged (the frames agent's delivery
guarantee covers them all). A detector that raises sends the whole frame to the DLQ (``vision_error``,
the detector's name in the detail); an event that fails its contract sends it there as
``invalid_output``. Derived events take ``derived_event_id(frame, kind, index)`` so a replay repeats ids,
which the sink de-duplicates. ``version`` names the detector's algorithm and models: bump it when the same
frame can give different findings. The two built in: ``plates``
(:class:`~citystream.processors.plates.plates.PlatesDetector`) and ``faces``
(:class:`~citystream.processors.faces.faces.FacesDetector`).

Adding a detector (say ``vehicles``):

1. **one module**, ``processors/vehicles.py``, with a class ``VehicleDetector(spec)`` implementing
   :class:`Detector` (``name = "vehicles"``; ``outputs = {"vehicle_sightings": VEHICLE_SIGHTINGS}``);
2. **a settings entry**: ``VehiclesDetectorSettings(DetectorBase)`` with ``type: Literal["vehicles"]``, its
   own parameters and ``implementation = "citystream.processors.vehicles:VehicleDetector"``, added to the
   ``DetectorSpec`` union in ``citystream/settings/worker.py``; operators list ``{type: vehicles}`` in
   ``worker.detectors``;
3. **its event contract and migration**: the event model and JSON Schema in ``schemas/``, its topic in
   ``schemas/topics.py`` (created by ``citystream topics apply``) and a ClickHouse migration for its
   table. The sink does not derive its routes from the contracts yet: today it also needs a ``Route``
   and Arrow columns in ``sinks/rows.py``, and, for its frames to be archived, ``sinks/frames.py``
   (``DETECTION_TOPICS``).

Nothing else changes in the worker: the vision pool, the frames agent and its output topics follow the
settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from citystream.schemas.events import Alert, FrameMeta
from citystream.settings.worker import DetectorBase, default_detectors

if TYPE_CHECKING:
    from citystream.processors.app import WorkerContext
    from citystream.processors.faces.faces import FaceFindings, FacesDetector
    from citystream.processors.frames_agent import Frame
    from citystream.processors.plates.plates import PlateResult, PlatesDetector
    from citystream.processors.watchlists.watchlists import WatchlistEntry, WatchlistIndex

Found = TypeVar("Found")
Templates = NDArray[np.float32]
BASE_FIELDS = frozenset({"tenant", "gateway_id", "device_id", "seq", "captured_at", "district"})


def no_templates() -> Templates:
    """An empty (0, 128) template array: no face watchlist."""
    return np.zeros((0, 128), np.float32)


@dataclass(frozen=True)
class AnalysisMeta:
    """What a detector gets besides the pixels: the frame's metadata (None offline) and its tenant's face watchlist."""

    frame: FrameMeta | None = None
    face_templates: Templates = field(default_factory=no_templates)
    face_threshold: float = 0.6
    face_upsample: int = 0


class Detector(Protocol[Found]):
    """One kind of analysis of a frame: ``analyse`` in a vision process, ``emit`` in the frames agent."""

    @property
    def name(self) -> str:
        """Unique among the configured detectors: the key of its findings in a FrameResult."""
        ...

    @property
    def version(self) -> str:
        """Its algorithm and models; changes when the same frame can give different findings."""
        ...

    @property
    def outputs(self) -> Mapping[str, str]:
        """The topics it sends to: the name ``FrameOutputs.send`` takes -> base topic name in ``schemas.topics``."""
        ...

    def load(self) -> None:
        """Load models once in a new vision process (later calls are cheap)."""
        ...

    def analyse(self, image: NDArray[np.uint8], meta: AnalysisMeta) -> Found:
        """Findings in one decoded BGR frame (small and picklable: they cross a process boundary)."""
        ...

    async def emit(self, out: FrameOutputs, found: Found) -> None:
        """Send the events (and alerts) derived from one frame's findings."""
        ...


@dataclass
class FrameOutputs:
    """A detector's way out for one analysed frame, in the frames agent: events, dead letters, watchlist alerts."""

    worker: WorkerContext
    frame: Frame
    meta: FrameMeta
    index: WatchlistIndex
    face_entries: list[WatchlistEntry]
    now: datetime

    def base(self) -> dict[str, Any]:
        """The FrameMeta fields every derived event copies (tenant, gateway, camera, seq, capture time, district)."""
        return self.meta.model_dump(include=set(BASE_FIELDS))

    async def send(self, name: str, event: BaseModel) -> None:
        """Send an event to one of the worker's output topics (buffered; flushed before offsets commit)."""
        await self.worker.send(name, event)

    async def dead_letter(self, reason: str, detail: str) -> None:
        """Send the frame's original bytes and headers to the DLQ with a reason."""
        frame = self.frame
        await self.worker.dead_letter(frame.topic, frame.jpeg, reason, detail, frame.headers, self.meta.tenant)

    async def alert(self, entry_id: str, alert: Alert) -> bool:
        """Send a watchlist alert unless the same entry alerted on this camera within the cooldown; True if sent."""
        if not self.worker.cooldown.allow(self.meta.tenant, self.meta.device_id, entry_id, self.meta.captured_at):
            return False
        await self.worker.send("alerts", alert)
        return True


def implementation(spec: DetectorBase) -> Callable[[DetectorBase], Detector[Any]]:
    """The class a detector settings entry names (``implementation = "module:Class"``), called with the entry."""
    module, _, name = spec.implementation.partition(":")
    cls: Callable[[DetectorBase], Detector[Any]] = getattr(importlib.import_module(module), name)
    return cls


def build(specs: Sequence[DetectorBase]) -> list[Detector[Any]]:
    """The detectors of ``worker.detectors``, in order (names must be unique)."""
    detectors = [implementation(spec)(spec) for spec in specs]
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        raise ValueError(f"detector names must be unique, got {names}")
    return detectors


def default() -> list[Detector[Any]]:
    """The detectors of the default settings: plates, then faces."""
    return build(default_detectors())


def outputs(detectors: Sequence[Detector[Any]]) -> dict[str, str]:
    """Every output topic of the detectors: send name -> base topic name."""
    found: dict[str, str] = {}
    for detector in detectors:
        found.update(detector.outputs)
    return found


if TYPE_CHECKING:  # mypy checks that the built-in detectors implement the protocol
    _PLATES: Detector[list[PlateResult]] = PlatesDetector()
    _FACES: Detector[FaceFindings] = FacesDetector()
