"""Scenes, plate pose and camera of the evaluation-only renderer (:mod:`eval_scenes`).

Own code, not shared with the training renderer :mod:`synth`: backgrounds (parking lot, brick
wall, night street) behind the front or rear of a vehicle, a pinhole projection of the plate at yaw up
to +-30 degrees, and camera effects (shadow, glare, night infrared, motion or defocus blur, noise,
JPEG quality 20-95). Each function draws from the ``random.Random`` it is given, so a seed fixes the
image.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
from numpy.typing import NDArray

Bbox = tuple[int, int, int, int]
BgrImage = NDArray[np.uint8]
Mask = NDArray[np.float32]
MAX_YAW, MAX_PITCH, MAX_ROLL = 30.0, 15.0, 6.0


def _noise_field(gen: np.random.Generator, h: int, w: int, cell: int) -> NDArray[np.float32]:
    """Smooth noise in -1..1: a coarse random grid resized up to ``h`` x ``w``."""
    coarse = gen.uniform(-1.0, 1.0, (max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return np.asarray(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), np.float32)


def _parking(rng: random.Random, gen: np.random.Generator, frame: BgrImage) -> None:
    h, w = frame.shape[:2]
    base = rng.randint(90, 150)
    ground = base + 25 * _noise_field(gen, h, w, 40) + gen.normal(0, 5, (h, w)).astype(np.float32)
    frame[:] = np.clip(ground, 0, 255).astype(np.uint8)[:, :, None]
    for _ in range(rng.randint(3, 7)):
        x = rng.randint(0, w)
        cv2.line(frame, (x, 0), (x + rng.randint(-w // 3, w // 3), h), (225, 225, 225), rng.randint(4, 10))
    for _ in range(rng.randint(2, 5)):  # parked cars far away
        cx, cy, cw = rng.randint(0, w), rng.randint(0, h // 3), rng.randint(w // 10, w // 4)
        colour = tuple(rng.randint(20, 230) for _ in range(3))
        cv2.rectangle(frame, (cx, cy), (cx + cw, cy + cw // 2), colour, -1)


def _brick_wall(rng: random.Random, gen: np.random.Generator, frame: BgrImage) -> None:
    h, w = frame.shape[:2]
    mortar = rng.randint(150, 200)
    frame[:] = mortar
    bw, bh = rng.randint(40, 90), rng.randint(16, 30)
    for row, y in enumerate(range(0, h, bh)):
        offset = (bw // 2) * (row % 2)
        for x in range(-offset, w, bw):
            colour = (rng.randint(40, 80), rng.randint(60, 100), rng.randint(120, 180))
            cv2.rectangle(frame, (x + 2, y + 2), (x + bw - 2, y + bh - 2), colour, -1)
    shade = 1.0 + 0.15 * _noise_field(gen, h, w, 80)
    frame[:] = np.clip(frame * shade[:, :, None], 0, 255).astype(np.uint8)


def _night_street(rng: random.Random, gen: np.random.Generator, frame: BgrImage) -> None:
    h, w = frame.shape[:2]
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    level = 15 + 35 * t + 8 * _noise_field(gen, h, w, 60)
    frame[:] = np.clip(np.stack([level * 1.2, level, level * 0.8], axis=2), 0, 255).astype(np.uint8)
    for _ in range(rng.randint(2, 6)):  # street lamps with halos
        cx, cy, r = rng.randint(0, w), rng.randint(0, h // 3), rng.randint(6, 16)
        cv2.circle(frame, (cx, cy), r * 4, (60, 90, 110), -1)
        cv2.circle(frame, (cx, cy), r, (200, 240, 255), -1)
    frame[:] = cv2.GaussianBlur(frame, (0, 0), 3)


def _vehicle(rng: random.Random, frame: BgrImage, centre: tuple[float, float], plate_w: float) -> str:
    """Front (grille, headlights) or rear (window, red lamps) of a vehicle around the plate; returns which."""
    cx, cy = centre
    half = plate_w * rng.uniform(1.8, 2.6)
    top, bottom = cy - plate_w * rng.uniform(1.0, 1.5), cy + plate_w * rng.uniform(0.35, 0.6)
    body = tuple(rng.randint(15, 240) for _ in range(3))
    x0, x1 = int(cx - half), int(cx + half)
    cv2.rectangle(frame, (x0, int(top)), (x1, int(bottom)), body, -1)
    darker = tuple(int(c * 0.5) for c in body)
    cv2.rectangle(frame, (x0, int(cy - plate_w * 0.3)), (x1, int(bottom)), darker, -1)  # bumper
    front = rng.random() < 0.5
    lamp_y = int(top + (cy - top) * 0.35)
    lamp = (235, 240, 240) if front else (40, 40, rng.randint(170, 235))
    for lx in (x0 + int(half * 0.25), x1 - int(half * 0.25)):
        cv2.ellipse(frame, (lx, lamp_y), (int(half * 0.2), int(plate_w * 0.12)), 0, 0, 360, lamp, -1)
    if front:
        for gy in range(int(top + (cy - top) * 0.5), int(cy - plate_w * 0.35), max(4, int(plate_w * 0.06))):
            cv2.line(frame, (int(cx - half * 0.5), gy), (int(cx + half * 0.5), gy), (25, 25, 25),
                     max(2, int(plate_w * 0.02)))
    else:
        cv2.rectangle(frame, (int(cx - half * 0.7), int(top - plate_w * 0.6)), (int(cx + half * 0.7), int(top)),
                      (50, 55, 60), -1)
    return "front" if front else "rear"


def scene_background(rng: random.Random, width: int, height: int, centre: tuple[float, float],
                     plate_w: float) -> tuple[BgrImage, list[str]]:
    """A background scene with a vehicle whose plate area is at ``centre``; returns the frame and its tags."""
    gen = np.random.default_rng(rng.getrandbits(64))
    frame = np.zeros((height, width, 3), np.uint8)
    kind = rng.choice(("parking", "wall", "night"))
    {"parking": _parking, "wall": _brick_wall, "night": _night_street}[kind](rng, gen, frame)
    side = _vehicle(rng, frame, centre, plate_w)
    return frame, [kind, side]


def _pose_quad(rng: random.Random, plate_w: float, plate_h: float) -> tuple[NDArray[np.float32], float]:
    """Projected plate corners (tl, tr, br, bl) around (0, 0) under a random pinhole pose; and the yaw."""
    yaw = rng.uniform(-MAX_YAW, MAX_YAW)
    pitch, roll = rng.uniform(-MAX_PITCH, MAX_PITCH), rng.uniform(-MAX_ROLL, MAX_ROLL)
    a, b, c = (math.radians(v) for v in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    corners = np.array([[-plate_w / 2, -plate_h / 2, 0], [plate_w / 2, -plate_h / 2, 0],
                        [plate_w / 2, plate_h / 2, 0], [-plate_w / 2, plate_h / 2, 0]])
    distance = plate_w * rng.uniform(2.0, 6.0)  # focal length = distance: scale 1 at the plate's centre
    points = corners @ (rz @ ry @ rx).T + np.array([0, 0, distance])
    return (points[:, :2] * distance / points[:, 2:3]).astype(np.float32), yaw


def project_plate(rng: random.Random, frame: BgrImage, plate: BgrImage, centre: tuple[float, float],
                  plate_w: float) -> tuple[Bbox, Mask, str]:
    """Draw ``plate`` into ``frame`` in perspective at ``centre``; return its box, coverage mask and pose tag."""
    h, w = frame.shape[:2]
    ph, pw = plate.shape[:2]
    quad, yaw = _pose_quad(rng, plate_w, plate_w * ph / pw)
    quad += np.array(centre, np.float32)
    small_w = max(8, int(plate_w * 1.5))  # shrink first with area averaging: a direct warp would alias
    small = cv2.resize(plate, (small_w, max(4, int(small_w * ph / pw))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, quad)
    warped = cv2.warpPerspective(small, matrix, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((sh, sw), np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
    frame[:] = (frame * (1 - mask[:, :, None]) + warped * mask[:, :, None]).astype(np.uint8)
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
    pose = "yaw>20" if abs(yaw) > 20 else "yaw10-20" if abs(yaw) > 10 else "yaw<=10"
    return (x0, y0, x1 - x0, y1 - y0), mask, pose


def _blur(rng: random.Random, image: BgrImage) -> tuple[BgrImage, str | None]:
    kind = rng.choices(("none", "motion", "defocus"), weights=(0.4, 0.3, 0.3))[0]
    if kind == "motion":
        length = rng.randint(3, 9)
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        turn = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, turn, (length, length))
        return cv2.filter2D(image, -1, kernel / max(float(kernel.sum()), 1e-6)), "motion_blur"
    if kind == "defocus":
        radius = rng.uniform(1.0, 2.5)
        size = 2 * math.ceil(radius) + 1
        disk = np.zeros((size, size), np.float32)
        cv2.circle(disk, (size // 2, size // 2), int(round(radius)), 1.0, -1)
        return cv2.filter2D(image, -1, disk / float(disk.sum())), "defocus_blur"
    return image, None


def camera_effects(rng: random.Random, frame: BgrImage, plate_mask: Mask) -> tuple[BgrImage, list[str]]:
    """Lighting, optional night infrared, blur, noise and JPEG of a frame; returns the image and its tags."""
    gen = np.random.default_rng(rng.getrandbits(64))
    h, w = frame.shape[:2]
    img = frame.astype(np.float32)
    tags: list[str] = []
    ys, xs = np.nonzero(plate_mask > 0.5)
    pcx, pcy = (float(xs.mean()), float(ys.mean())) if len(xs) else (w / 2, h / 2)
    pw = float(xs.max() - xs.min()) if len(xs) else w / 8
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.3:  # shadow: one side of a line through the plate's neighbourhood is darker
        angle = rng.uniform(0, math.pi)
        side = (xx - pcx - rng.uniform(-pw, pw)) * math.cos(angle) + (yy - pcy) * math.sin(angle) > 0
        img[side] *= rng.uniform(0.45, 0.75)
        tags.append("shadow")
    if rng.random() < 0.25:  # glare: a bright blob near the plate
        gx, gy = pcx + rng.uniform(-0.6, 0.6) * pw, pcy + rng.uniform(-0.3, 0.3) * pw
        sigma = pw * rng.uniform(0.15, 0.4)
        img += rng.uniform(60, 150) * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * sigma**2))[:, :, None]
        tags.append("glare")
    if rng.random() < 0.2:  # night infrared: grey scene, the retro-reflective plate lit by the IR flash
        grey = img.mean(axis=2, keepdims=True) * rng.uniform(0.3, 0.6)
        lit = img.mean(axis=2, keepdims=True) * rng.uniform(0.9, 1.2) + rng.uniform(0, 40)
        img = np.repeat(grey * (1 - plate_mask[:, :, None]) + lit * plate_mask[:, :, None], 3, axis=2)
        tags.append("night_ir")
    else:
        img = img * rng.uniform(0.7, 1.15) + rng.uniform(-20, 20)
    out = np.clip(img, 0, 255).astype(np.uint8)
    out, blur = _blur(rng, out)
    tags += [blur] if blur else []
    out = np.clip(out + gen.normal(0, rng.uniform(2.0, 10.0), out.shape), 0, 255).astype(np.uint8)
    quality = rng.randint(20, 95)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode an evaluation scene")
    tags.append("jpeg<40" if quality < 40 else "jpeg40-70" if quality < 70 else "jpeg>=70")
    decoded: BgrImage = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return decoded, tags
