"""Detector plug-ins: settings by ``type``, the built-in plates and faces, and a third detector end to end."""

from __future__ import annotations

import asyncio
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from citystream.processors import detectors
from citystream.processors.app import create_app
from citystream.processors.detectors import AnalysisMeta, FrameOutputs, no_templates
from citystream.processors.faces.faces import FacesDetector
from citystream.processors.frames_agent import VisionPool, analyse_frame
from citystream.processors.plates.plates import PlatesDetector, pseudonym
from citystream.processors.plates.synth import road_scene_with_plate
from citystream.schemas.events import derived_event_id
from citystream.settings import Settings, dump_settings, load_settings
from tests.conftest import citystream
from tests.processors.worker_helpers import (
    PLATE_SEED,
    T0,
    TENANT,
    FakeTopic,
    frame_headers,
    jpeg,
    put_all,
    sent,
    unit_context,
)

GREY = 200
_LOADED: list[int] = []  # pids of the processes where BrightnessDetector.load ran


class Brightness(BaseModel):
    """The toy detector's event contract."""

    kind: str = "brightness"
    event_id: str
    device_id: str
    seq: int
    mean: float
    pid: int
    loaded: bool
    version: str


class BrightnessDetector:
    """A third detector, defined outside the package: mean brightness of a frame, one event per frame."""

    name = "brightness"
    version = "toy-1"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.outputs = {"brightness": "toy.brightness"}

    def load(self) -> None:
        _LOADED.append(os.getpid())

    def analyse(self, image: NDArray[np.uint8], meta: AnalysisMeta) -> tuple[float, int, bool, int]:
        if self.fail:
            raise RuntimeError("toy failure")
        seq = meta.frame.seq if meta.frame is not None else -1
        return float(image.mean()), os.getpid(), os.getpid() in _LOADED, seq

    async def emit(self, out: FrameOutputs, found: tuple[float, int, bool, int]) -> None:
        mean, pid, loaded, seq = found
        assert seq == out.meta.seq, "the vision process saw this frame's FrameMeta"
        await out.send("brightness", Brightness(event_id=derived_event_id(out.meta.event_id, "brightness", 0),
                                                device_id=out.meta.device_id, seq=out.meta.seq, mean=mean, pid=pid,
                                                loaded=loaded, version=self.version))


def grey_frame() -> bytes:
    return jpeg(np.full((720, 1280, 3), GREY, np.uint8))


@pytest.mark.unit
def test_the_default_detectors_are_plates_then_faces() -> None:
    settings = Settings()
    assert [d.type for d in settings.worker.detectors] == ["plates", "faces"]
    built = detectors.build(settings.worker.detectors)
    assert [type(d) for d in built] == [PlatesDetector, FacesDetector]
    assert [(d.name, d.version) for d in built] == [("plates", "1"), ("faces", "1")]
    assert detectors.outputs(built) == {"plate_reads": "plate.reads", "face_matches": "face.matches"}
    pool = VisionPool(1, lambda n: ThreadPoolExecutor(n))
    pool.shutdown()
    assert [d.name for d in pool.detectors] == ["plates", "faces"]


@pytest.mark.unit
def test_detectors_are_chosen_by_type_in_the_settings_order_and_survive_a_yaml_round_trip(tmp_path: Path) -> None:
    settings = Settings(worker={"detectors": [{"type": "faces"}, {"type": "plates"}]})
    assert [d.name for d in detectors.build(settings.worker.detectors)] == ["faces", "plates"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(dump_settings(settings)))
    assert load_settings(path).worker.detectors == settings.worker.detectors
    assert Settings(worker={"detectors": []}).worker.detectors == []


@pytest.mark.unit
@pytest.mark.parametrize(("detectors_yaml", "expected"), [
    ("[{type: vehicles}]", "worker.detectors.0: Input tag 'vehicles'"),
    ("[{threshold: 0.5}]", "worker.detectors.0: Unable to extract tag"),
    ("[{type: plates}, {type: faces, upsample: 1}]", "worker.detectors.1.faces.upsample"),
    ("[{type: faces}, {type: faces}]", "worker.detectors: Value error, each detector type may appear once"),
])
def test_a_bad_detector_entry_exits_2_with_the_field_path(tmp_path: Path, detectors_yaml: str, expected: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"worker:\n  detectors: {detectors_yaml}\n")
    res = citystream("worker", config=cfg, check=False)
    assert res.returncode == 2, res.stderr
    assert expected in res.stderr


@pytest.mark.unit
def test_the_worker_sends_to_the_topics_of_its_configured_detectors_only(tmp_path: Path) -> None:
    settings = Settings(kafka={"topic_prefix": "unit."}, stack={"home": str(tmp_path)},
                        worker={"detectors": [{"type": "faces"}]})
    ctx = create_app(settings, CollectorRegistry())
    try:
        assert [d.name for d in ctx.pool.detectors] == ["faces"]
        assert set(ctx.topics) == {"face_matches", "alerts", "dlq"}
    finally:
        ctx.pool.shutdown()


@pytest.mark.unit
def test_a_detector_that_fails_sends_the_frame_to_the_dlq_with_its_name() -> None:
    body = grey_frame()
    result = analyse_frame(body, 10**8, no_templates(), 0.6, 0, (1280, 720), [BrightnessDetector(fail=True)])
    assert result.rejected == ("vision_error", "brightness: RuntimeError: toy failure")
    result = analyse_frame(body, 10**8, no_templates(), 0.6, 0, (1280, 720))
    assert result.rejected is None and list(result.found) == ["plates", "faces"]
    assert result.plates == [] and result.faces == 0


@pytest.mark.unit
def test_a_third_detector_runs_in_the_vision_pool_and_its_events_follow_the_built_ins(tmp_path: Path) -> None:
    pool = VisionPool(1, detectors=[PlatesDetector(), BrightnessDetector()])  # spawned vision processes
    try:
        ctx = unit_context(tmp_path, pool=pool)
        assert {"plate_reads", "brightness", "alerts", "dlq"} == set(ctx.topics)
        shared = FakeTopic()  # one list for both outputs shows the order of one frame's events
        ctx.topics["plate_reads"] = ctx.topics["brightness"] = shared
        scene, label = road_scene_with_plate(random.Random(PLATE_SEED))
        plate, grey = jpeg(scene), grey_frame()
        asyncio.run(pool.run(grey, 10**8, no_templates(), 0.6, 0))  # start the process, load its models
        items = [(b"cam-1", plate, frame_headers(TENANT, "cam-1", 1, plate, T0)),
                 (b"cam-1", grey, frame_headers(TENANT, "cam-1", 2, grey, T0))]
        asyncio.run(put_all(ctx, "frames", items, lambda: len(shared.sent) == 3))
    finally:
        pool.shutdown()
    events = sent(ctx, "plate_reads")
    assert [(e["kind"], e["seq"]) for e in events] == [("plate_read", 1), ("brightness", 1), ("brightness", 2)]
    assert events[0]["plate_pseudonym"] == pseudonym(label.registration, label.province, b"k")
    toy: list[dict[str, Any]] = events[1:]
    assert all(e["pid"] != os.getpid() and e["loaded"] and e["version"] == "toy-1" for e in toy), toy
    assert abs(toy[1]["mean"] - GREY) < 2 and toy[0]["mean"] != toy[1]["mean"]
    assert sent(ctx, "dlq") == []

