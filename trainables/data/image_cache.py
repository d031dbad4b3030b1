"""Decode-once image cache: every image is decoded a single time into a uint8 memmap, then reused.

Each image is opened with PIL, converted to RGB, its shorter side resized (bilinear, antialiased, as
torchvision's ``Resize``) to ``R = round(image_size * 256 / 224)`` and center-cropped to an R x R square.
A split's images are stored as one ``(N, R, R, 3)`` uint8 ``.npy`` file opened as a read-only
``np.memmap``; the file name holds the dataset/split key, R, N and a fingerprint of the file list
(relative names, sizes and modification times), so an edited image list or a changed image gets a
fresh cache. The file is written to a temporary name and moved into place with ``os.replace``; a lock
file makes concurrent trials on one machine wait for the first builder instead of decoding twice.

Evaluation (Resize(R) + CenterCrop(image_size)) on the cached square equals the paper's pipeline on the
original image. Training augmentation (RandomResizedCrop(image_size, scale=(0.7, 1)) + flip) runs on
the cached tensor, so for a non-square original the random crops are drawn from its center R x R square
rather than from the whole image: a small, documented deviation from cropping the original.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import hashlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import psutil

from trainables.errors import GroupsweepError

# What PIL raises for a file it cannot decode (unreadable, truncated, not an image; ``load_rgb`` adds the
# decompression-bomb refusal as a ValueError).
IMAGE_ERRORS = (OSError, ValueError, SyntaxError)
# PIL's modes of 16-bit greyscale images (a 16-bit PNG opens as I;16).
SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def cache_resolution(image_size: int) -> int:
    """Side R of the cached squares for model input ``image_size``: ``round(image_size * 256 / 224)``."""
    return round(image_size * 256 / 224)


def load_rgb(path: Path):
    """The image at ``path`` as an 8-bit RGB ``PIL.Image``; 16-bit greyscale (``I;16`` PNGs, ``I``) scaled to 8 bits
    (PIL's ``convert`` would clip every value above 255 to white). An unreadable file raises one of
    ``IMAGE_ERRORS``; so does an image past PIL's decompression-bomb limit (a ``ValueError``)."""
    # deferred: PIL loads only when images are decoded, not when the registry is read
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode in SIXTEEN_BIT_GREY:
                scaled = np.rint(np.asarray(image, dtype=np.float64) / 257)
                return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L").convert("RGB")
            return image.convert("RGB")
    except Image.DecompressionBombError as error:
        raise ValueError(str(error)) from None


def decode_image(path: Path, resolution: int) -> np.ndarray:
    """Decode ``path`` to RGB (``load_rgb``), resize its shorter side to ``resolution`` and center-crop: uint8
    (R, R, 3)."""
    # deferred: torchvision loads only when images are decoded, not when the registry is read
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    image = F.resize(load_rgb(path), resolution, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return np.asarray(F.center_crop(image, resolution), dtype=np.uint8)


def fingerprint(root: Path, names: Sequence[str]) -> str:
    """Hex digest of the ordered relative ``names`` with each file's size and modification time."""
    digest = hashlib.sha256()
    for name in names:
        stat = os.stat(root / name)
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_path(cache_dir: Path, key: str, root: Path, names: Sequence[str], image_size: int) -> Path:
    """The cache file of images ``names`` (relative to ``root``) under ``key`` at model size ``image_size``."""
    resolution = cache_resolution(image_size)
    return Path(cache_dir) / f"{key}-{resolution}px-n{len(names)}-{fingerprint(root, names)[:16]}.npy"


def cached_images(
    root: Path,
    names: Sequence[str],
    cache_dir: Path,
    *,
    key: str,
    image_size: int,
    where: Callable[[int], str] | None = None,
    workers: int | None = None,
) -> np.memmap:
    """The images ``root/names[i]`` as a read-only uint8 memmap (N, R, R, 3), decoding them only if no cache exists.

    ``key`` names the dataset and split (e.g. ``waterbirds-train``); ``where(i)`` describes where image
    ``i`` was listed, for the one-line error raised when it cannot be decoded; ``workers`` threads decode
    (default: the CPU count, at most 16).
    """
    root = Path(root)
    path = cache_path(cache_dir, key, root, names, image_size)
    if not path.exists():
        lock_path = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(lock_path, "w")
        except OSError as error:
            raise GroupsweepError(
                f"cannot write the image cache in {str(path.parent)!r} ({error.strerror}); pass cache_dir or set GROUPSWEEP_CACHE"
            ) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                _build(path, root, names, cache_resolution(image_size), where, workers)
            # safe once the cache exists: every later caller sees it before it would take the lock
            lock_path.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r")


def _build(path: Path, root: Path, names: Sequence[str], resolution: int, where, workers: int | None) -> None:
    """Decode every image into a temporary ``.npy`` memmap next to ``path`` (named by host and process) and move it
    into place. A temporary file of ``path`` left by a builder of this host that no longer runs (killed mid-build)
    is removed first. The file's space is reserved before any image is written: on a full disk that is a one-line
    ``GroupsweepError`` (writing into a memory map past the free space would end the process with SIGBUS)."""
    prefix = f"{path.stem}.tmp-{socket.gethostname()}-"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*.npy"):
        pid = stale.name[len(prefix):-len(".npy")]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f"{prefix}{os.getpid()}.npy")

    def fill(i: int) -> None:
        try:
            out[i] = decode_image(root / names[i], resolution)
        except IMAGE_ERRORS as error:
            place = f"{where(i)}: " if where else ""
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise GroupsweepError(f"{place}cannot decode image {str(root / names[i])!r}: {reason}") from None

    pool = ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1))
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(names), resolution, resolution, 3))
        with open(tmp, "r+b") as file:
            try:
                os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
            except OSError as error:  # a filesystem that cannot reserve space (EOPNOTSUPP) is written as it is
                if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise GroupsweepError(f"cannot write the image cache {str(path)!r} ({error.strerror}); free "
                                          "space there, or pass cache_dir or set GROUPSWEEP_CACHE") from None
        try:
            for _ in pool.map(fill, range(len(names))):
                pass
        finally:
            pool.shutdown(cancel_futures=True)  # stop at the first unreadable image
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
