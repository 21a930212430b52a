"""Camera frames -> plate reads, face watchlist matches and their alerts.

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
the vision process and only watchlist hits come back (see :mod:`citystream.processors.faces`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citystream.processors.vision import FrameRejected, decode
from citystream.schemas.events import FrameMeta

log = logging.getLogger(__name__)
EMITTER_TASK = "frames-emitter"


@dataclass(frozen=True)
class FrameResult:
    """What the vision process found on one frame (no templates of unknown people)."""

    plates: list[tuple[str, str, float, tuple[int, int, int, int]]] = field(default_factory=list)
    faces: int = 0
    face_hits: list[tuple[int, float, tuple[int, int, int, int]]] = field(default_factory=list)
    rejected: tuple[str, str] | None = None
    seconds: float = 0.0


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


def warm_up() -> None:
    """Load the plate and face models once in a new vision process (single-threaded OpenCV: one process per core)."""
    import cv2

    exit_with_parent(os.getppid())

    from citystream.processors import faces, plates

    cv2.setNumThreads(1)
    try:
        faces.models()
        plates.read_plates(np.zeros((64, 64, 3), np.uint8))
    except Exception:  # a broken model shows up per frame as vision_error; the pool must still start
        log.exception("vision warm-up failed")


def _box(bbox: tuple[int, ...]) -> tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in bbox)
    return x, y, w, h


def analyse_frame(jpeg: bytes, max_pixels: int, templates: NDArray[np.float32], threshold: float,
                  upsample: int, expected: tuple[int, int] | None = None) -> FrameResult:
    """Decode one frame (strictly, of the ``expected`` FrameMeta size) and read its plates and watchlisted faces.

    Runs in a vision process; see :mod:`citystream.processors.vision` for what is rejected before analysis.
    """
    import time

    from citystream.processors.faces import analyse_faces
    from citystream.processors.plates import read_plates

    started = time.perf_counter()
    try:
        bgr = decode(jpeg, max_pixels, expected)
    except FrameRejected as exc:
        return FrameResult(rejected=(exc.reason, exc.detail))
    try:
        plates = [(p.registration, p.province, float(p.confidence), _box(p.bbox)) for p in read_plates(bgr)]
        count, hits = analyse_faces(bgr, templates, threshold, upsample)
    except Exception as exc:  # a reader bug must not stop the stream: the frame goes to the DLQ
        log.exception("vision failed on a frame")
        return FrameResult(rejected=("vision_error", f"{type(exc).__name__}: {exc}"[:1000]))
    return FrameResult(plates=plates, faces=count,
                       face_hits=[(h.index, h.distance, h.bbox) for h in hits],
                       seconds=time.perf_counter() - started)


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
    were in flight on the killed pool are analysed again on the new one.
    """

    def __init__(self, processes: int, factory: Callable[[int], Executor] | None = None,
                 timeout_s: float = 60.0) -> None:
        self.processes = processes
        self.timeout_s = timeout_s
        self._factory = factory or self._spawn_pool
        self.executor = self._factory(processes)

    @staticmethod
    def _spawn_pool(processes: int) -> Executor:
        return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=warm_up)

    async def run(self, jpeg: bytes, max_pixels: int, templates: NDArray[np.float32], threshold: float,
                  upsample: int, expected: tuple[int, int] | None = None) -> FrameResult:
        """Analyse one frame in the pool; a crashed process gives ``vision_crashed``, a hung one ``vision_timeout``."""
        loop = asyncio.get_running_loop()
        for _attempt in range(2):
            executor = self.executor
            try:
                return await asyncio.wait_for(loop.run_in_executor(
                    executor, analyse_frame, jpeg, max_pixels, templates, threshold, upsample, expected),
                    self.timeout_s)
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


def to_frame(event: Any) -> Frame:
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


def register(app: Any, ctx: Any) -> Any:
    """Add the frames agent to the Faust app; ``ctx`` is the app's WorkerContext."""
    from citystream.schemas.topics import RAW_FRAMES

    settings = ctx.settings
    in_flight = settings.worker.frame_batch or 2 * ctx.pool.processes
    topic = app.topic(settings.kafka.topic(RAW_FRAMES), key_serializer="raw", value_serializer="raw")

    async def frames(stream: Any) -> None:
        manual = stream.noack()
        pending: asyncio.Queue[tuple[Any, Frame, asyncio.Future[tuple[FrameResult, list[Any], Any]]]] = (
            asyncio.Queue(in_flight))
        emitter = asyncio.create_task(emit_in_order(ctx, manual, pending), name=EMITTER_TASK)
        try:
            async for event in manual.events():
                frame = to_frame(event)
                await put_while_emitting(pending, (event, frame, asyncio.ensure_future(analyse(ctx, frame))), emitter)
        finally:
            emitter.cancel()
            await asyncio.gather(emitter, return_exceptions=True)

    return app.agent(topic, name="frames")(frames)


async def put_while_emitting(pending: asyncio.Queue[Any], item: Any, emitter: asyncio.Task[None]) -> None:
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


async def analyse(ctx: Any, frame: Frame) -> tuple[FrameResult, list[Any], Any]:
    """One frame in the pool with its tenant's current face templates; returns (result, face entries, index)."""
    index = ctx.watch.index()
    if frame.meta is None:
        return FrameResult(rejected=("bad_frame_meta", frame.error)), [], index
    entries, templates = index.face_templates(frame.meta.tenant, datetime.now(UTC))
    w = ctx.settings.worker
    result = await ctx.pool.run(frame.jpeg, w.max_frame_pixels, templates, w.face_threshold, w.face_upsample,
                                (frame.meta.width, frame.meta.height))
    return result, entries, index


async def emit_in_order(ctx: Any, stream: Any, pending: asyncio.Queue[Any]) -> None:
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


async def emit_safely(ctx: Any, frame: Frame, result: FrameResult, entries: list[Any], index: Any) -> None:
    """Emit one frame's outputs; an output that fails its contract sends the frame to the DLQ instead."""
    try:
        await emit_frame(ctx, frame, result, entries, index, datetime.now(UTC))
    except ValueError as exc:  # pydantic errors are ValueErrors
        log.exception("cannot build outputs for a frame")
        await ctx.dead_letter(frame.topic, frame.jpeg, "invalid_output", f"{type(exc).__name__}: {exc}"[:1000],
                              frame.headers, frame.meta.tenant if frame.meta else "")


async def emit_frame(ctx: Any, frame: Frame, result: FrameResult, entries: list[Any], index: Any,
                     now: datetime) -> None:
    """Send one frame's dead letter, or its plate reads, face matches and alerts."""
    from citystream.processors.alerts import face_alert, plate_alert
    from citystream.processors.plates import pseudonym
    from citystream.schemas.events import FaceMatch, PlateRead, derived_event_id

    meta = frame.meta
    if result.rejected is not None or meta is None:
        reason, detail = result.rejected or ("bad_frame_meta", frame.error)
        await ctx.dead_letter(frame.topic, frame.jpeg, reason, detail, frame.headers, meta.tenant if meta else "")
        ctx.metrics.frames.labels("rejected").inc()
        return
    ctx.metrics.frames.labels("ok").inc()
    ctx.metrics.vision_seconds.observe(result.seconds)
    ctx.metrics.count_faces(meta.device_id, result.faces)
    base = meta.model_dump(include={"tenant", "gateway_id", "device_id", "seq", "captured_at", "district"})
    key: bytes | None = ctx.pseudonym_key(meta.tenant) if result.plates else None
    if result.plates and key is None:
        await ctx.dead_letter(frame.topic, frame.jpeg, "no_pseudonym_key",
                              f"no worker.pseudonym_keys entry for tenant {meta.tenant!r}", frame.headers, meta.tenant)
    for i, (registration, province, confidence, bbox) in enumerate(result.plates if key is not None else []):
        assert key is not None
        entry = index.match_plate(meta.tenant, registration, province, now)
        read = PlateRead(event_id=derived_event_id(meta.event_id, "plate", i), source_event_id=meta.event_id,
                         plate_pseudonym=pseudonym(registration, province, key),
                         confidence=min(1.0, max(0.0, confidence)), bbox=bbox,
                         watchlist_hit=entry is not None, **base)
        await ctx.send("plate_reads", read)
        ctx.metrics.plates.labels("hit" if entry else "miss").inc()
        if entry is not None and ctx.cooldown.allow(meta.tenant, meta.device_id, entry.entry_id, meta.captured_at):
            await ctx.send("alerts", plate_alert(read, entry))
    for i, (j, distance, bbox) in enumerate(result.face_hits):
        entry = entries[j]
        match = FaceMatch(event_id=derived_event_id(meta.event_id, "face", i), source_event_id=meta.event_id,
                          watchlist_entry_id=entry.entry_id, distance=round(distance, 4), bbox=bbox, **base)
        await ctx.send("face_matches", match)
        ctx.metrics.face_matches.inc()
        if ctx.cooldown.allow(meta.tenant, meta.device_id, entry.entry_id, meta.captured_at):
            await ctx.send("alerts", face_alert(match, entry, ctx.settings.worker.face_threshold))
