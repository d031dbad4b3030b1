"""The decode-once image cache: geometry, reuse without decoding, invalidation, atomic build, locking."""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import PIL.Image
import pytest

import trainables.data.waterbirds  # noqa: F401  (registers the loader)
from native_fixtures import group_color, write_jpeg, write_waterbirds
from trainables.data.base import load_dataset
from trainables.data.image_cache import cache_path, cache_resolution, cached_images, decode_image, load_rgb
from trainables.errors import GroupsweepError

COUNTS = {"train": (3, 1, 1, 2), "val": (1, 1, 1, 1), "test": (1, 1, 1, 1)}


@pytest.fixture
def open_counter(monkeypatch):
    """Counts PIL.Image.open calls (every decode goes through it)."""
    calls = []
    real_open = PIL.Image.open

    def counting_open(*args, **kwargs):
        calls.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    return calls


def write_images(root, n):
    names = [f"d/{i}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        write_jpeg(root / name, (10 * i, 100, 200 - 10 * i))
    return names


def test_cache_resolution():
    assert cache_resolution(224) == 256 and cache_resolution(32) == 37 and cache_resolution(384) == 439


def test_decode_resizes_shorter_side_and_crops_the_centre(tmp_path):
    """A 60x30 image with red | green | blue vertical thirds: resized to 74x37, the centre 37x37 square is
    original columns 15..45, i.e. mostly green with no pure red or blue in its middle."""
    stripes = np.zeros((30, 60, 3), dtype=np.uint8)
    stripes[:, :15] = (255, 0, 0)
    stripes[:, 15:45] = (0, 255, 0)
    stripes[:, 45:] = (0, 0, 255)
    PIL.Image.fromarray(stripes).save(tmp_path / "s.png")
    image = decode_image(tmp_path / "s.png", 37)
    assert image.shape == (37, 37, 3) and image.dtype == np.uint8
    assert (image[:, 3:34, 1] > 200).all() and (image[:, 3:34, [0, 2]] < 40).all()


def test_decode_converts_grey_and_alpha_to_rgb(tmp_path):
    PIL.Image.new("L", (20, 20), 90).save(tmp_path / "g.png")
    PIL.Image.new("RGBA", (20, 20), (10, 20, 30, 128)).save(tmp_path / "a.png")
    assert decode_image(tmp_path / "g.png", 16).shape == (16, 16, 3)
    assert (decode_image(tmp_path / "a.png", 16) == (10, 20, 30)).all()


def test_a_sixteen_bit_grey_png_is_scaled_to_eight_bits_not_clipped(tmp_path):
    """PIL's ``convert("RGB")`` of an ``I;16`` image clips every value above 255 (a 16-bit scan turned white)."""
    levels = np.array([0, 257, 32896, 65535], dtype=np.uint16)  # 0, 1, 128, 255 in 8 bits
    PIL.Image.fromarray(np.repeat(np.repeat(levels[None, :], 8, axis=0), 8, axis=1)).save(tmp_path / "deep.png")
    assert PIL.Image.open(tmp_path / "deep.png").mode == "I;16"
    image = decode_image(tmp_path / "deep.png", 8)  # 8x32 at its size: the centre 8 columns, levels 257 and 32896
    assert set(np.unique(image)) == {1, 128}
    row = load_rgb(tmp_path / "deep.png").getchannel(0)
    assert [row.getpixel((x, 0)) for x in (0, 8, 16, 24)] == [0, 1, 128, 255]


def test_an_image_past_the_decompression_bomb_limit_is_a_one_line_error(tmp_path, monkeypatch):
    names = write_images(tmp_path, 2)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses images over twice this many pixels
    with pytest.raises(GroupsweepError, match=r"row 1: cannot decode image '.*': Image size \(\d+ pixels\) exceeds "
                                              r"limit of 200 pixels") as error:
        cached_images(tmp_path, names, tmp_path / "cache", key="k", image_size=32, where=lambda i: f"row {i + 1}")
    assert "\n" not in str(error.value)


def test_second_load_does_not_decode(tmp_path, open_counter):
    names = write_images(tmp_path, 5)
    first = cached_images(tmp_path, names, tmp_path / "cache", key="t-train", image_size=32)
    assert len(open_counter) == 5
    second = cached_images(tmp_path, names, tmp_path / "cache", key="t-train", image_size=32)
    assert len(open_counter) == 5  # nothing decoded the second time
    assert isinstance(second, np.memmap) and second.shape == (5, 37, 37, 3) and not second.flags.writeable
    np.testing.assert_array_equal(first, second)
    for i in range(5):
        np.testing.assert_allclose(second[i].reshape(-1, 3).mean(0), (10 * i, 100, 200 - 10 * i), atol=4)


def test_loader_reuses_its_cache(tmp_path, open_counter):
    write_waterbirds(tmp_path, COUNTS)
    first = load_dataset("waterbirds", root=tmp_path, image_size=32)
    decoded = len(open_counter)
    assert decoded == sum(map(sum, COUNTS.values()))
    second = load_dataset("waterbirds", root=tmp_path, image_size=32)
    assert len(open_counter) == decoded
    for split in first.splits:
        np.testing.assert_array_equal(first.splits[split].inputs, second.splits[split].inputs)
    part = second.splits["train"]
    for image, y, s in zip(part.inputs, part.y, part.s):
        assert np.abs(image.reshape(-1, 3).mean(0) - group_color(y, s)).max() < 6


def test_cache_is_keyed_by_files_size_and_resolution(tmp_path, open_counter):
    names = write_images(tmp_path, 4)
    cache = tmp_path / "cache"
    cached_images(tmp_path, names, cache, key="k", image_size=32)
    cached_images(tmp_path, names, cache, key="k", image_size=48)  # another resolution
    cached_images(tmp_path, names[:3], cache, key="k", image_size=32)  # another file list
    cached_images(tmp_path, names[::-1], cache, key="k", image_size=32)  # another order
    cached_images(tmp_path, names, cache, key="other", image_size=32)  # another dataset/split
    assert len(list(cache.glob("*.npy"))) == 5 and len(open_counter) == 4 + 4 + 3 + 4 + 4
    write_jpeg(tmp_path / names[1], (255, 255, 255))  # a changed image (new size / mtime)
    os.utime(tmp_path / names[1], ns=(1, 1))
    refreshed = cached_images(tmp_path, names, cache, key="k", image_size=32)
    assert len(open_counter) == 23 and refreshed[1].mean() > 250


def test_failed_build_leaves_no_cache_and_names_the_row(tmp_path):
    names = write_images(tmp_path, 4)
    (tmp_path / names[2]).write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(GroupsweepError, match=r"metadata.txt row 3: cannot decode image '.*d/2.jpg'"):
        cached_images(tmp_path, names, tmp_path / "cache", key="k", image_size=32, where=lambda i: f"metadata.txt row {i + 1}")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_a_dead_builders_temporary_file_is_removed_by_the_next_build(tmp_path):
    """A builder killed mid-build leaves its temporary file (its host and pid in the name); the next builder on that
    host removes it (else a large cache's leftovers would fill the disk for good), and no other."""
    names = write_images(tmp_path, 2)
    path = cache_path(tmp_path / "cache", "k", tmp_path, names, 32)
    path.parent.mkdir()
    host = socket.gethostname()
    stale = path.with_name(f"{path.stem}.tmp-{host}-99999999.npy")  # no such process
    running = path.with_name(f"{path.stem}.tmp-{host}-{os.getppid()}.npy")  # a builder still at work
    elsewhere = path.with_name(f"{path.stem}.tmp-another-host-99999999.npy")  # a shared cache folder's other host
    for file in (stale, running, elsewhere):
        file.write_bytes(b"\0" * 1000)
    cached_images(tmp_path, names, tmp_path / "cache", key="k", image_size=32)
    assert not stale.exists() and running.exists() and elsewhere.exists() and path.exists()


def test_unwritable_cache_dir_is_a_one_line_error(tmp_path):
    names = write_images(tmp_path, 2)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(GroupsweepError, match=r"cannot write the image cache in .*pass cache_dir or set GROUPSWEEP_CACHE"):
        cached_images(tmp_path, names, tmp_path / "file" / "cache", key="k", image_size=32)


def test_concurrent_builders_decode_once(tmp_path, monkeypatch):
    """Two loaders racing on a cold cache: the lock makes the second wait and reuse the first one's file."""
    names = write_images(tmp_path, 6)
    results, opened = [None, None], []
    real_open = PIL.Image.open

    def slow_open(*args, **kwargs):  # 50 ms per image: the second thread starts while the first builds
        opened.append(args[0])
        time.sleep(0.05)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", slow_open)

    def load(slot):
        results[slot] = cached_images(tmp_path, names, tmp_path / "cache", key="k", image_size=32, workers=1)

    threads = [threading.Thread(target=load, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 6
    np.testing.assert_array_equal(results[0], results[1])
    files = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(files) == 1 and files[0].endswith(".npy")  # no temporary or lock file left behind
