"""Embedded image benchmarks, generated from a seed without files: ``synthetic-waterbirds``,
``synthetic-celeba`` and ``colored-digits``.

Each mirrors a real benchmark's group composition (Table 2 via ``scaled_counts``). The class is carried
by a small foreground feature whose position, size, rotation and colour are randomised (so colour and
position never leak the class), the spurious attribute by a large, easy one (background hue and texture,
or stroke colour), and pixel noise is added: a network picks the spurious feature up first, so plain
ERM has a worst-group accuracy well below its average accuracy while the core feature stays learnable.
Images are uint8 arrays (N, image_size, image_size, 3).
"""

from __future__ import annotations

import numpy as np

from trainables.data.base import MAX_IMAGE_SIZE, SPLITS, GroupDataset, Split, register_dataset
from trainables.data.synthetic import check_int, group_labels, options_check, split_group_counts, split_streams
from trainables.errors import GroupsweepError

MIN_IMAGE_SIZE = 16
IMAGE_SIZE_BOUNDS = {"image_size": (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)}
# Difficulty of the features, calibrated so that plain ERM on a small network trained from scratch has a
# worst-group accuracy far below its average while group-balanced training recovers the core feature.
BIRD_RADIUS = (0.18, 0.28)  # bird radius as a fraction of the image side
BIRD_VALUE = (0.7, 1.0)  # HSV value range of the bird colour (hue and saturation are uniform)
# Waterbirds' two shape families: solid "landbirds" vs hollow "waterbirds".
BIRD_FAMILIES = (("disc", "square"), ("ring", "frame"))
BACKGROUND_TEXTURE = 0.12  # amplitude of the land blotches and water waves
HAIR_STRIPE_SHADE = 0.25  # brightness factor of the dark stripes of "blond" hair (1 = invisible)
PIXEL_NOISE = 0.03  # standard deviation of the Gaussian pixel noise (image values in [0, 1])
_PIXELS_PER_CHUNK = 1 << 22  # bounds float32 temporaries to ~16 MB each, whatever image_size is


# ---------------------------------------------------------------------------------------------
# Vectorised drawing primitives. Coordinates are in [0, 1]; per-example parameters are (n,) arrays.
# ---------------------------------------------------------------------------------------------

def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1], shaped (1, size, 1) for rows and (1, 1, size) for columns."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size)
    return c[None, :, None], c[None, None, :]


def _local(size: int, cy, cx, radius, angle) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (n, size, size) relative to each example's centre, rotated by ``angle`` and divided by ``radius``."""
    yy, xx = _grid(size)
    dy = (yy - cy[:, None, None]) / radius[:, None, None]
    dx = (xx - cx[:, None, None]) / radius[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    return cos * dy - sin * dx, sin * dy + cos * dx


# Shapes inside the unit disc, as functions of rotated local coordinates (dy, dx) -> bool mask.
_SHAPES = {
    "disc": lambda dy, dx: dy * dy + dx * dx <= 1.0,
    "square": lambda dy, dx: np.maximum(np.abs(dy), np.abs(dx)) <= 0.8,
    "ring": lambda dy, dx: np.abs(np.sqrt(dy * dy + dx * dx) - 0.75) <= 0.25,
    "frame": lambda dy, dx: np.abs(np.maximum(np.abs(dy), np.abs(dx)) - 0.6) <= 0.2,
}


def _shape_mask(kinds: np.ndarray, names: tuple[str, ...], dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Mask (n, H, W) where example i draws shape ``names[kinds[i]]``."""
    mask = np.zeros(dy.shape, dtype=bool)
    for k, name in enumerate(names):
        chosen = kinds == k
        if chosen.any():
            mask[chosen] = _SHAPES[name](dy[chosen], dx[chosen])
    return mask


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for (n,) arrays with values in [0, 1]; returns (n, 3) float32."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([
        np.stack([v, t, p], 1), np.stack([q, v, p], 1), np.stack([p, v, t], 1),
        np.stack([p, q, v], 1), np.stack([t, p, v], 1), np.stack([v, p, q], 1),
    ])
    return table[i, np.arange(len(i))].astype(np.float32)


def _lerp_colour(a, b, t: np.ndarray) -> np.ndarray:
    """Colours (n, 3) interpolated between RGB ``a`` and ``b`` at fractions ``t``."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a + (b - a) * t[:, None].astype(np.float32)


def _render(n: int, size: int, rng: np.random.Generator, paint) -> np.ndarray:
    """uint8 images (n, size, size, 3) from ``paint(rows, rng)``, which returns float images in [0, 1]
    (values outside are clipped) of the examples ``rows``, shape (len(rows), size, size, 3).

    Examples are painted in chunks only to bound memory; for a given (n, size) the chunks, and so the
    order in which ``paint`` consumes ``rng``, are fixed, so the result is deterministic.
    """
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    chunk = max(1, _PIXELS_PER_CHUNK // (size * size))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        image = paint(rows, rng)
        out[rows] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def _noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian noise of standard deviation ``sigma``, float32."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


# ---------------------------------------------------------------------------------------------
# synthetic-waterbirds
# ---------------------------------------------------------------------------------------------

def _waterbirds_images(y: np.ndarray, s: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Birds (class: shape family) on land or water (attribute: background colour and texture)."""
    n = len(y)
    # Background: land = green-to-brown with blotches; water = blue-to-teal with horizontal waves.
    land = _lerp_colour((0.30, 0.45, 0.18), (0.52, 0.40, 0.24), rng.random(n))
    water = _lerp_colour((0.14, 0.32, 0.70), (0.12, 0.52, 0.58), rng.random(n))
    base = np.where(s[:, None] == 1, water, land) + _noise(rng, (n, 3), 0.04)
    freq = rng.uniform(1.5, 3.0, (n, 2)).astype(np.float32)
    wave = rng.uniform(4.0, 7.0, n).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 3)).astype(np.float32)
    # Bird: one of two shapes of its class family, random place, size, rotation and colour.
    kind = rng.integers(0, len(BIRD_FAMILIES[0]), n)
    radius = rng.uniform(*BIRD_RADIUS, n).astype(np.float32)
    cy = rng.uniform(0.25, 0.75, n).astype(np.float32)
    cx = rng.uniform(0.25, 0.75, n).astype(np.float32)
    angle = rng.uniform(0, np.pi / 2, n).astype(np.float32)
    colour = _hsv_to_rgb(rng.random(n), rng.uniform(0.3, 1.0, n), rng.uniform(*BIRD_VALUE, n))

    def paint(rows, chunk_rng):
        yy, xx = _grid(size)
        ph = phase[rows, :, None, None]
        blotch = np.sin(2 * np.pi * freq[rows, 0, None, None] * xx + ph[:, 0]) * np.sin(
            2 * np.pi * freq[rows, 1, None, None] * yy + ph[:, 1])
        waves = np.sin(2 * np.pi * (wave[rows, None, None] * yy + 0.15 * np.sin(2 * np.pi * 2 * xx + ph[:, 2])))
        texture = np.where(s[rows, None, None] == 1, waves, blotch) * BACKGROUND_TEXTURE
        image = base[rows, None, None, :] + texture[..., None]
        dy, dx = _local(size, cy[rows], cx[rows], radius[rows], angle[rows])
        bird = np.zeros(dy.shape, dtype=bool)
        for c, family in enumerate(BIRD_FAMILIES):
            of_class = y[rows] == c
            bird[of_class] = _shape_mask(kind[rows][of_class], family, dy[of_class], dx[of_class])
        image = np.where(bird[..., None], colour[rows, None, None, :], image)
        return image + _noise(chunk_rng, image.shape, PIXEL_NOISE)

    return _render(n, size, rng, paint)


# ---------------------------------------------------------------------------------------------
# synthetic-celeba
# ---------------------------------------------------------------------------------------------

def _celeba_images(y: np.ndarray, s: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Faces whose hair is striped ("blond") or plain, on warm ("female") or cool ("male") backgrounds."""
    n = len(y)
    hue = np.where(s == 1, rng.uniform(0.47, 0.67, n), rng.uniform(-0.08, 0.1, n))
    background = _hsv_to_rgb(hue, rng.uniform(0.45, 0.75, n), rng.uniform(0.6, 0.9, n))
    stripes_bg = rng.uniform(2.0, 4.0, n).astype(np.float32)
    cy = rng.uniform(0.5, 0.62, n).astype(np.float32)
    cx = rng.uniform(0.38, 0.62, n).astype(np.float32)
    rx = rng.uniform(0.17, 0.24, n).astype(np.float32)
    ry = rx * rng.uniform(1.15, 1.35, n).astype(np.float32)
    skin = _lerp_colour((0.96, 0.82, 0.70), (0.42, 0.28, 0.20), rng.random(n))
    hair = _hsv_to_rgb(rng.random(n), rng.uniform(0.2, 0.8, n), rng.uniform(0.25, 0.95, n))
    period = rng.uniform(0.07, 0.11, n).astype(np.float32)
    tilt = rng.uniform(0, np.pi, n).astype(np.float32)

    def paint(rows, chunk_rng):
        yy, xx = _grid(size)
        # Background texture: a smooth vertical gradient (female) or soft diagonal bands (male).
        gradient = np.broadcast_to((yy - 0.5) * 0.25, (1, size, size))
        bands = 0.1 * np.sin(2 * np.pi * stripes_bg[rows, None, None] * (xx + yy))
        texture = np.where(s[rows, None, None] == 1, bands, gradient)
        image = background[rows, None, None, :] + texture[..., None]
        ey = (yy - cy[rows, None, None]) / ry[rows, None, None]
        ex = (xx - cx[rows, None, None]) / rx[rows, None, None]
        face = ey * ey + ex * ex <= 1.0
        head = (ey / 1.25) ** 2 + (ex / 1.25) ** 2 <= 1.0
        hair_region = (head & ~face & (ey < 0.25)) | (face & (ey < -0.55))
        # The class: hair with fine stripes of random orientation ("blond") or plain hair.
        along = np.cos(tilt[rows, None, None]) * yy + np.sin(tilt[rows, None, None]) * xx
        striped = np.sin(2 * np.pi * along / period[rows, None, None]) > 0
        shade = np.where(striped & (y[rows, None, None] == 1), np.float32(HAIR_STRIPE_SHADE), np.float32(1.0))
        hair_colour = hair[rows, None, None, :] * shade[..., None]
        eyes = face & (np.abs(ey + 0.15) < 0.14) & (np.abs(np.abs(ex) - 0.4) < 0.14)
        image = np.where(face[..., None], skin[rows, None, None, :], image)
        image = np.where(hair_region[..., None], hair_colour, image)
        image = np.where(eyes[..., None], 0.1, image)
        return image + _noise(chunk_rng, image.shape, PIXEL_NOISE)

    return _render(n, size, rng, paint)


# ---------------------------------------------------------------------------------------------
# colored-digits
# ---------------------------------------------------------------------------------------------

DIGIT_CLASS_NAMES = ("0-4", "5-9")
DIGIT_COLOURS = {"red": (0.9, 0.15, 0.15), "green": (0.15, 0.85, 0.25)}


def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) matrix resampling a length-``src`` signal to ``dst`` samples by bilinear interpolation."""
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    low = np.floor(pos).astype(int)
    high = np.minimum(low + 1, src - 1)
    frac = pos - low
    matrix = np.zeros((dst, src))
    matrix[np.arange(dst), low] += 1 - frac
    matrix[np.arange(dst), high] += frac
    return matrix


def _digit_images(digits: np.ndarray, s: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """8x8 digit intensities (n, 8, 8) in [0, 16] upsampled to ``size`` and stroked in the colour of ``s``."""
    n = len(digits)
    resample = _bilinear_matrix(digits.shape[1], size).astype(np.float32)
    colours = np.asarray(list(DIGIT_COLOURS.values()), np.float32)
    stroke = colours[s] + _noise(rng, (n, 3), 0.04)
    paper = rng.uniform(0.05, 0.2, n).astype(np.float32)

    def paint(rows, chunk_rng):
        ink = np.einsum("hi,nij,wj->nhw", resample, digits[rows].astype(np.float32) / 16.0, resample)
        ink = ink[..., None]
        image = paper[rows, None, None, None] * (1 - ink) + stroke[rows, None, None, :] * ink
        return image + _noise(chunk_rng, image.shape, PIXEL_NOISE)

    return _render(n, size, rng, paint)


def _digit_pools(counts: dict[str, np.ndarray], digit_class: np.ndarray, n_spurious: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint per-split index lists into the digit images, ``counts[split][g]`` images of each group's class.

    Raises a one-line GroupsweepError when a class has too few images for the requested sizes.
    """
    needed = {split: c.reshape(-1, n_spurious).sum(1) for split, c in counts.items()}
    pools = {split: [] for split in counts}
    for c in range(len(DIGIT_CLASS_NAMES)):
        available = rng.permutation(np.flatnonzero(digit_class == c))
        total = sum(int(needed[split][c]) for split in counts)
        if total > len(available):
            raise GroupsweepError(
                f"dataset 'colored-digits': size+val_size+test_size need {total} images of class "
                f"{DIGIT_CLASS_NAMES[c]!r} but only {len(available)} exist (1797 digits in all); lower the sizes"
            )
        start = 0
        for split in counts:
            pools[split].append(available[start:start + needed[split][c]])
            start += needed[split][c]
    return pools


# ---------------------------------------------------------------------------------------------
# Registered builders
# ---------------------------------------------------------------------------------------------

def _generated(name: str, real: str, draw, class_names, attribute_names, average, sizes: dict[str, int], seed,
               image_size, meta: dict | None = None) -> GroupDataset:
    """Build a dataset whose split images ``draw(split, y, s, image_size, rng)`` generates.

    ``sizes`` maps each split to its size; group counts come from the real benchmark ``real``.
    """
    image_size = check_int(name, "image_size", image_size, *IMAGE_SIZE_BOUNDS["image_size"])
    counts = split_group_counts(name, real, sizes)
    streams = split_streams(name, seed)
    splits = {}
    for split in SPLITS:
        y, s = group_labels(streams[split], counts[split], len(attribute_names))
        splits[split] = Split(draw(split, y, s, image_size, streams[split]), y, s)
    return GroupDataset(
        name=name, modality="image", splits=splits, class_names=class_names, attribute_names=attribute_names,
        average=average, image_size=image_size,
        meta={"embedded": True, "mirrors": real, "seed": seed, **(meta or {})},
    )


@register_dataset("synthetic-waterbirds", modality="image",
                  check_options=options_check("synthetic-waterbirds", "waterbirds", IMAGE_SIZE_BOUNDS))
def synthetic_waterbirds(size: int = 2000, val_size: int = 600, test_size: int = 1000, seed: int = 0,
                         image_size: int = 32) -> GroupDataset:
    """Waterbirds analogue: solid ("landbird") or hollow ("waterbird") bird shapes on a land or water background.

    Group counts follow Waterbirds' Table 2 columns (train 73%/4%/1%/22%; val and test balanced
    within class). Average accuracy is train-weighted, as the paper reports for Waterbirds.
    """
    return _generated("synthetic-waterbirds", "waterbirds",
                      lambda split, y, s, image_size, rng: _waterbirds_images(y, s, image_size, rng),
                      ("landbird", "waterbird"), ("land", "water"), "train-weighted",
                      {"train": size, "val": val_size, "test": test_size}, seed, image_size)


@register_dataset("synthetic-celeba", modality="image",
                  check_options=options_check("synthetic-celeba", "celeba", IMAGE_SIZE_BOUNDS))
def synthetic_celeba(size: int = 2000, val_size: int = 1000, test_size: int = 2000, seed: int = 0,
                     image_size: int = 32) -> GroupDataset:
    """CelebA analogue: striped ("blond") or plain hair on a warm ("female") or cool ("male") background.

    Group counts follow CelebA's Table 2 columns (blond males are 0.9% of every split, hence the larger
    default evaluation splits, which keep 9 and 18 of them).
    """
    return _generated("synthetic-celeba", "celeba",
                      lambda split, y, s, image_size, rng: _celeba_images(y, s, image_size, rng),
                      ("non-blond", "blond"), ("female", "male"), "pooled",
                      {"train": size, "val": val_size, "test": test_size}, seed, image_size)


@register_dataset("colored-digits", modality="image",
                  check_options=options_check("colored-digits", "waterbirds", IMAGE_SIZE_BOUNDS))
def colored_digits(size: int = 600, val_size: int = 200, test_size: int = 350, seed: int = 0,
                   image_size: int = 32) -> GroupDataset:
    """Real handwritten digits (scikit-learn's 1797 8x8 images) coloured red or green, CMNIST style.

    Class: digit < 5 (``0-4``) or not (``5-9``); attribute: stroke colour, with Waterbirds' Table 2 group
    proportions in every split (0-4 mostly red and 5-9 mostly green in training; colours balanced within
    each class in val and test). As for Waterbirds, whose val/test group mix differs from train in the
    same way, average accuracy is train-weighted. The three splits use disjoint digit images (listed in
    ``meta["digit_indices"]``, indices into ``load_digits()``), so the sizes must fit in the 901 images of
    0-4 and the 896 of 5-9 (the defaults use 850 and 300).
    """
    # deferred: scikit-learn loads only for this dataset
    from sklearn.datasets import load_digits

    name = "colored-digits"
    sizes = {"train": size, "val": val_size, "test": test_size}
    digits = load_digits()
    pools = _digit_pools(split_group_counts(name, "waterbirds", sizes), (digits.target >= 5).astype(np.int64),
                         len(DIGIT_COLOURS), split_streams(name, seed, extra=("pools",))["pools"])

    def draw(split, y, s, image_size, rng):
        index = np.empty(len(y), dtype=np.int64)
        for c, pool in enumerate(pools[split]):
            index[y == c] = pool
        return _digit_images(digits.images[index], s, image_size, rng)

    indices = {split: sorted(int(i) for part in pools[split] for i in part) for split in SPLITS}
    return _generated(name, "waterbirds", draw, DIGIT_CLASS_NAMES, tuple(DIGIT_COLOURS), "train-weighted", sizes,
                      seed, image_size, meta={"source": "sklearn.datasets.load_digits", "digit_indices": indices})
