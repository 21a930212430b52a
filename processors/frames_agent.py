"""Camera frames -> the events of the configured detectors (plate reads, face watchlist matches, alerts).

What is looked for is ``worker.detectors`` (:mod:`citystream.processors.detectors`: one plug-in per
``type``; plates and faces by default); the vision pool runs every detector on each frame and the
emitter sends their events in the detectors' order.

Vision is CPU-heavy, so it runs in a bounded pool of worker processes (one per core unless
configured), never on the event loop. The agent hands each frame to the pool
(``loop.run_in_executor``) and queues it; an emitter task awaits the queue's frames in arrival
order and sends their outputs, so every camera's outputs keep its order (a camera is one Kafka
key, hence one partition). The queue holds ``frame_batch`` frames (default 2 per vision process):
when it is full the agent stops reading (backpressure), so that many frames at most are in flight.
The agent waits on a full queue only while the emitter runs: an emitter failure (anything but a frame's
invalid output, e.g. a send error) is logged with its traceback and stops the agent at once.

Delivery: at least once. The stream does not acknowledge by itself (``noack``); a frame's offset
is acknowledged only after its outputs were handed to the producer, and Faust flushes the
producer before it commits offsets. After a crash the
uncommitted frames are read again and give the same ``event_id``s (``derived_event_id`` over the
frame's id, kind and index), which the sink de-duplicates. Bad frames (headers, empty, truncated,
oversized, corrupt — any libjpeg warning —, bytes after EOI, a size other than FrameMeta's; see
:mod:`citystream.processors.vision`) become DeadLetters with their original bytes; a crashed vision
process is replaced.

Privacy: plate text never leaves the worker: a PlateRead carries only the keyed pseudonym
(HMAC-SHA256 with the tenant's ``worker.pseudonym_keys`` entry) and a plate alert names the watchlist
entry, not the plate; the text is compared with the watchlist in memory only. Face templates stay in
the vision process and only watchlist hits come back (see :mod:`citystream.processors.faces.faces`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from citystream.processors.detectors import AnalysisMeta, Detector, FrameOutputs
from citystream.processors.detectors import default as default_detectors
from citystream.processors.vision import FrameRejected, decode
from citystream.schemas.events import FrameMeta

if TYPE_CHECKING:
    import faust

    from citystream.processors.app import WorkerContext
    from citystream.processors.watchlists.watchlists import WatchlistEntry, WatchlistIndex

log = logging.getLogger(__name__)
EMITTER_TASK = "frames-emitter"


class FrameResult:
    """What the vision process found on one frame: each detector's findings by its name, or why it was rejected.

    ``plates`` and ``faces`` read the built-in detectors' findings (for tools and tests); ``faces=`` builds a
    result with only a face count.
    """

    __slots__ = ("found", "rejected", "seconds")

    def __init__(self, found: dict[str, Any] | None = None, rejected: tuple[str, str] | None = None,
                 seconds: float = 0.0, *, faces: int | None = None) -> None:
        """A result; ``faces`` (a count) adds findings of the ``faces`` detector with no watchlist hit."""
        self.found: dict[str, Any] = dict(found or {})
        self.rejected = rejected
        self.seconds = seconds
        if faces is not None:
            from citystream.processors.faces.faces import FaceFindings

            self.found.setdefault("faces", FaceFindings(faces))

    def __repr__(self) -> str:
        return f"FrameResult(found={self.found!r}, rejected={self.rejected!r}, seconds={self.seconds!r})"

    @property
    def plates(self) -> list[tuple[str, str, float, tuple[int, int, int, int]]]:
        """The ``plates`` detector's reads as (registration, province, confidence, bbox)."""
        return [(p.registration, p.province, p.confidence, p.bbox) for p in self.found.get("plates", [])]

    @property
    def faces(self) -> int:
        """How many faces the ``faces`` detector saw (0 without one)."""
        findings = self.found.get("faces")
        return 0 if findings is None else int(findings.seen)


def exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this process (from a daemon thread) once ``parent`` is gone, e.g. after a ``kill -9`` of the worker.

    A spawn-mode pool's processes are not told when the worker dies without shutting the pool down;
    ``PR_SET_PDEATHSIG`` would fire when the *thread* that started them ends, so poll ``getppid``.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def warm_up(detectors: Sequence[Detector[Any]] | None = None) -> None:
    """Load the detectors' models once in a new vision process (single-threaded OpenCV: one process per core)."""
    import cv2

    exit_with_parent(os.getppid())
    cv2.setNumThreads(1)
    for detector in detectors if detectors is not None else default_detectors():
        try:
            detector.load()
        except Exception:  # a broken model shows up per frame as vision_error; the pool must still start
            log.exception("vision warm-up failed", extra={"detector": detector.name, "version": detector.version})


def analyse_frame(jpeg: bytes, max_pixels: int, templates: NDArray[np.float32], threshold: float,
                  upsample: int, expected: tuple[int, int] | None = None,
                  detectors: Sequence[Detector[Any]] | None = None, meta: FrameMeta | None = None) -> FrameResult:
    """Decode one frame (strictly, of the ``expected`` FrameMeta size) and run every detector on it.

    Runs in a vision process; see :mod:`citystream.processors.vision` for what is rejected before analysis.
    ``templates``, ``threshold`` and ``upsample`` are the tenant's face watchlist and its matching settings;
    ``detectors`` default to plates and faces.
    """
    started = time.perf_counter()
    try:
        bgr = decode(jpeg, max_pixels, expected)
    except FrameRejected as exc:
        return FrameResult(rejected=(exc.reason, exc.detail))
    context = AnalysisMeta(meta, templates, threshold, upsample)
    found: dict[str, Any] = {}
    for detector in detectors if detectors is not None else default_detectors():
        try:
            found[detector.name] = detector.analyse(bgr, context)
        except Exception as exc:  # a detector bug must not stop the stream: the frame goes to the DLQ
            log.exception("vision failed on a frame", extra={"detector": detector.name, "version": detector.version})
            return FrameResult(rejected=("vision_error", f"{detector.name}: {type(exc).__name__}: {exc}"[:1000]))
    return FrameResult(found, seconds=time.perf_counter() - started)


def pool_size(configured: int) -> int:
    """Vision processes: the configured number, else one per usable core."""
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class VisionPool:
    """A process pool that replaces itself when a vision process dies or hangs.

    A frame whose analysis does not return within ``timeout_s`` is rejected (``vision_timeout``: a dead
    letter with its bytes) and the pool is replaced, its processes killed: a hung process must not
    hold the frames agent (which emits in order) until the watchdog restarts the worker. Frames that
    were in flight on the killed pool are analysed again on the new one. ``detectors`` (default: plates
    and faces) are loaded when a vision process starts and run on every frame; they travel to the
    process with each frame (they hold settings only, their models stay in the process).
    """

    def __init__(self, processes: int, factory: Callable[[int], Executor] | None = None,
                 timeout_s: float = 60.0, detectors: Sequence[Detector[Any]] | None = None) -> None:
        self.processes = processes
        self.timeout_s = timeout_s
        self.detectors = list(detectors) if detectors is not None else default_detectors()
        self._factory = factory or self._spawn_pool
        self.executor = self._factory(processes)
        log.info("vision pool", extra={"processes": processes, "timeout_s": timeout_s,
                                       "detectors": [f"{d.name}@{d.version}" for d in self.detectors]})

    def _spawn_pool(self, processes: int) -> Executor:
        return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=warm_up,
                                   initargs=(self.detectors,))

    async def run(self, jpeg: bytes, max_pixels: int, templates: NDArray[np.float32], threshold: float,
                  upsample: int, expected: tuple[int, int] | None = None, meta: FrameMeta | None = None) -> FrameResult:
        """Analyse one frame in the pool; a crashed process gives ``vision_crashed``, a hung one ``vision_timeout``."""
        loop = asyncio.get_running_loop()
        for _attempt in range(2):
            executor = self.executor
            try:
                return await asyncio.wait_for(loop.run_in_executor(
                    executor, analyse_frame, jpeg, max_pixels, templates, threshold, upsample, expected,
                    self.detectors, meta), self.timeout_s)
            except TimeoutError:
                if executor is self.executor:
                    log.error("vision did not answer in time; replacing the pool",
                              extra={"timeout_s": self.timeout_s, "processes": self.processes})
                    self._replace(executor, kill=True)
                return FrameResult(rejected=("vision_timeout", f"no vision result within {self.timeout_s:g} s"))
            except BrokenProcessPool:
                if executor is not self.executor:
                    continue  # its pool was replaced (a hung neighbour): analyse again on the new one
                log.error("vision process died; starting a new pool", extra={"processes": self.processes})
                self._replace(executor, kill=False)
                return FrameResult(rejected=("vision_crashed", "vision process died while analysing this frame"))
        return FrameResult(rejected=("vision_crashed", "vision pool replaced twice while analysing this frame"))

    def _replace(self, executor: Executor, kill: bool) -> None:
        self.executor = self._factory(self.processes)
        if kill:  # ProcessPoolExecutor has no public way to stop a process that does not return
            processes = getattr(executor, "_processes", None) or {}
            for process in list(processes.values()):
                process.kill()
        # no cancel_futures: a cancelled future would cancel its awaiting task; on a killed pool they
        # fail with BrokenProcessPool instead and are analysed again on the new pool
        executor.shutdown(wait=False)

    def shutdown(self) -> None:
        """Stop the vision processes."""
        self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class Frame:
    """One frame taken from Kafka: its bytes, headers and metadata (None when headers are bad)."""

    topic: str
    key: bytes | None
    jpeg: bytes
    headers: dict[str, str]
    meta: FrameMeta | None
    error: str = ""
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def header_dict(headers: Any) -> dict[str, str]:
    """Kafka headers (list of pairs or mapping) as strings."""
    items = headers.items() if isinstance(headers, dict) else (headers or [])
    return {str(k): (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in items}


def to_frame(event: faust.types.EventT) -> Frame:
    """A Faust event of ``raw.frames`` as a Frame; bad headers leave ``meta`` None with the reason."""
    from pydantic import ValidationError

    from citystream.schemas.events import error_summary
    from citystream.schemas.wire import frame_meta_from_pairs

    headers = header_dict(event.headers)
    value = event.value if isinstance(event.value, bytes) else b""
    frame = Frame(topic=event.message.topic, key=event.key, jpeg=value, headers=headers, meta=None)
    try:
        frame.meta = frame_meta_from_pairs(headers)
    except ValidationError as exc:
        frame.error = error_summary(exc)
    return frame


Analysis = tuple[FrameResult, "list[WatchlistEntry]", "WatchlistIndex"]
Pending = tuple["faust.types.EventT", Frame, "asyncio.Future[Analysis]"]


def register(app: faust.App, ctx: WorkerContext) -> faust.types.AgentT:
    """Add the frames agent to the Faust app."""
    from citystream.schemas.topics import RAW_FRAMES

    settings = ctx.settings
    in_flight = settings.worker.frame_batch or 2 * ctx.pool.processes
    topic = app.topic(settings.kafka.topic(RAW_FRAMES), key_serializer="raw", value_serializer="raw")

    async def frames(stream: faust.StreamT) -> None:
        manual = stream.noack()
        pending: asyncio.Queue[Pending] = asyncio.Queue(in_flight)
        emitter = asyncio.create_task(emit_in_order(ctx, manual, pending), name=EMITTER_TASK)
        try:
            async for event in manual.events():
                frame = to_frame(event)
                await put_while_emitting(pending, (event, frame, asyncio.ensure_future(analyse(ctx, frame))), emitter)
        finally:
            emitter.cancel()
            await asyncio.gather(emitter, return_exceptions=True)

    return app.agent(topic, name="frames")(frames)


async def put_while_emitting(pending: asyncio.Queue[Pending], item: Pending, emitter: asyncio.Task[None]) -> None:
    """Queue ``item``, waiting while the queue is full (backpressure), but raise what stopped ``emitter`` at once.

    Only the emitter drains the queue: a plain ``put`` on a full queue would wait forever once it died.
    """
    put = asyncio.ensure_future(pending.put(item))
    try:
        await asyncio.wait((put, emitter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not put.done():
            put.cancel()
            item[-1].cancel()  # this frame's analysis: its event stays unacknowledged, read again after a restart
    if emitter.done():
        emitter.result()  # re-raise what stopped the emitter
        raise RuntimeError("the frames emitter ended")


async def analyse(ctx: WorkerContext, frame: Frame) -> Analysis:
    """One frame in the pool with its tenant's current face templates; returns (result, face entries, index)."""
    index = ctx.watch.index()
    if frame.meta is None:
        return FrameResult(rejected=("bad_frame_meta", frame.error)), [], index
    entries, templates = index.face_templates(frame.meta.tenant, datetime.now(UTC))
    w = ctx.settings.worker
    result = await ctx.pool.run(frame.jpeg, w.max_frame_pixels, templates, w.face_threshold, w.face_upsample,
                                (frame.meta.width, frame.meta.height), frame.meta)
    return result, entries, index


async def emit_in_order(ctx: WorkerContext, stream: faust.StreamT, pending: asyncio.Queue[Pending]) -> None:
    """Emit each frame's outputs in arrival order, then acknowledge its offset; a failure is logged, then raised."""
    try:
        while True:
            event, frame, work = await pending.get()
            result, entries, index = await work
            await emit_safely(ctx, frame, result, entries, index)
            await stream.ack(event)
    except Exception:
        log.exception("frames emitter failed; the frames agent stops (its unacknowledged frames are read again "
                      "after a restart)", extra={"in_flight": pending.qsize()})
        raise


async def emit_safely(ctx: WorkerContext, frame: Frame, result: FrameResult, entries: list[WatchlistEntry],
                      index: WatchlistIndex) -> None:
    """Emit one frame's outputs; an output that fails its contract sends the frame to the DLQ instead."""
    try:
        await emit_frame(ctx, frame, result, entries, index, datetime.now(UTC))
    except ValueError as exc:  # pydantic errors are ValueErrors
        log.exception("cannot build outputs for a frame")
        await ctx.dead_letter(frame.topic, frame.jpeg, "invalid_output", f"{type(exc).__name__}: {exc}"[:1000],
                              frame.headers, frame.meta.tenant if frame.meta else "")


async def emit_frame(ctx: WorkerContext, frame: Frame, result: FrameResult, entries: list[WatchlistEntry],
                     index: WatchlistIndex, now: datetime) -> None:
    """Send one frame's dead letter, or the events of every detector, in the detectors' order."""
    meta = frame.meta
    detectors = ctx.pool.detectors
    missing = [d.name for d in detectors if d.name not in result.found]
    if result.rejected is None and missing:  # cannot happen with one detector list; never drop a frame silently
        result = FrameResult(rejected=("vision_error", f"no findings from detector(s) {', '.join(missing)}"))
    if result.rejected is not None or meta is None:
        reason, detail = result.rejected or ("bad_frame_meta", frame.error)
        await ctx.dead_letter(frame.topic, frame.jpeg, reason, detail, frame.headers, meta.tenant if meta else "")
        ctx.metrics.frames.labels("rejected").inc()
        return
    ctx.metrics.frames.labels("ok").inc()
    ctx.metrics.vision_seconds.observe(result.seconds)
    out = FrameOutputs(ctx, frame, meta, index, entries, now)
    for detector in detectors:
        await detector.emit(out, result.found[detector.name])
