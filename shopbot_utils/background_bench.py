"""Measuring background removal: products pasted on real photos (ground-truth masks), mask IoU,
and what a cut-out gives retrieval. Beside the backends' callers, not under them: this module
reads the split's gallery (``evaluate``) and embeds with the model, while ``background`` stays a
leaf that the bot and the chat import."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import config
from .background import Backend, Cutout, remove_background
from .data import ImageInput, load_image
from .embed import embed_images
from .evaluate import retrieval_metrics, split_gallery


def iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of two masks (thresholded); 1.0 when both are empty."""
    p, t = pred > threshold, truth > threshold
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else 1.0


def background_photos() -> dict[str, np.ndarray]:
    """Real photos that ship with scikit-image and matplotlib (RGB uint8; nothing is committed)."""
    import matplotlib
    import skimage.data as sk

    photos = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "brick", "grass", "gravel", "hubble_deep_field",
                 "immunohistochemistry", "stereo_motorcycle", "camera", "moon", "clock", "coins"):
        try:
            im = getattr(sk, name)()
        except Exception:  # noqa: BLE001 - a photo missing from this scikit-image install is skipped
            continue
        im = im[0] if isinstance(im, tuple) else im
        photos[name] = np.stack([im] * 3, -1) if im.ndim == 2 else im[:, :, :3]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.is_file():
        photos["grace_hopper"] = np.asarray(Image.open(hopper).convert("RGB"))
    if not photos:
        raise RuntimeError("no sample photos found in scikit-image or matplotlib")
    return photos


def product_mask(product: Image.Image, white: int = 240) -> np.ndarray:
    """The product's pixels in a catalogue image (on white): not near-white, holes filled."""
    from scipy import ndimage

    rgb = np.asarray(product.convert("RGB"))
    fg = rgb.min(axis=2) < white
    fg = ndimage.binary_closing(fg, iterations=1)
    return ndimage.binary_fill_holes(fg)


@dataclass
class Composite:
    """A product pasted on a background photo; ``mask`` is exactly the pasted pixels."""

    image: Image.Image
    mask: np.ndarray  # bool (H, W)
    product_id: int
    background: str


def make_composite(product: Image.Image, photos: dict[str, np.ndarray], rng: np.random.Generator,
                   size: int = 256, scale: tuple[float, float] = (0.6, 0.95), product_id: int = -1) -> Composite:
    """Paste ``product`` (its non-white pixels) at a random scale and position on a random crop
    (randomly flipped) of a random background photo, ``size`` x ``size`` px."""
    name = list(photos)[rng.integers(len(photos))]
    photo = photos[name]
    side = int(min(photo.shape[:2]) * rng.uniform(0.3, 0.7))
    y, x = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
    crop = photo[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    canvas = Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR)
    height = int(size * rng.uniform(*scale))
    width = max(1, round(product.width * height / product.height))
    if width > size:
        width, height = size, max(1, round(product.height * size / product.width))
    pasted = product.convert("RGB").resize((width, height), Image.BILINEAR)
    mask = product_mask(pasted)
    left, top = rng.integers(0, size - width + 1), rng.integers(0, size - height + 1)
    canvas.paste(pasted, (int(left), int(top)), Image.fromarray(mask.astype(np.uint8) * 255, "L"))
    full = np.zeros((size, size), bool)
    full[top:top + height, left:left + width] = mask
    return Composite(canvas, full, product_id, name)


def make_composites(images: dict[int, ImageInput], seed: int = config.SEED, size: int = 256) -> list[Composite]:
    """One composite per ``{product_id: image}``, seeded."""
    rng = np.random.default_rng(seed)
    photos = background_photos()
    return [make_composite(load_image(img), photos, rng, size, product_id=pid) for pid, img in images.items()]


# --------------------------------------------------------------------------- measuring the gain
def cut_out_all(composites: list[Composite], backends: dict[str, Backend]) -> dict[str, list[Cutout]]:
    """Every backend on every composite (timed), computed once for all the measurements."""
    return {name: [remove_background(c.image, backend) for c in composites] for name, backend in backends.items()}


def mask_quality(composites: list[Composite], cutouts: dict[str, list[Cutout]]) -> pd.DataFrame:
    """Per composite and backend: mask IoU against the pasted pixels, and seconds to compute it."""
    return pd.DataFrame([{"backend": name, "product_id": c.product_id, "background": c.background,
                          "iou": iou(cut.mask, c.mask), "seconds": cut.seconds}
                         for name, cuts in cutouts.items() for c, cut in zip(composites, cuts)])


def retrieval_gain(bot, split: pd.DataFrame, composites: list[Composite], cutouts: dict[str, list[Cutout]],
                   catalogue, k: int = 5) -> pd.DataFrame:
    """The poster's score and precision@k of similar() on pasted-background queries, per backend,
    next to clean catalogue queries (the same products). Foundation protocol: the queries are
    test-split products, searched in an index of train+valid."""
    gallery = split_gallery(bot, split)
    ids = [c.product_id for c in composites]
    queries = {"clean catalogue photo": [catalogue.image_path(i) for i in ids]}
    queries |= {f"pasted, {name}": [cut.on_white(crop=True) for cut in cuts] for name, cuts in cutouts.items()}
    rows = []
    for name, images in queries.items():
        vectors = embed_images(bot.model, images, tuple(bot.info.image_size))
        m = retrieval_metrics(gallery, vectors, ids, bot.products, k=k)
        rows.append({"queries": name, "poster_score": m["poster_score"], f"precision@{k}": m[f"precision_at_{k}"],
                     "n": m["queries"]})
    return pd.DataFrame(rows)
