"""``citystream plates read|eval|train``: Thai licence plates in image files, offline.

``read [--json] [--tenant T] IMAGE...`` prints one line per plate found. With ``--json`` each line is
a JSON object with keys ``image``, ``registration``, ``province``, ``confidence``, ``bbox``
(``[x, y, w, h]``), ``alternatives`` (the top-3 registrations, the read one first, each with its score)
and ``pseudonym`` (keyed HMAC-SHA256 with the tenant's
``worker.pseudonym_keys`` entry, or the ``*`` entry; ``null`` when neither is configured).
A file that is missing, not an image, corrupt or too large is reported on stderr (one line naming
the file and the reason); the other images are still read and the command exits 1 at the end.

``eval`` measures accuracy, not-found rate, character confusions and speed on freshly generated
synthetic road scenes from the evaluation-only renderer (``--renderer eval``, the default), the
simulator's renderer (``--renderer train``) or the wide training renderer (``--renderer wide``); ``train``
regenerates the shipped classifier files (see :mod:`citystream.processors.plates.train`).

While they work, ``read`` (a bar over the images), ``eval`` and ``train`` (elapsed time) show progress
on stderr when stderr is a terminal and ``--json`` is not given; output on stdout is unchanged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import cv2
import numpy as np
from numpy.typing import NDArray

from citystream.cli import config_option, settings_of
from citystream.processors.plates.plates import PlateReader, PlateResult, pseudonym, read_plates
from citystream.processors.vision import FrameRejected, decode

MAX_FILE_BYTES = 256 * 1024 * 1024


class ImageError(Exception):
    """An input file that cannot be read as an image; the message says why."""


def load_image(path: str, max_pixels: int) -> NDArray[np.uint8]:
    """Return the image at ``path`` as BGR uint8, or raise :class:`ImageError` with the reason."""
    try:
        file = Path(path)
        if file.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"file larger than {MAX_FILE_BYTES} bytes")
        data = file.read_bytes()
    except OSError as exc:
        raise ImageError(exc.strerror or type(exc).__name__) from exc
    if not data:
        raise ImageError("empty file")
    if data.startswith(b"\xff\xd8"):
        try:
            return decode(data, max_pixels, strict=False)  # people's photos may carry a trailer after EOI
        except FrameRejected as exc:
            raise ImageError(f"{exc.reason}: {exc.detail}") from exc
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"OpenCV could not decode it: {str(exc).strip()[:200]}") from exc
    if image is None or image.size == 0:
        raise ImageError("not a decodable image")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(f"{image.shape[1]}x{image.shape[0]} is more than {max_pixels} pixels")
    bgr: NDArray[np.uint8] = image
    return bgr


def format_result(image: str, result: PlateResult, as_json: bool, key: bytes | None) -> str:
    """Return the output line for one plate found in ``image``."""
    alias = pseudonym(result.registration, result.province, key) if key is not None else None
    if as_json:
        record = {"image": image, "registration": result.registration, "province": result.province,
                  "confidence": result.confidence, "bbox": list(result.bbox), "pseudonym": alias,
                  "alternatives": [[text, score] for text, score in result.alternatives]}
        return json.dumps(record, ensure_ascii=False)
    x, y, w, h = result.bbox
    return f"{image}\t{result.registration}\t{result.province}\t{result.confidence:.2f}\t{x},{y},{w},{h}"


@contextmanager
def progress(label: str, total: int | None = None, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr while the block runs, only on a terminal; yields the function that counts a step."""
    if not enabled or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               *([MofNCompleteColumn()] if total else []), TimeElapsedColumn()]
    # stdout lines go above the bar only when stdout is the same terminal; piped output stays on stdout
    with Progress(*columns, console=Console(stderr=True), transient=True,
                  redirect_stdout=sys.stdout.isatty()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def plates_read(images: tuple[str, ...], as_json: bool, key: bytes | None, max_pixels: int) -> int:
    """Read plates in each image, print one line per plate; return the exit code (1 if any file failed)."""
    with progress("reading plates", len(images), enabled=not as_json) as step:
        return _read_all(images, as_json, key, max_pixels, step)


def _read_all(images: tuple[str, ...], as_json: bool, key: bytes | None, max_pixels: int,
              step: Callable[[], None]) -> int:
    failed = 0
    for path in images:
        failed += not _read_one(path, as_json, key, max_pixels)
        step()
    return 1 if failed else 0


def _read_one(path: str, as_json: bool, key: bytes | None, max_pixels: int) -> bool:
    try:
        results = read_plates(load_image(path, max_pixels))
    except ImageError as exc:
        click.echo(f"citystream: {path}: cannot read image ({exc})", err=True)
        return False
    except Exception as exc:  # a reader bug on one image must not hide the others' results
        click.echo(f"citystream: {path}: plate reader failed ({type(exc).__name__}: {exc})", err=True)
        return False
    for result in results:
        click.echo(format_result(path, result, as_json, key))
    return True


@click.group()
def plates() -> None:
    """Thai licence plates: read image files, measure accuracy, retrain the classifiers."""


@plates.command("read")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plate per line.")
@click.option("--tenant", default="*", show_default=True,
              help="Tenant whose worker.pseudonym_keys entry keys the pseudonym ('*' entry as fallback).")
@config_option
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.pass_context
def read_command(ctx: click.Context, images: tuple[str, ...], as_json: bool, tenant: str,
                 config: str | None) -> None:
    """Read Thai licence plates (registration and province) in IMAGE files."""
    settings = settings_of(ctx)
    key = settings.worker.pseudonym_key(tenant)
    if key is None and as_json:
        click.echo(f"citystream: no worker.pseudonym_keys entry for tenant {tenant!r}; pseudonym is null", err=True)
    code = plates_read(images, as_json, key, settings.worker.max_frame_pixels)
    sys.stdout.flush()
    if code:
        raise SystemExit(code)


@plates.command("eval")
@click.option("--scenes", "-n", type=click.IntRange(1), default=300, show_default=True)
@click.option("--seed", type=int, default=20261126, show_default=True, help="Scene seed (keep it unseen in training).")
@click.option("--width", type=click.IntRange(64), default=1280, show_default=True)
@click.option("--height", type=click.IntRange(64), default=720, show_default=True)
@click.option("--renderer", type=click.Choice(["train", "wide", "eval"]), default="eval", show_default=True,
              help="Scene generator: 'eval' (held-out fonts, styles and cameras, never trained on), 'train' "
                   "(the simulator's) or 'wide' (the wide training renderer, for validation seeds).")
@click.option("--model-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Read with the .npz classifiers in this folder (e.g. a fresh `plates train --out-dir`; "
                   "*_wide.npz beside them join in an ensemble).")
def eval_command(scenes: int, seed: int, width: int, height: int, renderer: str, model_dir: Path | None) -> None:
    """Exact registration + province rate, not-found rate, character confusions and frames/s, as JSON."""
    from citystream.processors.plates.evaluate import evaluate

    reader = _reader_from(model_dir) if model_dir is not None else None
    with progress(f"reading {scenes} synthetic scenes ({renderer} renderer)"):
        figures = evaluate(scenes, seed, width, height, renderer, reader)
    click.echo(json.dumps(figures))


def _reader_from(model_dir: Path) -> PlateReader:
    """A reader with the character and province classifiers found in ``model_dir``."""
    from citystream.processors.plates.classify import CLASSES, MODEL_PATH, load_classifier
    from citystream.processors.plates.province import PROVINCE_MODEL_PATH
    from citystream.processors.plates.provinces import PROVINCES

    try:
        return PlateReader(load_classifier(model_dir / MODEL_PATH.name, tuple(CLASSES)),
                           load_classifier(model_dir / PROVINCE_MODEL_PATH.name, PROVINCES))
    except (OSError, KeyError, ValueError) as exc:
        raise click.BadParameter(f"cannot load the classifiers in {model_dir}: {exc}",
                                 param_hint="--model-dir") from exc


@plates.command("train")
@click.option("--scenes", type=click.IntRange(0), default=3000, show_default=True, help="Whole road scenes.")
@click.option("--patches", type=click.IntRange(0), default=16000, show_default=True, help="Plate-on-car patches.")
@click.option("--seed", type=int, default=7, show_default=True, help="Images use seeds seed*1000+0..19.")
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True)
@click.option("--hidden", type=click.IntRange(8), default=192, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the .npz files (default: the package's processors/plates/models).")
@click.option("--wide", is_flag=True, help="Three images in four from the wide training renderer (synth_wide).")
def train_command(scenes: int, patches: int, seed: int, epochs: int, hidden: int, workers: int,
                  out_dir: Path | None, wide: bool) -> None:
    """Regenerate the shipped classifiers (processors/plates/models/*.npz) from synthetic plates."""
    from citystream.processors.plates.classify import MODEL_PATH
    from citystream.processors.plates.train import train

    with progress("harvesting samples and training both classifiers"):
        paths = train(scenes, patches, seed, epochs, hidden, workers, out_dir or MODEL_PATH.parent, wide=wide)
    click.echo(f"wrote {paths[0]} and {paths[1]}")
