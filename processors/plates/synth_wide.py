"""The wide training renderer: synthetic Thai plates drawn far more variously than any one camera shows them.

:mod:`synth` draws the traffic simulator's plates (and its scenes stay as they are: tests and demos
depend on them). This module reuses its registration, province and scene-drawing helpers but widens
every axis the reader must not learn by heart (issue 19), for training and training-side validation
only (``citystream plates train``, ``citystream plates eval --renderer wide``):

* **fonts**: every Thai-capable font from Debian packages except the evaluation renderer's held-out
  Noto and Arundina families: the 58 TLWG files (``fonts-thai-tlwg``) and FreeSerif's four
  (``fonts-freefont-ttf``); letters and digits may come from different fonts;
* **stroke weight**: Pillow's stroke width 0-3 px on a ~350 px plate, or thinned by erosion;
* **plate styles**: private (black on white), taxi (black on yellow), commercial (green ink),
  special series (red or blue ink, black on light green, light blue or pink), graphic (tinted
  gradient with faint shapes); border or none, glyph-by-glyph spacing, embossed shading;
* **extras on the plate**: screws, a holder frame whose lip may cover part of the province line,
  dirt, a bar occluding a sliver of the plate;
* **pose**: yaw up to +-30 degrees, pitch +-15, roll +-10 (a projective warp), plate width 70-300 px
  in a 1280x720 frame (about 30-130 px plate height);
* **camera**: shadow edge, glare spot, night infrared (greyscale, dark scene, lit plate), motion blur
  3-9 px at any angle, defocus disk radius 1-3, sensor noise sigma 1-12, JPEG quality 20-95.

Everything is deterministic for a ``random.Random`` state; nothing is downloaded.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from citystream.processors.plates.provinces import PROVINCES
from citystream.processors.plates.registration import PLATE_CONSONANTS
from citystream.processors.plates.synth import (
    PLATE_RATIO,
    BgrImage,
    PlateLabel,
    _car,
    _font,
    _gauss,
    _paste_plate,
    _road,
    _sky_and_buildings,
    font_paths,
    random_registration,
)

EXTRA_FONT_DIRS = (Path("/usr/share/fonts/truetype/freefont"),)
EXTRA_FONT_GLOB = "FreeSerif*.ttf"  # FreeSans and FreeMono have no Thai
HELD_OUT = ("Noto", "Arundina")  # the evaluation renderer's families: never train on them
Rgb = tuple[int, int, int]
STYLES = ("private", "taxi", "commercial", "red", "blue", "tinted", "graphic")
STYLE_WEIGHTS = (4, 2, 1.5, 0.7, 0.7, 1, 1.2)


@dataclass(frozen=True)
class WideLabel:
    """A wide-renderer plate label: the :class:`synth.PlateLabel` plus its style and conditions."""

    plate: PlateLabel
    style: str
    conditions: tuple[str, ...]


@lru_cache(maxsize=1)
def wide_fonts() -> tuple[Path, ...]:
    """Training fonts: TLWG plus FreeSerif (when installed); raises if a held-out family slipped in."""
    paths = list(font_paths())
    for folder in EXTRA_FONT_DIRS:
        paths.extend(sorted(folder.glob(EXTRA_FONT_GLOB)))
    leaked = [p for p in paths if p.stem.startswith(HELD_OUT)]
    if leaked:
        raise ValueError(f"held-out evaluation fonts among the training fonts: {leaked}")
    return tuple(paths)


def _palette(rng: random.Random, style: str) -> tuple[Rgb, Rgb]:
    """(background, ink) of a plate style."""
    white = rng.randint(205, 255)
    dark = rng.randint(0, 50)
    if style == "taxi":
        return (rng.randint(215, 255), rng.randint(180, 225), rng.randint(0, 80)), (dark, dark, dark)
    if style == "commercial":
        return (white, white, white), (rng.randint(0, 40), rng.randint(90, 140), rng.randint(30, 80))
    if style == "red":
        return (white, white, white), (rng.randint(150, 210), rng.randint(0, 40), rng.randint(0, 40))
    if style == "blue":
        return (white, white, white), (rng.randint(0, 40), rng.randint(40, 90), rng.randint(130, 190))
    if style == "tinted":
        tint = rng.choice(((200, 235, 200), (200, 220, 245), (245, 210, 220), (235, 235, 200)))
        return tuple(min(255, c + rng.randint(-10, 15)) for c in tint), (dark, dark, dark)  # type: ignore[return-value]
    return (white, white, min(255, white + rng.randint(-8, 8))), (dark, dark, dark)


def _graphic(rng: random.Random, image: Image.Image) -> None:
    """Tinted gradient and faint shapes behind the text (graphic series)."""
    w, h = image.size
    a = np.array([rng.randint(180, 250) for _ in range(3)], np.float32)
    b = np.array([rng.randint(180, 250) for _ in range(3)], np.float32)
    t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    arr = (a * (1 - t) + b * t).repeat(h, axis=0)
    for _ in range(rng.randint(1, 4)):
        colour = tuple(float(rng.randint(150, 235)) for _ in range(3))
        centre = (rng.randint(0, w), rng.randint(h // 2, h))
        cv2.circle(arr, centre, rng.randint(h // 6, h // 2), colour, -1)
    image.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))


def _draw_spaced(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, left: float, mid_y: float,
                 spacing: float, ink: Rgb, stroke: int) -> float:
    """Draw ``text`` glyph by glyph from ``left`` at vertical centre ``mid_y``; return the right edge."""
    x = left
    for ch in text:
        box = draw.textbbox((0, 0), ch, font=font, stroke_width=stroke)
        draw.text((x - box[0], mid_y - (box[1] + box[3]) / 2), ch, font=font, fill=ink, stroke_width=stroke,
                  stroke_fill=ink)
        x += box[2] - box[0] + spacing
    return x - spacing


def _line_width(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, spacing: float,
                stroke: int) -> float:
    widths = [draw.textbbox((0, 0), ch, font=font, stroke_width=stroke) for ch in text]
    return sum(b[2] - b[0] for b in widths) + spacing * (len(text) - 1)


def _fit(draw: ImageDraw.ImageDraw, path: Path, text: str, max_w: float, max_h: float, spacing: float,
         stroke: int) -> ImageFont.FreeTypeFont:
    """Largest font size whose glyph-by-glyph line fits ``max_w`` x ``max_h``."""
    size = max(int(max_h * 1.5), 8)
    while size > 8:
        font = _font(path, size)
        top, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)[1::2]
        if bottom - top <= max_h and _line_width(draw, text, font, spacing, stroke) <= max_w:
            return font
        size = int(size * 0.94)
    return _font(path, 8)


def _plate_text(rng: random.Random, image: Image.Image, registration: str, province: str, ink: Rgb,
                fonts: tuple[Path, Path, Path]) -> None:
    """Registration (letters and digits maybe in different fonts) above the province name."""
    w, h = image.size
    draw = ImageDraw.Draw(image)
    stroke = rng.choice((0, 0, 0, 1, 1, 2, 3))
    head, number = registration.split(" ")
    spacing = w * rng.uniform(0.0, 0.025)
    gap = w * rng.uniform(0.04, 0.11)
    reg_h = h * rng.uniform(0.36, 0.50)
    width = w * rng.uniform(0.74, 0.90)
    share = len(head) / (len(head) + len(number))
    head_font = _fit(draw, fonts[0], head, (width - gap) * share * 1.15, reg_h, spacing, stroke)
    num_font = _fit(draw, fonts[1], number, (width - gap) * (1 - share) * 1.15, reg_h, spacing, stroke)
    size = min(head_font.size, num_font.size)
    head_font, num_font = _font(fonts[0], size), _font(fonts[1], size)
    head_w = _line_width(draw, head, head_font, spacing, stroke)
    num_w = _line_width(draw, number, num_font, spacing, stroke)
    left = (w - head_w - gap - num_w) / 2 + rng.uniform(-0.02, 0.02) * w
    mid_y = h * rng.uniform(0.31, 0.38)
    _draw_spaced(draw, head, head_font, left, mid_y, spacing, ink, stroke)
    _draw_spaced(draw, number, num_font, left + head_w + gap, mid_y, spacing, ink, stroke)
    prov_stroke = min(stroke, 1)
    prov = _fit(draw, fonts[2], province, w * rng.uniform(0.62, 0.88), h * rng.uniform(0.15, 0.23), 0, prov_stroke)
    box = draw.textbbox((0, 0), province, font=prov, stroke_width=prov_stroke)
    centre = (w / 2 + rng.uniform(-0.02, 0.02) * w, h * rng.uniform(0.74, 0.80))
    draw.text((centre[0] - (box[0] + box[2]) / 2, centre[1] - (box[1] + box[3]) / 2), province, font=prov,
              fill=ink, stroke_width=prov_stroke, stroke_fill=ink)


def _extras(rng: random.Random, image: Image.Image, ink: Rgb) -> list[str]:
    """Border, holder frame, screws, dirt and an occluding bar; returns the names of those drawn."""
    w, h = image.size
    draw = ImageDraw.Draw(image)
    drawn: list[str] = []
    if rng.random() < 0.75:
        inset = rng.randint(2, 8)
        draw.rectangle((inset, inset, w - 1 - inset, h - 1 - inset), outline=ink, width=rng.randint(1, 4))
    if rng.random() < 0.35:
        frame = tuple(rng.randint(0, 80) for _ in range(3))
        side, lip = rng.randint(3, 10), rng.randint(4, int(h * 0.14))
        draw.rectangle((0, 0, w - 1, h - 1), outline=frame, width=side)
        draw.rectangle((0, h - lip, w - 1, h - 1), fill=frame)
        drawn.append("frame")
    if rng.random() < 0.4:
        r = rng.randint(4, 8)
        for cx in (rng.uniform(0.18, 0.3) * w, rng.uniform(0.7, 0.82) * w):
            cy = rng.uniform(0.04, 0.12) * h
            shade = rng.randint(90, 200)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(shade, shade, shade), outline=(40, 40, 40))
        drawn.append("screws")
    if rng.random() < 0.3:
        arr = np.asarray(image, np.float32).copy()
        for _ in range(rng.randint(3, 15)):
            centre = (rng.randint(0, w), rng.randint(0, h))
            blot = np.zeros((h, w), np.float32)
            cv2.circle(blot, centre, rng.randint(3, 25), 1.0, -1)
            blot = cv2.GaussianBlur(blot, (0, 0), rng.uniform(2, 8)) * rng.uniform(0.15, 0.45)
            arr = arr * (1 - blot[:, :, None]) + np.array((90, 75, 60), np.float32) * blot[:, :, None]
        image.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
        drawn.append("dirt")
    if rng.random() < 0.1:
        x = rng.choice((rng.uniform(-0.05, 0.02), rng.uniform(0.93, 1.0))) * w
        draw.rectangle((x, 0, x + rng.uniform(0.03, 0.07) * w, h), fill=tuple(rng.randint(0, 120) for _ in range(3)))
        drawn.append("occluded")
    return drawn


def wide_plate(rng: random.Random) -> tuple[Image.Image, WideLabel]:
    """Render one flat labelled plate (RGB) in a random style, font and stroke weight."""
    registration = random_registration(rng) if rng.random() < 0.6 else _even_registration(rng)
    province = rng.choice(PROVINCES)
    style = rng.choices(STYLES, weights=STYLE_WEIGHTS)[0]
    fonts = wide_fonts()
    letters = rng.choice(fonts)
    digits = letters if rng.random() < 0.6 else rng.choice(fonts)
    prov_font = letters if rng.random() < 0.6 else rng.choice(fonts)
    width = rng.randint(300, 400)
    height = int(width * PLATE_RATIO * rng.uniform(0.92, 1.08))
    bg, ink = _palette(rng, style if style != "graphic" else "private")
    image = Image.new("RGB", (width, height), bg)
    if style == "graphic":
        _graphic(rng, image)
    _plate_text(rng, image, registration, province, ink, (letters, digits, prov_font))
    conditions = _extras(rng, image, ink)
    if rng.random() < 0.2:
        arr = cv2.erode(np.asarray(image), np.ones((2, 2), np.uint8)) if rng.random() < 0.5 else \
            cv2.dilate(np.asarray(image), np.ones((2, 2), np.uint8))
        image = Image.fromarray(arr)
    if rng.random() < 0.3:  # embossed: light from above, shade below each stroke
        arr = np.asarray(image, np.int16)
        shifted = np.roll(arr, 2, axis=0)
        image = Image.fromarray(np.clip(arr + (arr - shifted) // 4, 0, 255).astype(np.uint8))
        conditions.append("embossed")
    label = PlateLabel(registration, province, style == "taxi", letters.stem, (0, 0, width, height))
    return image, WideLabel(label, style, tuple(conditions))


def _even_registration(rng: random.Random) -> str:
    """A registration with the lead digit half of the time and number lengths more evenly spread."""
    lead = str(rng.randint(1, 9)) if rng.random() < 0.5 else ""
    letters = rng.choice(PLATE_CONSONANTS) + rng.choice(PLATE_CONSONANTS)
    n = rng.choice((1, 2, 3, 4, 4))
    return f"{lead}{letters} {rng.randint(10 ** (n - 1), 10**n - 1)}"


def _pose(rng: random.Random, centre: tuple[float, float], plate_w: float, plate_h: float) -> NDArray[np.float32]:
    """Corners (tl, tr, br, bl) of the plate seen by a pinhole camera at random yaw, pitch and roll."""
    yaw, pitch, roll = (math.radians(rng.uniform(-a, a)) for a in (30.0, 15.0, 10.0))
    corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float64) * [plate_w / 2, plate_h / 2, 0]
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    pts = corners @ (rz @ rx @ ry).T
    distance = plate_w * rng.uniform(2.0, 6.0)
    scale = distance / (distance + pts[:, 2])
    out: NDArray[np.float32] = (pts[:, :2] * scale[:, None] + np.array(centre)).astype(np.float32)
    return out


def _motion_kernel(rng: random.Random) -> NDArray[np.float32]:
    length = rng.randint(3, 9)
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (length, length))
    normalised: NDArray[np.float32] = kernel / max(float(kernel.sum()), 1e-6)
    return normalised


def _light(rng: random.Random, frame: BgrImage, bbox: tuple[int, int, int, int], conditions: list[str]) -> BgrImage:
    """Shadow, glare and night infrared; appends the names of those applied."""
    h, w = frame.shape[:2]
    out = frame.astype(np.float32)
    x, y, bw, bh = bbox
    if rng.random() < 0.25:  # shadow edge across the plate
        angle = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        px, py = x + rng.uniform(0, bw), y + rng.uniform(0, bh)
        side = (xx - px) * math.cos(angle) + (yy - py) * math.sin(angle)
        soft = 1.0 / (1.0 + np.exp(np.clip(-side / rng.uniform(1.0, 8.0), -30, 30)))
        out *= (1.0 - rng.uniform(0.3, 0.65) * soft)[:, :, None]
        conditions.append("shadow")
    if rng.random() < 0.2:  # glare spot near the plate
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = x + rng.uniform(-0.2, 1.2) * bw, y + rng.uniform(-0.3, 1.3) * bh
        sigma = bw * rng.uniform(0.1, 0.5)
        spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma)) * rng.uniform(80, 220)
        out += spot[:, :, None]
        conditions.append("glare")
    if rng.random() < 0.2:  # night infrared: greyscale, dark scene, retro-reflective plate lit
        grey = out.mean(axis=2, keepdims=True) * rng.uniform(0.15, 0.45)
        plate = np.zeros((h, w), np.float32)
        cv2.rectangle(plate, (x, y), (x + bw, y + bh), 1.0, -1)
        plate = cv2.GaussianBlur(plate, (0, 0), max(2.0, bw * 0.05))
        gain = 1.0 + plate * rng.uniform(1.5, 3.0)
        out = np.repeat(grey * gain[:, :, None], 3, axis=2)
        conditions.append("night_ir")
    result: BgrImage = np.clip(out, 0, 255).astype(np.uint8)
    return result


def _optics(rng: random.Random, frame: BgrImage, conditions: list[str]) -> BgrImage:
    """Motion or defocus blur, gain, sensor noise and JPEG; appends the names of those applied."""
    out = cv2.convertScaleAbs(frame, alpha=rng.uniform(0.6, 1.25), beta=rng.uniform(-25, 20))
    blur = rng.random()
    if blur < 0.3:
        out = cv2.filter2D(out, -1, _motion_kernel(rng))
        conditions.append("motion_blur")
    elif blur < 0.55:
        r = rng.uniform(1.0, 3.0)
        size = 2 * math.ceil(r) + 1
        disk = np.zeros((size, size), np.float32)
        cv2.circle(disk, (size // 2, size // 2), int(round(r)), 1.0, -1, lineType=cv2.LINE_AA)
        out = cv2.filter2D(out, -1, disk / disk.sum())
        conditions.append("defocus")
    elif blur < 0.8:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.4))
    noisy = cv2.add(out, _gauss(rng, out.shape, rng.uniform(1.0, 12.0)), dtype=cv2.CV_8U)
    quality = rng.randint(20, 95)
    if quality < 45:
        conditions.append("jpeg_low")
    ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded: BgrImage = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else noisy
    return decoded


def _clutter(rng: random.Random, frame: BgrImage) -> None:
    """Plate-like distractors: bright boxes and dark stripes (signs, windows, grilles)."""
    h, w = frame.shape[:2]
    for _ in range(rng.randint(0, 4)):
        bw, bh = rng.randint(40, 260), rng.randint(15, 120)
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
        shade = rng.randint(0, 255)
        cv2.rectangle(frame, (x, y), (x + bw, y + bh), (shade, shade, rng.randint(0, 255)), -1)
        if rng.random() < 0.5:
            for sy in range(y + 4, y + bh - 2, rng.randint(5, 12)):
                cv2.line(frame, (x + 3, sy), (x + bw - 3, sy), (255 - shade,) * 3, rng.randint(1, 3))


def _place(rng: random.Random, frame: BgrImage, plate_img: Image.Image, plate_w: float,
           centre: tuple[float, float]) -> tuple[BgrImage, tuple[int, int, int, int], list[str]]:
    plate = cv2.cvtColor(np.asarray(plate_img), cv2.COLOR_RGB2BGR)
    plate_h = plate_w * plate_img.height / plate_img.width
    bbox = _paste_plate(frame, plate, _pose(rng, centre, plate_w, plate_h))
    conditions: list[str] = []
    lit = _light(rng, frame, bbox, conditions)
    return _optics(rng, lit, conditions), bbox, conditions


def wide_scene(rng: random.Random, width: int = 1280, height: int = 720) -> tuple[BgrImage, WideLabel]:
    """A road frame (BGR, ``height`` x ``width``) with one widely varied plate on a car; label with its box."""
    frame = np.zeros((height, width, 3), np.uint8)
    horizon = int(height * rng.uniform(0.2, 0.45))
    _sky_and_buildings(rng, frame, horizon)
    _road(rng, frame, horizon)
    _clutter(rng, frame)
    plate_img, label = wide_plate(rng)
    scale = min(width / 1280, height / 720)
    plate_w = math.exp(rng.uniform(math.log(70), math.log(300))) * scale
    cx = rng.uniform(width * 0.15, width * 0.85)
    cy = rng.uniform(max(horizon + plate_w * 0.5, height * 0.4), height - plate_w * 0.5)
    _car(rng, frame, int(plate_w), int(cx), int(cy))
    out, bbox, conditions = _place(rng, frame, plate_img, plate_w, (cx, cy))
    return out, replace(label, plate=replace(label.plate, bbox=bbox), conditions=label.conditions + tuple(conditions))


def wide_patch(rng: random.Random) -> tuple[BgrImage, WideLabel]:
    """One widely varied plate on a small patch of car body (BGR), cheap training data."""
    plate_img, label = wide_plate(rng)
    plate_w = rng.uniform(110, 280)
    width, height = int(plate_w * rng.uniform(1.7, 2.3)), int(plate_w * rng.uniform(1.0, 1.3))
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = (rng.randint(10, 245), rng.randint(10, 245), rng.randint(10, 245))
    frame[int(height * rng.uniform(0.6, 0.85)):] = tuple(rng.randint(10, 120) for _ in range(3))
    centre = (width / 2 + rng.uniform(-0.08, 0.08) * width, height / 2 + rng.uniform(-0.06, 0.06) * height)
    out, bbox, conditions = _place(rng, frame, plate_img, plate_w, centre)
    return out, replace(label, plate=replace(label.plate, bbox=bbox), conditions=label.conditions + tuple(conditions))
