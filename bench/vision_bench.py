"""Vision benchmarks: JPEG decode ceiling vs the plate and face pipelines, plate accuracy, worker scaling.

Frames are the traffic simulator's 1280x720 road scenes (Thai plates, every second one with a face),
JPEG-encoded at the gateway's default quality. Per-core figures run in a fresh process with OpenCV
and OpenMP limited to one thread, as frames per CPU-second (wall-clock frames/s are reported beside).
Worker scaling runs ``citystream worker`` processes (one vision process each)
on frames produced to Kafka and reads their ``citystream_worker_frames_total`` from ``/metrics``.

Plate accuracy is measured on the evaluation-only renderer (``plate_scenes_eval``: fonts, plate styles
and cameras the reader was not trained on), not on the simulator's scenes the classifiers learnt from.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from confluent_kafka import Producer

from citystream.bench import messages
from citystream.bench.common import Entry, Procs, entry, isolated, tag, wait_until
from citystream.schemas.topics import RAW_FRAMES
from citystream.settings import Settings
from citystream.stack.kafka import ensure_topics
from citystream.stack.procs import free_port

WIDTH, HEIGHT, QUALITY = 1280, 720, 80


def simulator_jpegs(count: int, seed: int) -> list[bytes]:
    """``count`` simulator road scenes (720p) as JPEG bytes."""
    from citystream.ingest.gateway.scenes import scene_set

    out = []
    for frame in scene_set(seed, count, WIDTH, HEIGHT, face_every=2):
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        if not ok:
            raise RuntimeError("cv2 could not encode a simulator frame")
        out.append(bytes(buf))
    return out


@contextmanager
def one_thread() -> Iterator[None]:
    """OpenCV on one thread, so frames/s are per core."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _fps(jpegs: list[bytes], work: Callable[[Any], Any], min_seconds: float = 0.0) -> tuple[float, float]:
    """(frames per CPU-second of this process = per core, frames per wall-clock second) of decode + work."""
    decoded = 0
    started, cpu = time.perf_counter(), time.process_time()
    while True:
        for data in jpegs:
            work(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
            decoded += 1
        if time.perf_counter() - started >= min_seconds:
            return decoded / (time.process_time() - cpu), decoded / (time.perf_counter() - started)


def vision_in_child(count: int, accuracy_n: int) -> dict[str, Entry]:
    """:func:`vision_stages` in a fresh spawned process with one OpenMP thread (Tesseract), so its CPU
    time is the vision work alone and frames per CPU-second are frames/s per core."""
    before = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = "1"
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            result: dict[str, Entry] = pool.submit(vision_stages, count, accuracy_n).result(timeout=900)
    finally:
        if before is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
        else:
            os.environ["OMP_THREAD_LIMIT"] = before
    return result


def vision_stages(count: int, accuracy_n: int) -> dict[str, Entry]:
    """Decode ceiling, plates and faces frames/s per core, and plate accuracy on a fresh labelled set."""
    from citystream.ingest.gateway.scenes import packaged_face
    from citystream.processors.faces.faces import analyse_faces, single_template
    from citystream.processors.plates import evaluate as plate_eval
    from citystream.processors.plates.plates import read_plates

    jpegs = simulator_jpegs(count, seed=random.randrange(1 << 30))
    out: dict[str, Entry] = {}
    with one_thread():
        decode, decode_wall = _fps(jpegs, lambda img: None, min_seconds=1.0)
        out["ceiling:jpeg_decode"] = entry(decode, "frames/s/core", None, wall_fps=round(decode_wall, 2),
                                           frames=len(jpegs), resolution=f"{WIDTH}x{HEIGHT}", jpeg_kib=round(
                                               sum(map(len, jpegs)) / len(jpegs) / 1024, 1))
        read_plates(cv2.imdecode(np.frombuffer(jpegs[0], np.uint8), cv2.IMREAD_COLOR))  # load the models
        plates_found = [0]
        plates, plates_wall = _fps(jpegs, lambda img: plates_found.__setitem__(0, plates_found[0] + len(
            read_plates(img))))
        out["plates_fps"] = entry(plates, "frames/s/core", decode, wall_fps=round(plates_wall, 2), frames=len(jpegs),
                                  plates_read=plates_found[0],
                                  resolution=f"{WIDTH}x{HEIGHT}", target=10.0)
        face = packaged_face()
        if face is None:
            raise RuntimeError("no packaged face image for the watchlist template")
        watch = np.array([single_template(face)], np.float32)
        seen = [0, 0]

        def faces_of(img: Any) -> None:
            n, hits = analyse_faces(img, watch, 0.6)
            seen[0] += n
            seen[1] += len(hits)

        faces, faces_wall = _fps(jpegs, faces_of)
        out["faces_fps"] = entry(faces, "frames/s/core", decode, wall_fps=round(faces_wall, 2), frames=len(jpegs),
                                 faces_seen=seen[0],
                                 watchlist_hits=seen[1], resolution=f"{WIDTH}x{HEIGHT}")
        seed = random.randrange(1 << 30)
        acc = plate_eval.evaluate(accuracy_n, seed, renderer="eval")  # held-out renderer, never trained on
    out["plate_accuracy"] = entry(acc["accuracy"], "fraction", 1.0, n=acc["n"], seed=seed, renderer=acc["renderer"],
                                  registration_accuracy=round(acc["registration_accuracy"], 4),
                                  province_accuracy=round(acc["province_accuracy"], 4),
                                  not_found_rate=round(acc["not_found_rate"], 4),
                                  false_positives=acc["false_positives"],
                                  top_char_confusions=acc["char_confusions"][:5])
    return out


def _frames_done(ports: list[int]) -> int:
    total = 0.0
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("citystream_worker_frames_total{"):
                total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _produce_frames(s: Settings, jpegs: list[bytes], count: int, seq_start: int) -> None:
    producer = Producer({**s.kafka.client_config(), "linger.ms": 5, "message.max.bytes": 8 * 1024 * 1024})
    for i in range(count):
        seq = seq_start + i
        device = f"cam-{seq % 24:02d}"
        data = jpegs[seq % len(jpegs)]
        headers = messages.frame_props("bench-gw", device, seq, len(data), WIDTH, HEIGHT)
        producer.produce(s.kafka.topic(RAW_FRAMES), data, device.encode(), headers=headers)
        producer.poll(0)
    if producer.flush(60) > 0:
        raise RuntimeError("frames not delivered to Kafka")


def _worker_run(config: Path, procs: Procs, jpegs: list[bytes], count: int, workers: int) -> dict[str, Any]:
    """Frames/s of ``workers`` worker processes on ``count`` frames waiting in a fresh topic."""
    name = tag()
    s = isolated(config, name, **{"worker.vision_processes": 1, "worker.pseudonym_keys": {"*": "bench-key"}})
    ensure_topics(s)
    _produce_frames(s, jpegs, count, 0)
    ports = [free_port() for _ in range(workers)]
    started = [procs.start(f"{name}-worker{i}", s.model_copy(update={"metrics": s.metrics.model_copy(
        update={"port": port})}), "worker") for i, port in enumerate(ports)]

    def check() -> None:
        for proc in started:
            procs.check(proc)

    first = wait_until(lambda: _frames_done(ports) > 0, 240, "first frame analysed", 0.1, check=check)
    first_done = _frames_done(ports)
    last = wait_until(lambda: _frames_done(ports) >= count, 600, "frames analysed", 0.1, check=check)
    if first_done >= count:
        raise RuntimeError("all frames were counted at once; raise worker_frames")
    codes = [procs.stop(p) for p in started]
    return {"fps": (count - first_done) / (last - first), "exit_codes": codes}


def worker_scaling(config: Path, procs: Procs, count: int) -> Entry:
    """Frames/s of 2 worker processes over 1 (one vision process each), frames already waiting in Kafka."""
    jpegs = simulator_jpegs(8, seed=1)
    one = _worker_run(config, procs, jpegs, count, 1)
    two = _worker_run(config, procs, jpegs, count, 2)
    return entry(two["fps"] / one["fps"], "x", 2.0, one_worker_fps=round(one["fps"], 2),
                 two_workers_fps=round(two["fps"], 2), frames=count, vision_processes_per_worker=1,
                 worker_exit_codes=one["exit_codes"] + two["exit_codes"], target=1.7,
                 measured="from the first analysed frame to the last, summed over workers' /metrics")
