"""A toy world with ground truth: seeded procedural clips, their true object masks, and edits.

A *scene* is a few numbers (`ToyScene`): a background (two-colour gradient, low-frequency texture, an
optional slow pan) and one or two textured objects (ellipse, box, triangle, diamond, flower; solid,
striped, checked, dotted or ringed) that translate, spin, pulse in scale and turn (squash as if rotating
about their vertical axis) along smooth paths; two objects may cross, one occluding the other. Rendering
is analytic (numpy only, supersampled edges), so any size that is a multiple of 16 and any 4k+1 frame
count work, e.g. 64x64x17 for CPU tests or 832x480x49 for real-model runs.

An *edit* (`make_edit`) changes one object's appearance — colour, pattern or shape — and renders the
scene again. Everything else is untouched, so the ground-truth edited clip differs from the source only
where that object is visible in the source or the edited clip (`ToyEdit.region`), pixel for pixel.

    edit = make_edit(3, kind="color", later_frames=(8,))   # the scene of seed 3, its first object recoloured
    edit.source.frames          # (F, H, W, 3) uint8, the clip to edit
    edit.edited_first_frame     # (H, W, 3) uint8, what a user would paint on frame 0
    edit.edited_later[8]        # (H, W, 3) uint8, an optional edited later frame (stage 2)
    edit.target.frames          # (F, H, W, 3) uint8, the ground-truth edited clip
    edit.source_mask            # (F, H, W) bool, the object's true (tight) mask in the source
    edit.region                 # (F, H, W) bool, every pixel the edit may change

Masks follow `maskedit.method.masks`: bool, True = object / region to edit. Frame f is rendered at clip time
t = f / (F − 1), so a longer clip samples the same motion more finely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import MaskEditError
from ..media.video import FrameShape, check_frame_count, check_size_multiple

DEFAULT_SIZE = (64, 64)  # (width, height) for CPU tests and the tiny model
DEFAULT_FRAMES = 17
REAL_SIZE = (832, 480)  # (width, height) for real-model runs
REAL_FRAMES = 49
DEFAULT_FPS = 16.0  # Wan2.1's native frame rate

SHAPES = ("ellipse", "box", "triangle", "diamond", "flower")
PATTERNS = ("solid", "stripes", "checks", "dots", "rings")
EDIT_KINDS = ("color", "pattern", "shape")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (214, 48, 49), "orange": (240, 140, 30), "yellow": (245, 215, 50), "green": (60, 170, 70),
    "teal": (30, 160, 160), "blue": (45, 95, 215), "purple": (140, 70, 190), "pink": (240, 120, 180),
    "white": (245, 245, 240), "black": (30, 30, 35),
}
"""Object colours by name (captions use the names)."""

BACKGROUND_PALETTE: dict[str, tuple[int, int, int]] = {
    "sand": (205, 185, 150), "sky": (140, 180, 215), "moss": (120, 150, 100), "slate": (95, 105, 120),
    "peach": (230, 175, 150), "lilac": (175, 160, 200), "grey": (150, 150, 150), "mint": (165, 210, 185),
}
"""Background colours by name: muted, so objects stand out."""

_PATTERN_WORDS = {"solid": "plain", "stripes": "striped", "checks": "checked", "dots": "dotted", "rings": "ringed"}


@dataclass(frozen=True)
class ToyObject:
    """One object and its path. Positions and sizes are fractions of the frame, angles radians.

    shape: one of SHAPES. pattern: one of PATTERNS. color, pattern_color: names from PALETTE.
    pattern_scale: pattern periods per object radius. size: radius as a fraction of min(width, height).
    aspect: height/width of the shape in its own frame (0.5..1.2). start, end: centre (x, y) as fractions
    of (width, height) at t = 0 and t = 1, eased between; wobble: amplitude (fraction of min side) of a
    sideways sine wobble (`wobble_cycles` periods per clip). angle, spin: rotation at t = 0 and its change
    over the clip. pulse: relative scale change amplitude (scale = 1 + pulse·sin(2π·t + pulse_phase)).
    turn: turns about the vertical axis over the clip (0 = none); the width is squashed by |cos|, at least
    to 0.3 of it.
    """

    shape: str = "ellipse"
    color: str = "red"
    pattern: str = "stripes"
    pattern_color: str = "white"
    pattern_scale: float = 1.5
    size: float = 0.2
    aspect: float = 0.8
    start: tuple[float, float] = (0.3, 0.4)
    end: tuple[float, float] = (0.7, 0.6)
    wobble: float = 0.02
    wobble_cycles: float = 1.0
    angle: float = 0.0
    spin: float = 0.6
    pulse: float = 0.08
    pulse_phase: float = 0.0
    turn: float = 0.0

    def describe(self) -> str:
        """'a red striped ellipse' (the pattern colour is left out of captions for brevity)."""
        word = _PATTERN_WORDS[self.pattern]
        adjective = f"{self.color} {word}" if self.pattern != "solid" else self.color
        article = "an" if adjective[0] in "aeiou" else "a"
        return f"{article} {adjective} {self.shape}"

    def describe_motion(self) -> str:
        """'moving to the upper left', 'drifting' (little motion), with ' while spinning' / ' while turning'."""
        dx, dy = self.end[0] - self.start[0], self.end[1] - self.start[1]
        words = "drifting" if math.hypot(dx, dy) < 0.05 else "moving " + _direction(dx, dy)
        if abs(self.spin) > 0.8:
            words += " while spinning"
        if self.turn:
            words += " and turning" if "while" in words else " while turning"
        return words


@dataclass(frozen=True)
class ToyBackground:
    """Gradient from `color_a` to `color_b` (BACKGROUND_PALETTE names) along `angle` (radians), times a
    low-frequency texture: `texture` holds (fx, fy, phase, amplitude) sine waves in cycles per frame.
    pan: (dx, dy) how far the background moves over the clip, as fractions of (width, height)."""

    color_a: str = "sand"
    color_b: str = "sky"
    angle: float = 0.5
    texture: tuple[tuple[float, float, float, float], ...] = ((1.0, 0.5, 0.0, 0.08), (0.5, 2.0, 1.0, 0.05))
    pan: tuple[float, float] = (0.0, 0.0)

    def describe(self) -> str:
        words = f"a soft {self.color_a} and {self.color_b} background"
        if math.hypot(*self.pan) >= 0.02:
            words += " panning " + _direction(*self.pan)
        return words


def _direction(dx: float, dy: float) -> str:
    """Compass words for an image-space direction (y down): 'right', 'to the upper left', ..."""
    sector = int(round(math.atan2(-dy, dx) / (math.pi / 4))) % 8
    return ("right", "to the upper right", "up", "to the upper left", "left", "to the lower left", "down",
            "to the lower right")[sector]


@dataclass(frozen=True)
class ToyScene:
    """A whole clip: size, frame count, frame rate, background, and objects back to front."""

    width: int = DEFAULT_SIZE[0]
    height: int = DEFAULT_SIZE[1]
    num_frames: int = DEFAULT_FRAMES
    fps: float = DEFAULT_FPS
    background: ToyBackground = field(default_factory=ToyBackground)
    objects: tuple[ToyObject, ...] = (ToyObject(),)
    seed: int | None = None

    def caption(self) -> str:
        """A caption of the clip, e.g. 'a red striped ellipse moving left and a blue box moving up on a soft
        sand and sky background' (what a captioner would say, without the trigger). The motion words give a
        model trained on toy clips what one frame cannot tell: where things go."""
        things = [f"{obj.describe()} {obj.describe_motion()}" for obj in self.objects]
        subject = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
        return f"{subject} on {self.background.describe()}"


@dataclass
class ToyClip(FrameShape):
    """A rendered scene.

    frames: (F, H, W, 3) uint8 RGB. masks: (K, F, H, W) bool, object k's *visible* pixels in frame f
    (covered at least partly by the object and not wholly hidden by an object in front). coverage:
    (K, F, H, W) float32 in [0, 1], the fraction of each pixel the object covers (before occlusion).
    """

    scene: ToyScene
    frames: np.ndarray
    masks: np.ndarray
    coverage: np.ndarray

    @property
    def fps(self) -> float:
        return self.scene.fps

    def caption(self) -> str:
        return self.scene.caption()


@dataclass
class ToyEdit:
    """An edit of one object with its ground truth.

    source, target: the clip before and after the edit (same scene but for object `object_index`).
    kind: one of EDIT_KINDS. region: (F, H, W) bool, where the object is visible in source or target — the
    two clips are equal everywhere else. source_mask: (F, H, W) bool, the object's visible pixels in the
    source (what a segmenter would give). edited_first_frame: (H, W, 3) uint8 = target frame 0.
    edited_later: {frame index: (H, W, 3) uint8} target frames given as edited later frames (stage 2).
    caption, edited_caption: captions of the source and of the edited first frame (no trigger).
    """

    source: ToyClip
    target: ToyClip
    object_index: int
    kind: str
    region: np.ndarray
    source_mask: np.ndarray
    edited_first_frame: np.ndarray
    edited_later: dict[int, np.ndarray]
    caption: str
    edited_caption: str
    name: str = ""

    @property
    def num_frames(self) -> int:
        return self.source.num_frames

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def width(self) -> int:
        return self.source.width


# ----- random scenes


def check_geometry(width: int, height: int, num_frames: int) -> None:
    check_size_multiple(int(width), int(height))
    check_frame_count(int(num_frames))


def random_object(rng: np.random.Generator, avoid: ToyObject | None = None, cross: ToyObject | None = None) -> ToyObject:
    """A random object; `avoid` gets another colour; with `cross`, the path passes through `cross`'s mid-clip
    position (so one occludes the other around t = 0.5)."""
    colors = [c for c in PALETTE if avoid is None or c != avoid.color]
    color = str(rng.choice(colors))
    pattern_color = str(rng.choice([c for c in PALETTE if c != color]))
    size = float(rng.uniform(0.14, 0.22))
    if cross is None:
        start = rng.uniform(0.25, 0.75, size=2)
        direction = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.12, 0.35)
        end = np.clip(start + distance * np.array([math.cos(direction), math.sin(direction)]), 0.22, 0.78)
    else:
        middle = 0.5 * (np.array(cross.start) + np.array(cross.end))
        direction = rng.uniform(0, 2 * math.pi)
        half = rng.uniform(0.15, 0.25) * np.array([math.cos(direction), math.sin(direction)])
        start, end = np.clip(middle - half, 0.15, 0.85), np.clip(middle + half, 0.15, 0.85)
    return ToyObject(
        shape=str(rng.choice(SHAPES)), color=color, pattern=str(rng.choice(PATTERNS)), pattern_color=pattern_color,
        pattern_scale=float(rng.uniform(1.0, 2.0)), size=size, aspect=float(rng.uniform(0.6, 1.0)),
        start=(float(start[0]), float(start[1])), end=(float(end[0]), float(end[1])),
        wobble=float(rng.uniform(0.0, 0.03)), wobble_cycles=float(rng.uniform(0.5, 1.5)),
        angle=float(rng.uniform(0, 2 * math.pi)), spin=float(rng.uniform(-1.2, 1.2)),
        pulse=float(rng.uniform(0.0, 0.12)), pulse_phase=float(rng.uniform(0, 2 * math.pi)),
        turn=float(rng.choice([0.0, 0.0, rng.uniform(0.2, 0.5)])),
    )


def random_background(rng: np.random.Generator, pan: bool | None = None) -> ToyBackground:
    names = list(BACKGROUND_PALETTE)
    a, b = rng.choice(len(names), size=2, replace=False)
    waves = tuple(
        (float(rng.uniform(-2.5, 2.5)), float(rng.uniform(-2.5, 2.5)), float(rng.uniform(0, 2 * math.pi)),
         float(rng.uniform(0.03, 0.09)))
        for _ in range(3)
    )
    if pan is None:
        pan = bool(rng.random() < 0.5)
    shift = (0.0, 0.0)
    if pan:
        direction = rng.uniform(0, 2 * math.pi)
        amount = rng.uniform(0.05, 0.2)
        shift = (float(amount * math.cos(direction)), float(amount * math.sin(direction)))
    return ToyBackground(names[a], names[b], float(rng.uniform(0, 2 * math.pi)), waves, shift)


def random_scene(
    seed: int,
    width: int = DEFAULT_SIZE[0],
    height: int = DEFAULT_SIZE[1],
    num_frames: int = DEFAULT_FRAMES,
    num_objects: int | None = None,
    pan: bool | None = None,
    occlusion: bool | None = None,
    fps: float = DEFAULT_FPS,
) -> ToyScene:
    """The scene of `seed`: 1 or 2 objects (None: random), a panning background or not (None: random),
    and with two objects, crossing paths (`occlusion`; None: half the time). Same arguments, same scene."""
    check_geometry(width, height, num_frames)
    rng = np.random.default_rng(seed)
    background = random_background(rng, pan)
    if num_objects is None:
        num_objects = int(rng.integers(1, 3))
    if num_objects not in (1, 2):
        raise MaskEditError(f"a toy scene has 1 or 2 objects, not {num_objects}")
    first = random_object(rng)
    objects = [first]
    if num_objects == 2:
        if occlusion is None:
            occlusion = bool(rng.random() < 0.5)
        objects.append(random_object(rng, avoid=first, cross=first if occlusion else None))
    return ToyScene(int(width), int(height), int(num_frames), float(fps), background, tuple(objects), int(seed))


# ----- rendering


def _rgb(name: str, palette: dict) -> np.ndarray:
    return np.asarray(palette[name], dtype=np.float64) / 255.0


def _background(scene: ToyScene, t: float) -> np.ndarray:
    """(H, W, 3) float64 in [0, 1] at clip time t."""
    bg = scene.background
    height, width = scene.height, scene.width
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    # Normalised coordinates of the background's own frame (it moves by `pan` over the clip).
    u = (xs + 0.5) / width - bg.pan[0] * t
    v = (ys + 0.5) / height - bg.pan[1] * t
    along = (u - 0.5) * math.cos(bg.angle) + (v - 0.5) * math.sin(bg.angle)
    mix = np.clip(0.5 + along, 0.0, 1.0)[..., None]
    color = _rgb(bg.color_a, BACKGROUND_PALETTE) * (1.0 - mix) + _rgb(bg.color_b, BACKGROUND_PALETTE) * mix
    texture = np.zeros_like(u)
    warm = np.zeros_like(u)
    for i, (fx, fy, phase, amp) in enumerate(bg.texture):
        wave = amp * np.sin(2 * math.pi * (fx * u + fy * v) + phase)
        texture += wave
        if i % 2:
            warm += 0.5 * wave
    color = color * (1.0 + texture[..., None]) + warm[..., None] * np.array([0.6, 0.2, -0.4])
    return np.clip(color, 0.0, 1.0)


def _pose(obj: ToyObject, scene: ToyScene, t: float) -> tuple[float, float, float, float, float]:
    """(centre x, centre y in pixels, angle, radius in pixels, width squash) at clip time t."""
    ease = 0.5 * t + 0.5 * t * t * (3.0 - 2.0 * t)  # smooth, but already moving at t = 0
    (x0, y0), (x1, y1) = obj.start, obj.end
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx * scene.width, dy * scene.height) or 1.0
    # Sideways wobble, perpendicular to the path (in pixels).
    side = obj.wobble * min(scene.width, scene.height) * math.sin(2 * math.pi * obj.wobble_cycles * t)
    nx, ny = -dy * scene.height / length, dx * scene.width / length
    cx = (x0 + dx * ease) * scene.width + side * nx
    cy = (y0 + dy * ease) * scene.height + side * ny
    scale = 1.0 + obj.pulse * math.sin(2 * math.pi * t + obj.pulse_phase)
    radius = obj.size * min(scene.width, scene.height) * scale
    squash = max(0.3, abs(math.cos(math.pi * obj.turn * t))) if obj.turn else 1.0
    return cx, cy, obj.angle + obj.spin * t, radius, squash


def _inside(shape: str, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    """Whether object-frame points (u, v) (unit = radius) lie in the shape."""
    if shape == "ellipse":
        return u * u + (v / aspect) ** 2 <= 1.0
    if shape == "box":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8 * aspect)
    if shape == "triangle":
        inside = np.ones(u.shape, dtype=bool)
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3  # edge normals; inradius 0.5 → circumradius 1
            inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
        return inside
    if shape == "diamond":
        return np.abs(u) + np.abs(v) / aspect <= 1.0
    if shape == "flower":
        r = np.hypot(u, v / aspect)
        return r <= 0.7 + 0.3 * np.cos(5 * np.arctan2(v, u))
    raise MaskEditError(f"unknown toy shape {shape!r}; use one of {SHAPES}")


def _pattern(pattern: str, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Weight of the pattern colour in [0, 1] at object-frame points (smooth, low-frequency)."""
    def soft(x):  # a softened square wave of a sine
        return np.clip(0.5 + 1.5 * x, 0.0, 1.0)

    f = math.pi * scale
    if pattern == "solid":
        return np.zeros_like(u)
    if pattern == "stripes":
        return soft(np.sin(f * u))
    if pattern == "checks":
        return soft(np.sin(f * u) * np.sin(f * v) * 2.0)
    if pattern == "dots":
        du = np.mod(u * scale + 0.5, 1.0) - 0.5
        dv = np.mod(v * scale + 0.5, 1.0) - 0.5
        return np.clip((0.32 - np.hypot(du, dv)) * 12.0, 0.0, 1.0)
    if pattern == "rings":
        return soft(np.sin(f * np.hypot(u, v) * 1.5))
    raise MaskEditError(f"unknown toy pattern {pattern!r}; use one of {PATTERNS}")


def _supersampling(scene: ToyScene) -> int:
    return 4 if min(scene.width, scene.height) <= 256 else 2


def _draw_object(obj: ToyObject, scene: ToyScene, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (H, W) float64 in [0, 1] and premultiplied colour (H, W, 3) of one object at time t."""
    height, width = scene.height, scene.width
    coverage = np.zeros((height, width))
    premultiplied = np.zeros((height, width, 3))
    cx, cy, angle, radius, squash = _pose(obj, scene, t)
    reach = radius * max(1.0, obj.aspect) * 1.3 + 2.0
    x0, x1 = max(0, int(math.floor(cx - reach))), min(width, int(math.ceil(cx + reach)))
    y0, y1 = max(0, int(math.floor(cy - reach))), min(height, int(math.ceil(cy + reach)))
    if x0 >= x1 or y0 >= y1:
        return coverage, premultiplied
    ss = _supersampling(scene)
    offsets = (np.arange(ss) + 0.5) / ss
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    dx, dy = X - cx, Y - cy
    cos, sin = math.cos(angle), math.sin(angle)
    u = (cos * dx + sin * dy) / (radius * squash)
    v = (-sin * dx + cos * dy) / radius
    inside = _inside(obj.shape, u, v, obj.aspect).astype(np.float64)
    weight = _pattern(obj.pattern, u, v, obj.pattern_scale)[..., None]
    color = _rgb(obj.color, PALETTE) * (1.0 - weight) + _rgb(obj.pattern_color, PALETTE) * weight
    shade = 1.0 + 0.12 * np.clip(-(u + v) * 0.5, -1.0, 1.0)  # light from the top left, in the object's frame
    color = np.clip(color * shade[..., None], 0.0, 1.0) * inside[..., None]
    h, w = y1 - y0, x1 - x0
    coverage[y0:y1, x0:x1] = inside.reshape(h, ss, w, ss).mean(axis=(1, 3))
    premultiplied[y0:y1, x0:x1] = color.reshape(h, ss, w, ss, 3).mean(axis=(1, 3))
    return coverage, premultiplied


def render(scene: ToyScene) -> ToyClip:
    """Render every frame of `scene`, with per-object coverage and visible masks (see ToyClip).

    Objects are composited back to front as out = out·(1 − a) + a·colour (premultiplied), so a pixel that an
    object does not touch (a = 0) is exactly what lies behind it, and a pixel that an object covers wholly
    (a = 1) is exactly the object: the basis of `ToyEdit`'s pixel-exact ground truth.
    """
    check_geometry(scene.width, scene.height, scene.num_frames)
    count, num_objects = scene.num_frames, len(scene.objects)
    frames = np.empty((count, scene.height, scene.width, 3), dtype=np.uint8)
    coverage = np.zeros((num_objects, count, scene.height, scene.width), dtype=np.float32)
    masks = np.zeros((num_objects, count, scene.height, scene.width), dtype=bool)
    for f in range(count):
        t = f / (count - 1) if count > 1 else 0.0
        out = _background(scene, t)
        hidden = np.zeros((scene.height, scene.width), dtype=bool)  # wholly covered by something in front
        layers = [_draw_object(obj, scene, t) for obj in scene.objects]
        for k, (alpha, premultiplied) in enumerate(layers):
            out = out * (1.0 - alpha[..., None]) + premultiplied
            coverage[k, f] = alpha
        for k in range(num_objects - 1, -1, -1):
            alpha = layers[k][0]
            masks[k, f] = (alpha > 0) & ~hidden
            hidden |= alpha >= 1.0
        frames[f] = np.clip(np.floor(out * 255.0 + 0.5), 0, 255).astype(np.uint8)
    return ToyClip(scene, frames, masks, coverage)


def render_clip(seed: int, width: int = DEFAULT_SIZE[0], height: int = DEFAULT_SIZE[1],
                num_frames: int = DEFAULT_FRAMES, **scene_options) -> ToyClip:
    """`render(random_scene(seed, ...))`: the toy clip of a seed."""
    return render(random_scene(seed, width, height, num_frames, **scene_options))


# ----- edits


def edit_object(obj: ToyObject, kind: str, rng: np.random.Generator) -> ToyObject:
    """The object with its appearance changed by `kind` ("color", "pattern" or "shape"); its path stays."""
    if kind == "color":
        color = str(rng.choice([c for c in PALETTE if c not in (obj.color, obj.pattern_color)]))
        pattern_color = obj.pattern_color
        if obj.pattern == "solid" or rng.random() < 0.5:
            pattern_color = str(rng.choice([c for c in PALETTE if c not in (color, obj.pattern_color)]))
        return replace(obj, color=color, pattern_color=pattern_color)
    if kind == "pattern":
        pattern = str(rng.choice([p for p in PATTERNS if p != obj.pattern]))
        return replace(obj, pattern=pattern, pattern_scale=float(rng.uniform(1.0, 2.0)))
    if kind == "shape":
        return replace(obj, shape=str(rng.choice([s for s in SHAPES if s != obj.shape])))
    raise MaskEditError(f"unknown toy edit {kind!r}; use one of {EDIT_KINDS}")


def make_edit(
    scene: ToyScene | int,
    kind: str = "color",
    object_index: int = 0,
    later_frames: tuple[int, ...] | list[int] = (),
    edit_seed: int | None = None,
    name: str = "",
    **scene_options,
) -> ToyEdit:
    """Edit object `object_index` of `scene` (or of `random_scene(seed, **scene_options)`) by `kind`.

    later_frames: indices 1..F−1 of target frames to hand out as edited later frames. edit_seed picks the
    new colour/pattern/shape (default: the scene's seed). Raises MaskEditError for a bad index or kind.
    """
    if not isinstance(scene, ToyScene):
        scene = random_scene(int(scene), **scene_options)
    if not 0 <= object_index < len(scene.objects):
        raise MaskEditError(f"the scene has {len(scene.objects)} object(s); object {object_index} does not exist")
    for index in later_frames:
        if not 1 <= index < scene.num_frames:
            raise MaskEditError(f"an edited later frame must be one of 1..{scene.num_frames - 1}, not {index}")
    rng = np.random.default_rng([edit_seed if edit_seed is not None else (scene.seed or 0), 7919, EDIT_KINDS.index(kind)
                                 if kind in EDIT_KINDS else 99])
    objects = list(scene.objects)
    objects[object_index] = edit_object(objects[object_index], kind, rng)
    edited_scene = replace(scene, objects=tuple(objects))
    source, target = render(scene), render(edited_scene)
    source_mask = source.masks[object_index]
    region = source_mask | target.masks[object_index]
    return ToyEdit(
        source=source, target=target, object_index=object_index, kind=kind, region=region,
        source_mask=source_mask.copy(), edited_first_frame=target.frames[0].copy(),
        edited_later={int(k): target.frames[k].copy() for k in later_frames},
        caption=scene.caption(), edited_caption=edited_scene.caption(),
        name=name or f"seed{scene.seed}-{kind}-obj{object_index}",
    )


BENCHMARK_EDITS = (
    # (seed, kind, object_index, scene options): a fixed, varied set — a colour edit on a lone object over a
    # panning background, a pattern edit on the occluded back object of a crossing pair, a shape edit on the
    # front object of a pair, a colour edit on the front object of a crossing pair.
    (11, "color", 0, dict(num_objects=1, pan=True)),
    (23, "pattern", 0, dict(num_objects=2, occlusion=True, pan=False)),
    (40, "shape", 1, dict(num_objects=2, occlusion=False, pan=True)),
    (52, "color", 1, dict(num_objects=2, occlusion=True, pan=True)),
)


def benchmark_edits(
    width: int = DEFAULT_SIZE[0], height: int = DEFAULT_SIZE[1], num_frames: int = DEFAULT_FRAMES,
    count: int | None = None, later_frame: int | None = None,
) -> list[ToyEdit]:
    """The method benchmark's fixed edits (the first `count` of BENCHMARK_EDITS), each with one edited
    later frame (default: the middle frame) for stage 2."""
    check_geometry(width, height, num_frames)
    later = later_frame if later_frame is not None else num_frames // 2
    chosen = BENCHMARK_EDITS[: count if count is not None else len(BENCHMARK_EDITS)]
    return [
        make_edit(random_scene(seed, width, height, num_frames, **options), kind, index, (later,) if num_frames > 1 else (),
                  name=f"{kind}-{seed}")
        for seed, kind, index, options in chosen
    ]
