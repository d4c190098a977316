"""Procedurally drawn clips with a known object mask, for segmentation tests and benchmarks.

A textured object (a disc, square, triangle, star, ellipse or blob) moves over a textured background,
bouncing off the frame's edges; the background may pan. Every frame's true object pixels are known,
so a segmenter's result (and its loose boxes) can be scored exactly. Nothing here needs a model or a
download; the same seed always draws the same clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SHAPES = ("disc", "square", "triangle", "star", "ellipse", "blob")
TEXTURES = ("noise", "stripes", "checker", "dots", "gradient")


@dataclass
class Scene:
    """A drawn clip: frames (F, H, W, 3) uint8, the object's true region (F, H, W) bool, and a point
    (x, y) well inside the object on frame 0, where a user would click."""

    frames: np.ndarray
    region: np.ndarray
    fps: float
    click: tuple[float, float]

    def click_on(self, frame_index: int) -> tuple[float, float]:
        """A point well inside the object on frame `frame_index` (its deepest interior pixel)."""
        return _deepest_point(self.region[frame_index])


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    hue = hue % 1.0
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = value * (1 - saturation), value * (1 - f * saturation), value * (1 - (1 - f) * saturation)
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255


def _palette(rng: np.random.Generator, hue_range: tuple[float, float], count: int = 3) -> list[np.ndarray]:
    low, high = hue_range
    return [_hsv_to_rgb(rng.uniform(low, high), rng.uniform(0.45, 0.9), rng.uniform(0.45, 0.95)) for _ in range(count)]


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Noise in [0, 1] varying over about `cell` pixels (bicubic upsampling of a coarse grid)."""
    coarse = rng.random((max(2, height // cell + 2), max(2, width // cell + 2))).astype(np.float32)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    return np.clip(np.asarray(image), 0.0, 1.0)


def texture(kind: str, height: int, width: int, colors: list[np.ndarray], rng: np.random.Generator,
            scale: float = 10.0) -> np.ndarray:
    """An (H, W, 3) float32 RGB texture (0..255) of a `kind` in TEXTURES, drawn with `colors`."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b, c = colors[0], colors[1], colors[2 % len(colors)]
    if kind == "noise":
        n1 = _smooth_noise(rng, height, width, int(scale))[..., None]
        n2 = _smooth_noise(rng, height, width, max(2, int(scale / 3)))[..., None]
        image = a * (1 - n1) + b * n1
        image = image * (0.8 + 0.4 * n2) + (c - image) * 0.15 * n2
    elif kind == "stripes":
        angle = rng.uniform(0, np.pi)
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) / scale
        t = (np.sin(phase * 2 * np.pi) > 0).astype(np.float32)[..., None]
        image = a * (1 - t) + b * t
    elif kind == "checker":
        t = ((xs // scale + ys // scale) % 2).astype(np.float32)[..., None]
        image = a * (1 - t) + b * t
    elif kind == "dots":
        image = np.broadcast_to(a, (height, width, 3)).copy()
        spacing = scale * 1.6
        cy = (ys + rng.uniform(0, spacing)) % spacing - spacing / 2
        cx = (xs + rng.uniform(0, spacing)) % spacing - spacing / 2
        dot = (cx ** 2 + cy ** 2 < (scale * 0.45) ** 2)[..., None]
        image = np.where(dot, b, image)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = xs * np.cos(angle) + ys * np.sin(angle)
        t = ((t - t.min()) / max(1e-6, t.max() - t.min()))[..., None]
        image = a * (1 - t) + b * t
        image = image + (c - image) * 0.3 * _smooth_noise(rng, height, width, int(scale))[..., None]
    else:
        raise ValueError(f"unknown texture {kind!r}; one of {TEXTURES}")
    grain = rng.normal(0.0, 6.0, (height, width, 1)).astype(np.float32)
    return np.clip(image + grain, 0, 255).astype(np.float32)


def shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A bool (size, size) mask of a shape in SHAPES, touching the square's edges (roughly)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xs + 0.5) / size * 2 - 1
    v = (ys + 0.5) / size * 2 - 1
    if kind == "disc":
        mask = u ** 2 + v ** 2 <= 1.0
    elif kind == "square":
        mask = (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9)
    elif kind == "ellipse":
        mask = u ** 2 + (v / 0.55) ** 2 <= 1.0
    elif kind == "triangle":
        mask = (v <= 0.9) & (v >= 1.9 * np.abs(u) - 0.95)
    elif kind == "star":
        radius = np.hypot(u, v)
        angle = np.arctan2(v, u)
        mask = radius <= 0.55 + 0.4 * np.cos(5 * angle) ** 2
    elif kind == "blob":
        noise = _smooth_noise(rng, size, size, max(3, size // 4))
        mask = np.hypot(u, v) <= 0.6 + 0.35 * noise
    else:
        raise ValueError(f"unknown shape {kind!r}; one of {SHAPES}")
    return mask


def _deepest_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of a pixel of `mask` farthest from its edge (a good place for a click)."""
    import cv2

    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(x), float(y)


def _bounce(start: float, velocity: float, low: float, high: float, steps: int) -> np.ndarray:
    """Positions start + velocity*t reflected into [low, high]."""
    span = max(high - low, 1e-6)
    raw = start - low + velocity * np.arange(steps)
    folded = np.mod(raw, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def moving_object_clip(
    num_frames: int = 17,
    width: int = 192,
    height: int = 112,
    shape: str = "disc",
    object_texture: str = "stripes",
    background: str = "noise",
    speed: float = 3.0,
    size: float = 0.35,
    pan: float = 0.0,
    seed: int = 0,
    fps: float = 16.0,
) -> Scene:
    """Draw a clip of a textured object moving at `speed` pixels per frame over a textured background.

    size: the object's side as a fraction of the frame's smaller side. pan: background motion in pixels
    per frame (a camera pan). Object colours are warm, background colours cool, with random hues,
    saturations and brightnesses, so they overlap in brightness but not in hue.
    """
    rng = np.random.default_rng(seed)
    side = max(8, int(round(size * min(width, height))))
    sprite_mask = shape_mask(shape, side, rng)
    object_colors = _palette(rng, (-0.08, 0.17))  # reds, oranges, yellows
    background_colors = _palette(rng, (0.3, 0.7))  # greens, cyans, blues
    sprite = texture(object_texture, side, side, object_colors, rng, scale=max(3.0, side / 6))
    pan_extent = int(np.ceil(abs(pan) * num_frames)) + 1
    backdrop = texture(background, height + pan_extent, width + pan_extent, background_colors, rng,
                       scale=max(4.0, min(width, height) / 12))

    angle = rng.uniform(0, 2 * np.pi)
    x0 = rng.uniform(0, width - side)
    y0 = rng.uniform(0, height - side)
    xs = _bounce(x0, speed * np.cos(angle), 0, width - side, num_frames)
    ys = _bounce(y0, speed * np.sin(angle), 0, height - side, num_frames)
    pan_angle = rng.uniform(0, 2 * np.pi)

    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    region = np.zeros((num_frames, height, width), dtype=bool)
    for t in range(num_frames):
        ox = int(round(abs(pan) * t * (0.5 + 0.5 * np.cos(pan_angle))))
        oy = int(round(abs(pan) * t * (0.5 + 0.5 * np.sin(pan_angle))))
        image = backdrop[oy:oy + height, ox:ox + width].copy()
        left, top = int(round(xs[t])), int(round(ys[t]))
        window = image[top:top + side, left:left + side]
        window[sprite_mask] = sprite[sprite_mask]
        region[t, top:top + side, left:left + side] = sprite_mask
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return Scene(frames, region, fps, _deepest_point(region[0]))


def uniform_clip(num_frames: int = 5, width: int = 96, height: int = 64, color=(128, 128, 128)) -> np.ndarray:
    """Frames of one flat colour: nothing in them can be told apart from anything else."""
    return np.broadcast_to(np.array(color, dtype=np.uint8), (num_frames, height, width, 3)).copy()
