"""Evaluation-only renderer of labelled Thai plate scenes: other fonts, plate styles, scenes and cameras.

This module exists so that accuracy is measured on images the reader was never trained or tuned on.
It shares no drawing code with :mod:`synth` (the training renderer) and must never feed
training or the choice of any threshold: only ``citystream plates eval --renderer eval`` and the
bench key ``plate_accuracy`` use it.

* Fonts are held out: Noto Sans / Serif / Looped Thai (Debian ``fonts-noto-core``) and Arundina
  (``fonts-arundina``); training uses the TLWG family only (:func:`synth.font_paths`).
  :func:`eval_fonts` refuses to run when the two sets share a file.
* Plate styles: private (black on white), taxi (black on yellow), commercial (green on white) and
  graphic (a tinted scenic background), embossed or flat, optional stroke weight, a plate frame
  whose lip may cover the bottom of the province line, and screws at the top.
* Scenes: parking lot, brick wall or night street behind the front or rear of a vehicle with a grille,
  bumper and lamps; the plate is projected with a pinhole camera at yaw up to +-30 degrees, pitch up
  to +-15 and roll up to +-6, plate width 120-280 px at 720p.
* Camera: optional shadow, glare, night infrared (greyscale, retro-reflective plate), motion or defocus
  blur, sensor noise, then JPEG at quality 20-95. Which of these a scene got is in its label.

Everything is drawn with Pillow and OpenCV from a ``random.Random`` (deterministic per seed); nothing is
downloaded.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from citystream.processors.plates.eval_camera import camera_effects, project_plate, scene_background
from citystream.processors.plates.provinces import PROVINCES
from citystream.processors.plates.registration import PLATE_CONSONANTS

EVAL_FONT_GLOBS = (("/usr/share/fonts/truetype/noto", "Noto*Thai-*.ttf"),
                   ("/usr/share/fonts/truetype/arundina", "Arundina*.ttf"))
EVAL_FONT_PACKAGES = "fonts-noto-core fonts-arundina"
PLATE_PX = (680, 300)  # drawing size of the flat plate (34 x 15 cm)
STYLES = (("private", 0.55), ("taxi", 0.15), ("commercial", 0.15), ("graphic", 0.15))

Bbox = tuple[int, int, int, int]
BgrImage = NDArray[np.uint8]
Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class EvalLabel:
    """Ground truth of one evaluation scene: text, plate style, font, plate box and camera effects."""

    registration: str
    province: str
    style: str
    font: str
    bbox: Bbox
    conditions: tuple[str, ...]


@lru_cache(maxsize=1)
def eval_fonts() -> tuple[Path, ...]:
    """Return the held-out Thai fonts of the evaluation renderer (none of them is a training font)."""
    from citystream.processors.plates.synth import font_paths

    paths = tuple(sorted(p for folder, pattern in EVAL_FONT_GLOBS for p in Path(folder).glob(pattern)))
    if not paths:
        raise FileNotFoundError(f"no held-out Thai fonts for the evaluation renderer (install {EVAL_FONT_PACKAGES})")
    shared = {p.resolve() for p in paths} & {p.resolve() for p in font_paths()}
    if shared:
        raise RuntimeError(f"evaluation fonts also used in training: {sorted(map(str, shared))}")
    return paths


@lru_cache(maxsize=256)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.RAQM)


def eval_registration(rng: random.Random) -> str:
    """Return a random registration in canonical spelling (own distribution, not the trainer's)."""
    lead = rng.choice("123456789") if rng.random() < 0.5 else ""
    letters = "".join(rng.choice(PLATE_CONSONANTS) for _ in range(2))
    digits = rng.choices((1, 2, 3, 4), weights=(1, 1, 2, 4))[0]
    number = rng.choice("123456789") + "".join(rng.choice("0123456789") for _ in range(digits - 1))
    return f"{lead}{letters} {number}"


def _palette(rng: random.Random, style: str) -> tuple[Rgb, Rgb]:
    """(background, ink) colours of a plate style."""
    if style == "taxi":
        return (rng.randint(230, 255), rng.randint(200, 230), rng.randint(10, 70)), (20, 20, 20)
    if style == "commercial":
        return (245, 245, 240), (rng.randint(0, 40), rng.randint(100, 140), rng.randint(40, 80))
    white = rng.randint(230, 252)
    return (white, white, white - rng.randint(0, 10)), (rng.randint(0, 30),) * 3


def _graphic_background(rng: random.Random, plate: Image.Image) -> None:
    """Tint the plate with a pale sky-to-ground gradient and a faint landmark, like provincial graphic plates."""
    w, h = plate.size
    top = np.array([rng.randint(170, 220), rng.randint(200, 235), 250], np.float32)
    bottom = np.array([250, rng.randint(235, 250), rng.randint(200, 235)], np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    grad = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3))
    plate.paste(Image.fromarray(grad.astype(np.uint8)))
    draw = ImageDraw.Draw(plate)
    cx = rng.randint(w // 4, 3 * w // 4)
    tint = (rng.randint(190, 225), rng.randint(200, 230), rng.randint(215, 240))
    draw.polygon([(cx - w // 6, h * 0.75), (cx, h * 0.2), (cx + w // 6, h * 0.75)], fill=tint)


def digit_font(path: Path) -> Path:
    """The font that draws digits for ``path``: itself, or for Noto's Thai-only fonts their Latin companion."""
    if _covers(path, "0123456789"):
        return path
    weight = "Bold" if "Bold" in path.stem else "Regular"
    family = "Serif" if "Serif" in path.stem else "Sans"
    companion = path.with_name(f"Noto{family}-{weight}.ttf")
    if not companion.is_file():
        raise FileNotFoundError(f"{path.name} has no digits and {companion} is missing (install {EVAL_FONT_PACKAGES})")
    return companion


@lru_cache(maxsize=64)
def _covers(path: Path, chars: str) -> bool:
    """Whether the font has a glyph for every character (a missing one renders as the .notdef box)."""
    font = _font(path, 40)
    notdef = bytes(font.getmask("\U000f0000"))
    return all(bytes(font.getmask(ch)) != notdef for ch in chars)


Glyph = tuple[str, ImageFont.FreeTypeFont]


def _glyphs(text: str, letters: Path, digits: Path, size: int) -> list[Glyph]:
    return [(ch, _font(digits if ch.isdigit() else letters, size)) for ch in text]


def _line_box(draw: ImageDraw.ImageDraw, glyphs: list[Glyph], spacing: float,
              stroke: int) -> tuple[float, float, float]:
    """(width, ink top, ink bottom) of a registration drawn glyph by glyph."""
    width, top, bottom = 0.0, math.inf, -math.inf
    for ch, font in glyphs:
        if ch == " ":
            width += spacing * 3
            continue
        left, t, right, b = draw.textbbox((0, 0), ch, font=font, stroke_width=stroke)
        width += right - left + spacing
        top, bottom = min(top, t), max(bottom, b)
    return width - spacing, top, bottom


def _draw_registration(draw: ImageDraw.ImageDraw, glyphs: list[Glyph], left: float, mid_y: float, spacing: float,
                       ink: Rgb, stroke: int) -> None:
    """Draw the registration glyph by glyph (own spacing) from ``left``, centred on ``mid_y``."""
    _, top, bottom = _line_box(draw, glyphs, spacing, stroke)
    x = left
    for ch, font in glyphs:
        if ch == " ":
            x += spacing * 3
            continue
        left_edge, _, right_edge, _ = draw.textbbox((0, 0), ch, font=font, stroke_width=stroke)
        draw.text((x - left_edge, mid_y - (top + bottom) / 2), ch, font=font, fill=ink, stroke_width=stroke,
                  stroke_fill=ink)
        x += right_edge - left_edge + spacing


def _fit_registration(draw: ImageDraw.ImageDraw, text: str, fonts: tuple[Path, Path], box: tuple[float, float],
                      spacing: float, stroke: int) -> list[Glyph]:
    """The registration's glyphs at the largest size that fits ``box`` (width, height)."""
    for size in range(int(box[1] * 1.8), 10, -2):
        glyphs = _glyphs(text, *fonts, size)
        width, top, bottom = _line_box(draw, glyphs, spacing, stroke)
        if width <= box[0] and bottom - top <= box[1]:
            return glyphs
    return _glyphs(text, *fonts, 10)


def _fit_word(draw: ImageDraw.ImageDraw, text: str, path: Path, box: tuple[float, float]) -> ImageFont.FreeTypeFont:
    """The font size at which the province name (drawn whole, marks shaped) fits ``box``."""
    for size in range(int(box[1] * 1.8), 10, -2):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=_font(path, size))
        if right - left <= box[0] and bottom - top <= box[1]:
            return _font(path, size)
    return _font(path, 10)


def _plate_text(rng: random.Random, plate: Image.Image, registration: str, province: str, ink: Rgb,
                fonts: tuple[Path, Path]) -> None:
    """Registration on the upper ~half, province below, embossed (a shadow stroke) or flat."""
    w, h = plate.size
    draw = ImageDraw.Draw(plate)
    stroke = rng.choice((0, 0, 1, 2))
    spacing = w * rng.uniform(0.005, 0.02)
    glyphs = _fit_registration(draw, registration, (fonts[0], digit_font(fonts[0])),
                               (w * rng.uniform(0.74, 0.86), h * rng.uniform(0.36, 0.44)), spacing, stroke)
    reg_x = (w - _line_box(draw, glyphs, spacing, stroke)[0]) / 2
    reg_y = h * rng.uniform(0.32, 0.38)
    if rng.random() < 0.5:  # embossed: a darker rim below-right of the raised glyphs
        paper = plate.getpixel((w // 2, h - 8))
        rim = tuple(int(c * 0.55) for c in paper) if isinstance(paper, tuple) else ink
        shift = max(1, w // 300)
        _draw_registration(draw, glyphs, reg_x + shift, reg_y + shift, spacing, rim, stroke)  # type: ignore[arg-type]
    _draw_registration(draw, glyphs, reg_x, reg_y, spacing, ink, stroke)
    word = _fit_word(draw, province, fonts[1], (w * rng.uniform(0.62, 0.84), h * rng.uniform(0.15, 0.2)))
    left, top, right, bottom = draw.textbbox((0, 0), province, font=word)
    centre_y = h * rng.uniform(0.74, 0.8)
    draw.text(((w - left - right) / 2, centre_y - (top + bottom) / 2), province, font=word, fill=ink)


def _frame_and_screws(rng: random.Random, plate: Image.Image, ink: Rgb) -> list[str]:
    """Border line, optional holder frame (its lip may cover the province's foot) and screws; returns conditions."""
    w, h = plate.size
    draw = ImageDraw.Draw(plate)
    pad = rng.randint(8, 16)
    draw.rounded_rectangle((pad, pad, w - pad, h - pad), radius=rng.randint(6, 24), outline=ink,
                           width=rng.randint(3, 7))
    conditions = []
    if rng.random() < 0.4:
        colour = (rng.randint(10, 60),) * 3 if rng.random() < 0.6 else (rng.randint(170, 210),) * 3
        rim = rng.randint(6, 14)
        draw.rectangle((0, 0, w - 1, h - 1), outline=colour, width=rim)
        draw.rectangle((0, h - rim - int(h * rng.uniform(0.0, 0.05)), w - 1, h - 1), fill=colour)
        conditions.append("frame")
    if rng.random() < 0.5:
        r = int(w * rng.uniform(0.015, 0.025))
        for sx in (rng.uniform(0.1, 0.2), rng.uniform(0.8, 0.9)):
            cx, cy = int(w * sx), int(h * rng.uniform(0.07, 0.12))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(150, 150, 155), outline=(80, 80, 80), width=2)
            draw.line((cx - r + 2, cy, cx + r - 2, cy), fill=(70, 70, 70), width=2)
        conditions.append("screws")
    return conditions


def _dirt(rng: random.Random, plate: Image.Image) -> None:
    """Faint brownish speckles and a smudge across the plate."""
    draw = ImageDraw.Draw(plate, "RGBA")
    w, h = plate.size
    for _ in range(rng.randint(20, 80)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, 4)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(90, 70, 50, rng.randint(40, 120)))
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    draw.ellipse((x - w * 0.15, y - h * 0.1, x + w * 0.15, y + h * 0.1), fill=(120, 100, 80, rng.randint(15, 45)))


def eval_plate(rng: random.Random) -> tuple[Image.Image, EvalLabel]:
    """Draw one flat labelled plate (RGB, :data:`PLATE_PX`) in a random style and held-out font."""
    registration, province = eval_registration(rng), rng.choice(PROVINCES)
    style = rng.choices([s for s, _ in STYLES], weights=[p for _, p in STYLES])[0]
    fonts = eval_fonts()
    reg_font = rng.choice(fonts)
    prov_font = reg_font if rng.random() < 0.6 else rng.choice(fonts)
    background, ink = _palette(rng, style)
    plate = Image.new("RGB", PLATE_PX, background)
    if style == "graphic":
        _graphic_background(rng, plate)
    _plate_text(rng, plate, registration, province, ink, (reg_font, prov_font))
    conditions = _frame_and_screws(rng, plate, ink)
    if rng.random() < 0.3:
        _dirt(rng, plate)
        conditions.append("dirt")
    return plate, EvalLabel(registration, province, style, reg_font.stem, (0, 0, *PLATE_PX), tuple(conditions))


def eval_scene(rng: random.Random, width: int = 1280, height: int = 720) -> tuple[BgrImage, EvalLabel]:
    """Render one evaluation frame (BGR uint8, ``height`` x ``width``) holding one plate, and its label."""
    plate, label = eval_plate(rng)
    scale = min(width / 1280, height / 720)
    plate_w = rng.uniform(120, 280) * scale
    centre = (rng.uniform(0.25, 0.75) * width, rng.uniform(0.45, 0.8) * height)
    frame, scene_conditions = scene_background(rng, width, height, centre, plate_w)
    bbox, mask, pose = project_plate(rng, frame, cv2.cvtColor(np.asarray(plate), cv2.COLOR_RGB2BGR), centre,
                                     plate_w)
    frame, camera_conditions = camera_effects(rng, frame, mask)
    conditions = (*label.conditions, *scene_conditions, pose, *camera_conditions)
    return frame, EvalLabel(label.registration, label.province, label.style, label.font, bbox, conditions)
