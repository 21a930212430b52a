"""Labelled synthetic Thai car licence plates and road scenes that carry them.

Public entry points, both deterministic for a given ``random.Random`` state:

* :func:`render_plate` ``(rng) -> (PIL.Image RGB, PlateLabel)`` — one plate, cropped to its edge:
  registration (``1กข 1234`` / ``กข 1234``) above the province's full name, black text on white
  (private car) or yellow (taxi), with random TLWG font, size, slant, blur, noise and lighting.
* :func:`road_scene_with_plate` ``(rng, width, height) -> (BGR ndarray, PlateLabel)`` — a road-like
  frame (sky, buildings, asphalt, lane markings, a car-ish box) with the plate warped in
  perspective onto the car; ``label.bbox`` is the plate's ``(x, y, w, h)`` in the frame.

* :func:`plate_patch` ``(rng) -> (BGR ndarray, PlateLabel)`` — the same plate, warp and camera on a
  small patch of car body instead of a whole frame: ten times cheaper, for training data.

The traffic simulator calls the first two; the plate reader's evaluation and training use them too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from citystream.processors.plates.provinces import PROVINCES
from citystream.processors.plates.registration import PLATE_CONSONANTS

FONT_DIR = Path("/usr/share/fonts/truetype/tlwg")
PLATE_RATIO = 15 / 34  # height / width of a Thai car plate (34 x 15 cm)

Bbox = tuple[int, int, int, int]
BgrImage = NDArray[np.uint8]


@dataclass(frozen=True)
class PlateLabel:
    """Ground truth of one synthetic plate: text, class, font and where it is in its image."""

    registration: str
    province: str
    taxi: bool
    font: str
    bbox: Bbox


@lru_cache(maxsize=1)
def font_paths() -> tuple[Path, ...]:
    """Return the TLWG Thai fonts available for rendering, sorted by name."""
    paths = tuple(sorted(FONT_DIR.glob("*.ttf")))
    if not paths:
        raise FileNotFoundError(f"no Thai fonts in {FONT_DIR} (install fonts-thai-tlwg)")
    return paths


@lru_cache(maxsize=512)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.RAQM)


def random_registration(rng: random.Random) -> str:
    """Return a registration such as ``1กข 1234`` or ``กข 56`` in the canonical spacing."""
    lead = str(rng.randint(1, 9)) if rng.random() < 0.6 else ""
    letters = rng.choice(PLATE_CONSONANTS) + rng.choice(PLATE_CONSONANTS)
    n_digits = rng.choices((1, 2, 3, 4), weights=(1, 2, 3, 8))[0]
    number = str(rng.randint(10 ** (n_digits - 1), 10**n_digits - 1))
    return f"{lead}{letters} {number}"


def numpy_rng(rng: random.Random) -> np.random.Generator:
    """Return a numpy Generator seeded from (and advancing) ``rng``."""
    return np.random.default_rng(rng.getrandbits(64))


def _fit_font(path: Path, text: str, max_w: float, max_h: float) -> ImageFont.FreeTypeFont:
    """Largest size of ``path`` whose ink box of ``text`` fits ``max_w`` x ``max_h``."""
    size = max(int(max_h * 1.4), 8)
    while size > 8:
        font = _font(path, size)
        left, top, right, bottom = font.getbbox(text)
        if right - left <= max_w and bottom - top <= max_h:
            return font
        size = int(size * 0.93)
    return _font(path, 8)


def _draw_centered(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont,
                   centre: tuple[float, float], fill: tuple[int, int, int]) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = centre[0] - (left + right) / 2
    y = centre[1] - (top + bottom) / 2
    draw.text((x, y), text, font=font, fill=fill)


def _plate_canvas(rng: random.Random, registration: str, province: str, taxi: bool,
                  reg_font: Path, prov_font: Path) -> Image.Image:
    """Draw the clean plate: background, border, registration and province lines."""
    width = rng.randint(300, 380)
    height = int(width * PLATE_RATIO * rng.uniform(0.95, 1.05))
    if taxi:
        bg = (rng.randint(225, 255), rng.randint(190, 225), rng.randint(0, 60))
    else:
        shade = rng.randint(225, 255)
        bg = (shade, shade, min(255, shade + rng.randint(-8, 8)))
    ink_level = rng.randint(0, 45)
    ink = (ink_level, ink_level, ink_level)
    image = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(image)
    inset = rng.randint(3, 7)
    draw.rectangle((inset, inset, width - 1 - inset, height - 1 - inset), outline=ink,
                   width=rng.randint(2, 4))
    head, digits = registration.split(" ")
    reg_h = height * rng.uniform(0.40, 0.48)
    gap = width * rng.uniform(0.05, 0.10)
    font = _fit_font(reg_font, f"{head}{digits}", width * 0.86 - gap, reg_h)
    head_w = font.getbbox(head)[2] - font.getbbox(head)[0]
    digits_w = font.getbbox(digits)[2] - font.getbbox(digits)[0]
    start = (width - head_w - gap - digits_w) / 2
    reg_y = height * rng.uniform(0.33, 0.37)
    _draw_centered(draw, head, font, (start + head_w / 2, reg_y), ink)
    _draw_centered(draw, digits, font, (start + head_w + gap + digits_w / 2, reg_y), ink)
    prov = _fit_font(prov_font, province, width * rng.uniform(0.70, 0.86), height * rng.uniform(0.17, 0.22))
    _draw_centered(draw, province, prov, (width / 2, height * rng.uniform(0.76, 0.79)), ink)
    return image


def _degrade_plate(rng: random.Random, image: Image.Image) -> Image.Image:
    """Apply lighting gradient, blur and sensor noise to a plate image."""
    gen = numpy_rng(rng)
    arr = np.asarray(image, dtype=np.float32)
    h, w = arr.shape[:2]
    gx = np.linspace(rng.uniform(0.65, 1.1), rng.uniform(0.65, 1.1), w, dtype=np.float32)
    gy = np.linspace(rng.uniform(0.8, 1.05), rng.uniform(0.8, 1.05), h, dtype=np.float32)
    arr = arr * (gy[:, None] * gx[None, :])[:, :, None]
    arr = arr + gen.normal(0.0, rng.uniform(1.0, 7.0), arr.shape).astype(np.float32)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.3)))


def render_plate(rng: random.Random, *, degrade: bool = True) -> tuple[Image.Image, PlateLabel]:
    """Render one random labelled Thai car plate; returns the RGB plate image and its label."""
    registration = random_registration(rng)
    province = rng.choice(PROVINCES)
    taxi = rng.random() < 0.2
    fonts = font_paths()
    reg_font = rng.choice(fonts)
    prov_font = reg_font if rng.random() < 0.7 else rng.choice(fonts)
    image = _plate_canvas(rng, registration, province, taxi, reg_font, prov_font)
    if degrade:
        image = _degrade_plate(rng, image)
    label = PlateLabel(registration, province, taxi, reg_font.stem, (0, 0, image.width, image.height))
    return image, label


def _sky_and_buildings(rng: random.Random, frame: BgrImage, horizon: int) -> None:
    h, w = frame.shape[:2]
    top = np.array([rng.randint(150, 230), rng.randint(120, 200), rng.randint(90, 170)], np.float32)
    ramp = np.linspace(0.75, 1.0, horizon, dtype=np.float32)[:, None, None]
    frame[:horizon] = np.clip(top[None, None, :] * ramp, 0, 255).astype(np.uint8)
    x = 0
    while x < w:
        bw, bh = rng.randint(60, 220), rng.randint(horizon // 4, horizon)
        grey = rng.randint(60, 190)
        cv2.rectangle(frame, (x, horizon - bh), (x + bw, horizon), (grey, grey, grey + rng.randint(-20, 20)), -1)
        for wy in range(horizon - bh + 10, horizon - 10, 28):
            for wx in range(x + 8, x + bw - 14, 24):
                cv2.rectangle(frame, (wx, wy), (wx + 10, wy + 14), (grey // 2,) * 3, -1)
        x += bw + rng.randint(0, 30)


def _gauss(rng: random.Random, shape: tuple[int, ...], sigma: float) -> NDArray[np.float32]:
    """Gaussian noise from OpenCV's (per-thread) RNG, reseeded from ``rng`` for determinism."""
    cv2.setRNGSeed(rng.getrandbits(31))
    noise = np.empty(shape, np.float32)
    cv2.randn(noise, 0.0, sigma)
    return noise


def _road(rng: random.Random, frame: BgrImage, horizon: int) -> None:
    h, w = frame.shape[:2]
    asphalt = rng.randint(70, 120)
    frame[horizon:] = asphalt
    noise = _gauss(rng, (h - horizon, w), 6.0) + asphalt
    frame[horizon:] = np.clip(noise, 0, 255).astype(np.uint8)[:, :, None]
    vanish_x = w // 2 + rng.randint(-w // 8, w // 8)
    for lane in (-1.5, -0.5, 0.5, 1.5):
        bottom_x = int(w / 2 + lane * w * 0.45)
        for t0 in np.arange(0.0, 1.0, 0.12):
            t1 = t0 + 0.06
            ys = [int(horizon + (h - horizon) * t * t) for t in (t0, t1)]
            xs = [int(vanish_x + (bottom_x - vanish_x) * t * t) for t in (t0, t1)]
            thick = max(1, int(14 * t1))
            colour = (230, 230, 230) if abs(lane) > 1 else (40, 200, 230)
            cv2.line(frame, (xs[0], ys[0]), (xs[1], ys[1]), colour, thick)


def _car(rng: random.Random, frame: BgrImage, plate_w: int, centre_x: int, plate_y: int) -> None:
    """Draw the rear of a car around where the plate will go."""
    h, w = frame.shape[:2]
    car_w = int(min(plate_w * rng.uniform(3.2, 4.6), w * 0.95))
    car_h = int(car_w * rng.uniform(0.55, 0.75))
    x0, x1 = centre_x - car_w // 2, centre_x + car_w // 2
    y1 = min(h - 1, plate_y + int(plate_w * rng.uniform(0.45, 0.7)))
    y0 = y1 - car_h
    body = (rng.randint(20, 235), rng.randint(20, 235), rng.randint(20, 235))
    cv2.rectangle(frame, (x0 + car_w // 20, y1 - 8), (x0 + car_w // 5, y1 + 20), (15, 15, 15), -1)
    cv2.rectangle(frame, (x1 - car_w // 5, y1 - 8), (x1 - car_w // 20, y1 + 20), (15, 15, 15), -1)
    cv2.rectangle(frame, (x0, y0 + car_h // 3), (x1, y1), body, -1)
    roof = np.array([[x0 + car_w // 8, y0 + car_h // 3], [x0 + car_w // 4, y0],
                     [x1 - car_w // 4, y0], [x1 - car_w // 8, y0 + car_h // 3]], np.int32)
    cv2.fillPoly(frame, [roof], body)
    glass = roof + np.array([[12, -6], [10, 8], [-10, 8], [-12, -6]], np.int32)
    cv2.fillPoly(frame, [glass], (60 + rng.randint(0, 40),) * 3)
    light = (30, 30, rng.randint(170, 230))
    cv2.rectangle(frame, (x0 + 6, y0 + car_h // 3 + 10), (x0 + car_w // 7, y0 + car_h // 2), light, -1)
    cv2.rectangle(frame, (x1 - car_w // 7, y0 + car_h // 3 + 10), (x1 - 6, y0 + car_h // 2), light, -1)
    bumper = tuple(int(c * 0.6) for c in body)
    cv2.rectangle(frame, (x0, y1 - car_h // 6), (x1, y1), bumper, -1)


def _plate_quad(rng: random.Random, centre: tuple[float, float], plate_w: float,
                plate_h: float) -> NDArray[np.float32]:
    """Corners (tl, tr, br, bl) of the plate in the frame: rotated, yawed and jittered."""
    angle = np.deg2rad(rng.uniform(-7.0, 7.0))
    yaw = rng.uniform(-0.12, 0.12)
    half_w, half_h = plate_w / 2, plate_h / 2
    pts = np.array([[-half_w, -half_h * (1 - yaw)], [half_w, -half_h * (1 + yaw)],
                    [half_w, half_h * (1 + yaw)], [-half_w, half_h * (1 - yaw)]], np.float32)
    pts += np.array([[rng.uniform(-0.04, 0.04) * plate_w, rng.uniform(-0.04, 0.04) * plate_h]
                     for _ in range(4)], np.float32)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    return (pts @ rot.T + np.array(centre, np.float32)).astype(np.float32)


def _paste_plate(frame: BgrImage, plate: BgrImage, quad: NDArray[np.float32]) -> Bbox:
    """Warp ``plate`` onto ``frame`` at ``quad``; return the clipped bounding box."""
    h, w = frame.shape[:2]
    ph, pw = plate.shape[:2]
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
    src = np.array([[0, 0], [pw - 1, 0], [pw - 1, ph - 1], [0, ph - 1]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, quad - np.array([x0, y0], np.float32))
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpPerspective(plate, matrix, size, flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((ph, pw), 255, np.uint8), matrix, size, flags=cv2.INTER_AREA)
    alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
    roi = frame[y0:y1, x0:x1]
    roi[:] = (roi * (1 - alpha) + warped * alpha).astype(np.uint8)
    return (x0, y0, x1 - x0, y1 - y0)


def _camera(rng: random.Random, frame: BgrImage) -> BgrImage:
    """Global lighting, blur, sensor noise and JPEG compression of the whole frame."""
    gain, bias = rng.uniform(0.6, 1.2), rng.uniform(-25, 20)
    out = cv2.convertScaleAbs(frame, alpha=gain, beta=bias)
    sigma = rng.uniform(0.0, 1.1)
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise = _gauss(rng, out.shape, rng.uniform(1.0, 6.0))
    img = cv2.add(out, noise, dtype=cv2.CV_8U)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(60, 95)])
    decoded: BgrImage = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else img
    return decoded


def road_scene_with_plate(rng: random.Random, width: int = 1280,
                          height: int = 720) -> tuple[BgrImage, PlateLabel]:
    """Render a road frame (BGR uint8, ``height`` x ``width``) with one car plate and its label."""
    frame = np.zeros((height, width, 3), np.uint8)
    horizon = int(height * rng.uniform(0.25, 0.4))
    _sky_and_buildings(rng, frame, horizon)
    _road(rng, frame, horizon)
    plate_img, label = render_plate(rng)
    plate = cv2.cvtColor(np.asarray(plate_img), cv2.COLOR_RGB2BGR)
    scale = min(width / 1280, height / 720)
    plate_w = rng.uniform(150, 250) * scale
    plate_h = plate_w * plate_img.height / plate_img.width
    cx = rng.uniform(width * 0.3, width * 0.7)
    cy = rng.uniform(max(horizon + plate_w, height * 0.55), height - plate_w * 0.8)
    _car(rng, frame, int(plate_w), int(cx), int(cy))
    bbox = _paste_plate(frame, plate, _plate_quad(rng, (cx, cy), plate_w, plate_h))
    return _camera(rng, frame), replace(label, bbox=bbox)


def plate_patch(rng: random.Random) -> tuple[BgrImage, PlateLabel]:
    """Render one plate on a patch of car body and bumper (BGR uint8) with the scene's camera effects."""
    plate_img, label = render_plate(rng)
    plate = cv2.cvtColor(np.asarray(plate_img), cv2.COLOR_RGB2BGR)
    plate_w = rng.uniform(150, 250)
    plate_h = plate_w * plate_img.height / plate_img.width
    width, height = int(plate_w * rng.uniform(1.6, 2.2)), int(plate_w * rng.uniform(0.9, 1.2))
    body = (rng.randint(20, 235), rng.randint(20, 235), rng.randint(20, 235))
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = body
    bumper_top = int(height * rng.uniform(0.55, 0.8))
    frame[bumper_top:] = tuple(int(c * 0.6) for c in body)
    centre = (width / 2 + rng.uniform(-0.1, 0.1) * width, height / 2 + rng.uniform(-0.08, 0.08) * height)
    bbox = _paste_plate(frame, plate, _plate_quad(rng, centre, plate_w, plate_h))
    return _camera(rng, frame), replace(label, bbox=bbox)
