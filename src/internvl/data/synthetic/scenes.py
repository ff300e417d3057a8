"""Scenes of the built-in world: objects on a 3x3 grid, drawn once, described and questioned from the same draw.

Every caption and every answer is derived from the objects that were drawn, so a model can learn them
from the pixels (the point of the demo: loss falls and recall rises instead of fitting noise). The grid
is aligned with the ViT patches of the tiny presets (one 16-px cell = one patch), which keeps the
world learnable in minutes on a CPU.

A scene has 1-3 objects in distinct cells; each object has a colour, a shape and a size. Captions list
every object with all four attributes, so a caption identifies its image: two scenes with the same
`Scene.key` are the same picture, and the world (see `world.py`) keeps keys unique across splits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

GRID = 3
CELL = 16
IMAGE_SIZE = GRID * CELL
BACKGROUND = (24, 24, 24)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
    "cyan": (40, 215, 220),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"big": 7.0, "small": 4.0}  # half-extent in pixels inside a 16-px cell
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
NUMBERS = ("zero", "one", "two", "three", "four")
MAX_OBJECTS = 3
QUESTION_TYPES = ("colour", "shape", "count", "position", "relation", "exists")


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    cell: int  # 0..8, row-major

    @property
    def row(self) -> int:
        return self.cell // GRID

    @property
    def col(self) -> int:
        return self.cell % GRID

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    def phrase(self, with_size: bool = True) -> str:
        name = f"{self.size} {self.colour} {self.shape}" if with_size else f"{self.colour} {self.shape}"
        return f"a {name} {_at(self.position)}"


@dataclass(frozen=True)
class QA:
    """One question about a scene with its short answer; ``type`` is one of `QUESTION_TYPES`."""

    type: str
    question: str
    answer: str


@dataclass(frozen=True)
class Scene:
    """The objects of one image, in reading order (top-left to bottom-right)."""

    objects: tuple[SceneObject, ...]

    @property
    def key(self) -> str:
        """Canonical description: equal keys <=> equal pictures (up to the per-object pixel jitter)."""
        return "|".join(f"{o.cell}:{o.size}:{o.colour}:{o.shape}" for o in self.objects)

    def render(self, jitter: np.random.Generator | None = None) -> Image.Image:
        """Draw the scene as an RGB image of `IMAGE_SIZE` px; ``jitter`` moves each object by up to 1 px."""
        img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        img[:] = BACKGROUND
        yy, xx = np.mgrid[0:CELL, 0:CELL].astype(np.float64) + 0.5
        for o in self.objects:
            dy, dx = jitter.integers(-1, 2, size=2) if jitter is not None else (0, 0)
            mask = _shape_mask(o.shape, SIZES[o.size], yy - CELL / 2 - dy, xx - CELL / 2 - dx)
            cell = img[o.row * CELL : (o.row + 1) * CELL, o.col * CELL : (o.col + 1) * CELL]
            cell[mask] = COLOURS[o.colour]
        return Image.fromarray(img, mode="RGB")

    def captions(self, rng: np.random.Generator, n: int = 3) -> list[str]:
        """``n`` distinct-where-possible captions; the first lists the objects in reading order."""
        out = [_join([o.phrase() for o in self.objects])]
        templates = ("there is {}", "an image with {}", "{}", "a picture of {}")
        for _ in range(50):
            if len(out) >= n:
                break
            order = list(rng.permutation(len(self.objects)))
            body = _join([self.objects[i].phrase() for i in order])
            caption = templates[int(rng.integers(len(templates)))].format(body)
            if caption not in out:
                out.append(caption)
        while len(out) < n:
            out.append(out[len(out) % len(out)])
        return out[:n]

    def questions(self, rng: np.random.Generator) -> list[QA]:
        """At most one question per type (in `QUESTION_TYPES` order); types a scene cannot pose are skipped.

        ``colour``: colour of a shape that occurs once; ``shape``: the shape at an occupied position;
        ``count``: number of objects; ``position``: where a colour+shape is; ``relation``: whether one
        object is left/right/above/below another in the same row or column; ``exists``: yes/no for an
        object that is present or absent (balanced by a coin flip).
        """
        objs = self.objects
        qa: list[QA] = []
        shapes = [o.shape for o in objs]
        unique = [o for o in objs if shapes.count(o.shape) == 1]
        if unique:
            o = unique[int(rng.integers(len(unique)))]
            qa.append(QA("colour", f"What colour is the {o.shape}?", o.colour))
        o = objs[int(rng.integers(len(objs)))]
        qa.append(QA("shape", f"What shape is {_at(o.position)}?", o.shape))
        qa.append(QA("count", "How many objects are there?", NUMBERS[len(objs)]))
        names = [(o.colour, o.shape) for o in objs]
        named = [o for o in objs if names.count((o.colour, o.shape)) == 1]
        if named:
            o = named[int(rng.integers(len(named)))]
            qa.append(QA("position", f"Where is the {o.colour} {o.shape}?", o.position))
        pairs = [(a, b) for a in named for b in named if a is not b and (a.row == b.row or a.col == b.col)]
        if pairs:
            a, b = pairs[int(rng.integers(len(pairs)))]
            rel = ("left" if a.col < b.col else "right") if a.row == b.row else ("above" if a.row < b.row else "below")
            qa.append(
                QA(
                    "relation",
                    f"Where is the {a.colour} {a.shape} relative to the {b.colour} {b.shape}? "
                    "Answer left, right, above or below.",
                    rel,
                )
            )
        colour, shape = self.probe(rng)
        answer = "yes" if (colour, shape) in names else "no"
        qa.append(QA("exists", f"Is there {_a(colour)} {colour} {shape}? Please answer yes or no.", answer))
        return qa

    def probe(self, rng: np.random.Generator, present: bool | None = None) -> tuple[str, str]:
        """A (colour, shape) that is present (``present`` True), absent (False) or either (None, fair coin)."""
        names = [(o.colour, o.shape) for o in self.objects]
        if present is None:
            present = bool(rng.integers(2))
        if present:
            return names[int(rng.integers(len(names)))]
        while True:
            cand = (list(COLOURS)[int(rng.integers(len(COLOURS)))], SHAPES[int(rng.integers(len(SHAPES)))])
            if cand not in names:
                return cand


def random_scene(rng: np.random.Generator, max_objects: int = MAX_OBJECTS, min_objects: int = 1) -> Scene:
    """One scene: min_objects..max_objects objects in distinct cells, attributes uniform and independent."""
    n = int(rng.integers(min_objects, max_objects + 1))
    cells = sorted(int(c) for c in rng.choice(GRID * GRID, size=n, replace=False))
    colours = list(COLOURS)
    objects = tuple(
        SceneObject(
            colours[int(rng.integers(len(colours)))],
            SHAPES[int(rng.integers(len(SHAPES)))],
            list(SIZES)[int(rng.integers(len(SIZES)))],
            c,
        )
        for c in cells
    )
    return Scene(objects)


def scene_stream(seed: int, min_objects: int = 1) -> Iterator[Scene]:
    """An endless deterministic stream of scenes with pairwise distinct keys."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    while True:
        scene = random_scene(rng, min_objects=min_objects)
        if scene.key not in seen:
            seen.add(scene.key)
            yield scene


def synthetic_scene(seed: int) -> tuple[Image.Image, list[str], list[QA]]:
    """(image, captions, questions) of one seeded scene, all from a single random draw."""
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    return scene.render(rng), scene.captions(rng), scene.questions(rng)


def synthetic_image(seed: int, size: int = 64) -> Image.Image:
    """A deterministic RGB image of coloured rectangles on a gradient (varied content per seed).

    Kept for the tests and the untrained demo, which only need varied pixels; `Scene.render` draws the
    learnable world.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 / size, y * 255 / size, np.full_like(x, 128)], axis=-1).astype(np.float64)
    base = base * rng.uniform(0.3, 1.0, size=3)
    for _ in range(3):
        x0, y0 = rng.integers(0, size // 2, size=2)
        w, h = rng.integers(size // 8, size // 2, size=2)
        base[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, size=3)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8), mode="RGB")


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _at(position: str) -> str:
    return "in the center" if position == "center" else f"at the {position}"


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _shape_mask(shape: str, r: float, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return y * y + x * x <= r * r
    if shape == "square":
        return (np.abs(y) <= r * 0.85) & (np.abs(x) <= r * 0.85)
    if shape == "diamond":
        return np.abs(y) + np.abs(x) <= r
    if shape == "triangle":  # apex up: width grows linearly from the top edge to the bottom edge
        return (y >= -r) & (y <= r) & (np.abs(x) <= (y + r) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
