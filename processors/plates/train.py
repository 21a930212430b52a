"""Train the registration character and province word classifiers from synthetic plates.

Samples are harvested exactly as the reader sees them: a labelled image is rendered — a whole road
scene (:func:`synth.road_scene_with_plate`) or, ten times cheaper, a plate on a patch of car
body (:func:`synth.plate_patch`) — plates are detected and rectified, every candidate that
overlaps the true plate is segmented with each of the reader's binarisations, the province strip
becomes a word sample, and when one of the glyph cuts agrees with the label (count and group split)
each of its glyphs becomes a character sample. Two small MLPs are then fitted with minibatch Adam in numpy from a
fixed seed. The held-out accuracy printed holds out every 10th rendered image (not single samples).

Regenerate the shipped models (``processors/plates/models/plate_chars.npz`` and
``processors/plates/models/plate_provinces.npz``; deterministic for the same arguments and library
versions; ~15 minutes on 2 cores)::

    citystream plates train --scenes 3000 --patches 16000 --seed 7
    # or: python -m citystream.processors.plates.train --scenes 3000 --patches 16000 --seed 7

Image seeds are ``seed * 1000 + chunk`` (7000-7019 for the shipped models): evaluate on others.

``--wide`` draws three images in four from the wide renderer (:mod:`synth_wide`) and writes
``plate_chars_wide.npz`` / ``plate_provinces_wide.npz``, which the reader combines with the models above
(:func:`classify.load_classifier`). None is shipped yet; the candidate of 2026-12-08 (seeds 8000-8019,
~25 minutes on a busy 2-core machine; see ``docs/plates.md`` for why it was not kept)::

    citystream plates train --wide --scenes 300 --patches 5000 --epochs 20 --seed 8 --out-dir /path/to/candidate
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.processors.plates import detect as plate_detect
from citystream.processors.plates.classify import CLASSES, MODEL_PATH, Floats, Mlp, glyph_features, wide_sibling
from citystream.processors.plates.plates import SEGMENT_VARIANTS
from citystream.processors.plates.province import PROVINCE_MODEL_PATH, province_strip, word_features
from citystream.processors.plates.provinces import PROVINCES
from citystream.processors.plates.segment import segment
from citystream.processors.plates.synth import BgrImage, PlateLabel, plate_patch, road_scene_with_plate
from citystream.processors.plates.synth_wide import wide_patch, wide_scene

Labels = NDArray[np.int64]
CHUNKS = 20
QUADS_PER_IMAGE = 2
MIN_IOU = 0.5
TINY = 1e-30
PATCH_GLYPH_EVERY = 4  # glyphs are plentiful: take them from every 4th patch only (memory, training time)
WIDE_EVERY = 4  # with --wide, one image in four still comes from the simulator's renderer


@dataclass
class Samples:
    """Feature rows, class labels and the index of the image each row came from."""

    x: list[Floats] = field(default_factory=list)
    y: list[int] = field(default_factory=list)
    group: list[int] = field(default_factory=list)

    def add(self, features: Floats, label: int, group: int) -> None:
        """Append one sample."""
        self.x.append(features)
        self.y.append(label)
        self.group.append(group)

    def arrays(self) -> tuple[Floats, Labels, Labels]:
        """Return (features, labels, groups) as arrays."""
        width = len(self.x[0]) if self.x else 0
        return (np.array(self.x, np.float32).reshape(-1, width), np.array(self.y, np.int64),
                np.array(self.group, np.int64))


Harvest = tuple[tuple[Floats, Labels, Labels], tuple[Floats, Labels, Labels]]


def overlapping_quads(gray: NDArray[np.uint8], bbox: tuple[int, int, int, int]) -> list[plate_detect.Quad]:
    """Candidate quads overlapping the labelled plate box (IoU > ``MIN_IOU``), best first."""
    x, y, w, h = bbox
    truth = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)
    scored = [(plate_detect.box_iou(q, truth), i, q) for i, q in enumerate(plate_detect.find_candidates(gray))]
    scored = sorted((s for s in scored if s[0] > MIN_IOU), key=lambda s: (-s[0], s[1]))
    return [q for _, _, q in scored[:QUADS_PER_IMAGE]]


def _harvest_image(frame: BgrImage, label: PlateLabel, group: int, chars: Samples | None, words: Samples) -> None:
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    head, number = label.registration.split(" ")
    for quad in overlapping_quads(gray, label.bbox):
        plate = plate_detect.rectify(gray, quad)
        for block, offset in SEGMENT_VARIANTS:
            seg = segment(plate, block=block, offset=offset)
            if seg is None:
                continue
            words.add(word_features(province_strip(seg)[0]), PROVINCES.index(label.province), group)
            cut = next((g for g, split in seg.cuts if len(g) == len(head) + len(number) and split == len(head)), None)
            if chars is None or cut is None:
                continue
            for char, box in zip(head + number, cut, strict=True):
                chars.add(glyph_features(seg.ink, box, seg.line_top, seg.line_bottom), CLASSES.index(char), group)


def _wide_scene(rng: random.Random) -> tuple[BgrImage, PlateLabel]:
    frame, label = wide_scene(rng)
    return frame, label.plate


def _wide_patch(rng: random.Random) -> tuple[BgrImage, PlateLabel]:
    frame, label = wide_patch(rng)
    return frame, label.plate


def harvest(seed: int, scenes: int, patches: int = 0, wide: bool = False) -> Harvest:
    """Return ((glyph features, char labels, groups), (word features, province labels, groups)).

    ``wide``: of every ``WIDE_EVERY`` images, all but the first come from the wide renderer
    (:mod:`synth_wide`), the first from the simulator's (:mod:`synth`).
    """
    rng = random.Random(seed)
    chars, words = Samples(), Samples()
    Maker = Callable[[random.Random], tuple[BgrImage, PlateLabel]]

    def pick(index: int, plain: Maker, widened: Maker) -> Maker:
        return widened if wide and index % WIDE_EVERY else plain

    makers = [pick(i, road_scene_with_plate, _wide_scene) for i in range(scenes)]
    makers += [pick(i, plate_patch, _wide_patch) for i in range(patches)]
    for index, make in enumerate(makers):
        frame, label = make(rng)
        glyphs = chars if index < scenes or index % PATCH_GLYPH_EVERY == 0 else None
        _harvest_image(frame, label, seed * 100_000 + index, glyphs, words)
    return chars.arrays(), words.arrays()


def _spawn_pool(workers: int) -> ProcessPoolExecutor:
    """Fresh processes with single-threaded BLAS and OpenCV: on busy or small machines, BLAS threads
    spinning against each other made the tiny minibatch matrix products ~7x slower."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=cv2.setNumThreads, initargs=(1,))


def harvest_parallel(seed: int, scenes: int, patches: int, workers: int, wide: bool = False) -> Harvest:
    """Harvest in ``workers`` processes over ``CHUNKS`` chunks seeded ``seed * 1000 + i``; order is fixed."""

    def split(total: int) -> list[int]:
        return [total // CHUNKS + (i < total % CHUNKS) for i in range(CHUNKS)]

    seeds = [seed * 1000 + i for i in range(CHUNKS)]
    with _spawn_pool(workers) as pool:
        parts = list(pool.map(harvest, seeds, split(scenes), split(patches), [wide] * CHUNKS))

    def join(kind: int) -> tuple[Floats, Labels, Labels]:
        x, y, g = (np.concatenate([p[kind][i] for p in parts if len(p[kind][1])]) for i in range(3))
        return x, y, g

    return join(0), join(1)


def cached_harvest(cache: Path | None, seed: int, scenes: int, patches: int, workers: int,
                   wide: bool = False) -> Harvest:
    """:func:`harvest_parallel`, read from / written to ``cache`` (an .npz) when one is given."""
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            if tuple(data["args"].tolist()) == (seed, scenes, patches, int(wide)):
                return ((data["cx"], data["cy"], data["cg"]), (data["wx"], data["wy"], data["wg"]))
    chars, words = harvest_parallel(seed, scenes, patches, workers, wide)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, args=np.array([seed, scenes, patches, int(wide)]), cx=chars[0], cy=chars[1], cg=chars[2],
                 wx=words[0], wy=words[1], wg=words[2])
    return chars, words


def _adam_fit(x: Floats, y: Labels, classes: tuple[str, ...], hidden: int, epochs: int, seed: int) -> Mlp:
    """Fit the MLP with minibatch Adam and softmax cross-entropy; returns the model."""
    gen = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    scale = (1.0 / np.maximum(x.std(axis=0), 1e-3)).astype(np.float32)
    xs = ((x - mean) * scale).astype(np.float32)
    params = [gen.normal(0, np.sqrt(2 / xs.shape[1]), (xs.shape[1], hidden)).astype(np.float32),
              np.zeros(hidden, np.float32),
              gen.normal(0, np.sqrt(1 / hidden), (hidden, len(classes))).astype(np.float32),
              np.zeros(len(classes), np.float32)]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    step, lr, decay = 0, 2e-3, 1e-4
    for epoch in range(epochs):
        order = gen.permutation(len(xs))
        rate = lr * (0.5 if epoch >= epochs * 0.6 else 1.0) * (0.2 if epoch >= epochs * 0.85 else 1.0)
        for start in range(0, len(xs), 128):
            idx = order[start:start + 128]
            grads = _gradients(params, xs[idx], y[idx], decay)
            step += 1
            for p, g, (m, v) in zip(params, grads, moments, strict=True):
                m[:] = 0.9 * m + 0.1 * g
                v[:] = 0.999 * v + 0.001 * g * g
                m[np.abs(m) < TINY] = 0.0  # decaying moments of idle weights turn subnormal: 100x slower maths
                v[v < TINY] = 0.0
                p -= rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return Mlp(classes, mean.astype(np.float32), scale, *params)


def _gradients(params: list[Floats], x: Floats, y: Labels, decay: float) -> list[Floats]:
    w1, b1, w2, b2 = params
    pre = x @ w1 + b1
    hidden = np.maximum(pre, 0.0)
    logits = hidden @ w2 + b2
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(len(y)), y] -= 1.0
    probs /= len(y)
    d_hidden = (probs @ w2.T) * (pre > 0)
    return [x.T @ d_hidden + decay * w1, d_hidden.sum(axis=0), hidden.T @ probs + decay * w2, probs.sum(axis=0)]


def accuracy_of(model: Mlp, x: Floats, y: Labels) -> float:
    """Fraction of samples whose top class (over all classes) is the label."""
    return float((model.log_probs(x).argmax(axis=1) == y).mean()) if len(y) else 0.0


def fit_and_report(name: str, data: tuple[Floats, Labels, Labels], classes: tuple[str, ...], hidden: int,
                   epochs: int, seed: int) -> tuple[Mlp, str]:
    """Fit with every 10th image held out and report its accuracy, then fit on all samples."""
    x, y, group = data
    held = group % 10 == 0
    trial = _adam_fit(x[~held], y[~held], classes, hidden, epochs, seed)
    report = f"{name}: samples={len(y)} held-out accuracy={accuracy_of(trial, x[held], y[held]):.4f}"
    return _adam_fit(x, y, classes, hidden, epochs, seed), report


def _fit_and_save(name: str, data: tuple[Floats, Labels, Labels], classes: tuple[str, ...], hidden: int,
                  epochs: int, seed: int, path: Path) -> str:
    model, report = fit_and_report(name, data, classes, hidden, epochs, seed)
    model.save(path)
    return report


def train(scenes: int = 3000, patches: int = 16000, seed: int = 7, epochs: int = 30, hidden: int = 192,
          workers: int = 2, out_dir: Path = MODEL_PATH.parent, cache: Path | None = None,
          wide: bool = False) -> tuple[Path, Path]:
    """Harvest samples, train both classifiers (in parallel) and write their model files; returns the paths."""
    chars, words = cached_harvest(cache, seed, scenes, patches, workers, wide)
    print(f"harvested {len(chars[1])} glyphs and {len(words[1])} province words", flush=True)
    char_path, province_path = out_dir / MODEL_PATH.name, out_dir / PROVINCE_MODEL_PATH.name
    if wide:
        char_path, province_path = wide_sibling(char_path), wide_sibling(province_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _spawn_pool(min(2, workers)) as pool:
        jobs = [pool.submit(_fit_and_save, "characters", chars, tuple(CLASSES), hidden, epochs, seed, char_path),
                pool.submit(_fit_and_save, "provinces", words, PROVINCES, hidden, epochs, seed, province_path)]
        for job in jobs:
            print(job.result(), flush=True)
    return char_path, province_path


def main(argv: list[str] | None = None) -> None:
    """Command line: harvest, train and write ``processors/plates/models/*.npz``."""
    parser = argparse.ArgumentParser(description="Train the plate character and province classifiers.")
    parser.add_argument("--scenes", type=int, default=3000, help="whole road scenes to harvest")
    parser.add_argument("--patches", type=int, default=16000, help="plate-on-car patches to harvest")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=MODEL_PATH.parent)
    parser.add_argument("--cache", type=Path, default=None, help="keep harvested samples in this .npz")
    parser.add_argument("--wide", action="store_true", help="three images in four from the wide renderer")
    args = parser.parse_args(argv)
    paths = train(args.scenes, args.patches, args.seed, args.epochs, args.hidden, args.workers, args.out_dir,
                  args.cache, args.wide)
    print(f"wrote {paths[0]} and {paths[1]}")


if __name__ == "__main__":
    main()
