"""Measuring background removal: products pasted on real photos (ground-truth masks), mask IoU,
what a cut-out gives retrieval, and auto's per-photo decision (never, always, auto). Beside the
backends' callers, not under them: this module reads the split's gallery (``evaluate``) and embeds
with the model, while ``background`` stays a leaf that the bot and the chat import."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import config
from .background import PACKSHOT_BORDER, Backend, Cutout, remove_background, white_border
from .data import ImageInput, load_image
from .embed import embed_images
from .evaluate import match_scores, retrieval_metrics, split_gallery


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
    next to clean catalogue queries (the same products). The strict protocol: the queries are
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


# --------------------------------------------------------------------------- auto: deciding per photo
#: What ``remove_background=`` can do with a photo, as the benchmark compares it.
POLICIES = ("never", "always", "auto")
#: The two sets of photos auto is measured on, and whether their background should go.
NEEDS_REMOVAL = {"clean catalogue photo": False, "pasted background": True}


def backend_label(backend: Backend) -> str:
    """How the benchmark names a backend: ``isnet 768`` (with its working size), ``grabcut``..."""
    size = getattr(backend, "size", None)
    return f"{backend.name} {size}" if size else backend.name


@dataclass
class Check:
    """auto's check on one photo: its measure (``background.white_border``), its decision, its time."""

    border: float
    packshot: bool  # keep the photo as it is
    check_seconds: float
    product_id: int = -1


def check_photo(photo: ImageInput, threshold: float = PACKSHOT_BORDER, product_id: int = -1) -> Check:
    """Run (and time) the check on one photo."""
    img = load_image(photo)
    start = time.perf_counter()
    border = white_border(img)
    return Check(border, border >= threshold, time.perf_counter() - start, product_id)


def check_split(catalogue, ids: list[int], seed: int = config.SEED + 1, size: int = 256) -> dict[str, list[Check]]:
    """The check alone (no model) on every product's catalogue photo and on a composite of it, made
    and dropped one at a time (seeded apart from ``make_composites``' default), for error rates on
    many more photos than the retrieval measurement can afford."""
    rng, photos = np.random.default_rng(seed), background_photos()
    clean, pasted = [], []
    for pid in ids:
        img = load_image(catalogue.image_path(pid))
        clean.append(check_photo(img, product_id=int(pid)))
        pasted.append(check_photo(make_composite(img, photos, rng, size, product_id=int(pid)).image, product_id=int(pid)))
    return {"clean catalogue photo": clean, "pasted background": pasted}


@dataclass
class PolicyRun:
    """One photo under the three policies: ``never`` (the photo as it is), ``always`` (``remover``'s
    cut-out) and ``auto`` (``always``'s cut-out when the check says the photo needs it, else ``never``)."""

    photo: Image.Image
    always: Cutout
    border: float  # the check's measure (``background.white_border``)
    packshot: bool  # the check's decision: keep the photo as it is
    check_seconds: float

    def query(self, policy: str) -> Image.Image:
        """The image similar() embeds under ``policy``."""
        removed = policy == "always" or (policy == "auto" and not self.packshot)
        return self.always.query() if removed else self.photo

    def seconds(self, policy: str) -> float:
        """What ``policy`` spends on the background (the check included)."""
        if policy == "never":
            return 0.0
        if policy == "always":
            return self.always.seconds
        return self.check_seconds + (0.0 if self.packshot else self.always.seconds)


def run_policies(photos: list[ImageInput], remover: Backend, always: list[Cutout] | None = None,
                 threshold: float = PACKSHOT_BORDER) -> list[PolicyRun]:
    """Each photo checked (timed on its own) and cut out by ``remover`` (or ``always``: its cut-outs,
    already made). Where the check sends a photo to the remover, auto's cut-out is always's: the same
    deterministic computation, not run twice."""
    runs = []
    for i, photo in enumerate(photos):
        img = load_image(photo)
        check = check_photo(img, threshold)
        cut = always[i] if always is not None else remove_background(img, remover)
        runs.append(PolicyRun(img, cut, check.border, check.packshot, check.check_seconds))
    return runs


def policy_runs(catalogue, composites: list[Composite], remover: Backend,
                cutouts: dict[str, list[Cutout]] | None = None) -> dict[str, list[PolicyRun]]:
    """``run_policies`` on the composites' products as the catalogue shows them and on the composites
    (reusing ``cutouts``' cut-outs by ``remover`` when ``cut_out_all`` already made them)."""
    clean = [catalogue.image_path(c.product_id) for c in composites]
    made = (cutouts or {}).get(backend_label(remover))
    return {"clean catalogue photo": run_policies(clean, remover),
            "pasted background": run_policies([c.image for c in composites], remover, always=made)}


def decision_errors(runs: dict[str, list[PolicyRun] | list[Check]],
                    needs_removal: dict[str, bool] = NEEDS_REMOVAL) -> pd.DataFrame:
    """How often the check decides right, per set of photos (``PolicyRun``s or ``Check``s): the share
    auto sends to the remover, the share it gets wrong (removes from a photo that needs nothing, or
    keeps a background that should go) and the check's own milliseconds."""
    rows = []
    for name, photo_runs in runs.items():
        removes = np.array([not r.packshot for r in photo_runs])
        wrong = ~removes if needs_removal[name] else removes
        check_ms = np.array([r.check_seconds for r in photo_runs]) * 1e3
        rows.append({"photos": name, "n": len(photo_runs), "needs removal": needs_removal[name],
                     "auto removes": removes.mean(), "wrong decisions": wrong.mean(), "wrong": int(wrong.sum()),
                     "check_ms_p50": float(np.median(check_ms)), "check_ms_p95": float(np.percentile(check_ms, 95))})
    return pd.DataFrame(rows)


def similar_credit(bot, split: pd.DataFrame, images: list[ImageInput], ids: list[int], k: int = 5) -> np.ndarray:
    """The poster's credit (queries x k: 1 same article type, 0.5 same subcategory only) of the top ``k``
    of ``bot.similar(image, k, remove_background=False)`` searching only train+valid (the strict
    protocol; the images are the test products' ``ids``, already prepared)."""
    gallery = np.isin(bot.index.ids, split.loc[split["split"] != "test", "id"].to_numpy())
    facts = split.set_index("id")
    credit = []
    for image, pid in zip(images, ids):
        found = bot.similar(image, k, remove_background=False, where=gallery)
        scores = match_scores([facts.at[pid, "articleType"]], [facts.at[pid, "subCategory"]],
                              np.array([[p.articleType for p in found]], dtype=object),
                              np.array([[p.subCategory for p in found]], dtype=object))
        credit.append(scores[0])
    return np.asarray(credit).reshape(len(credit), k)


def policy_scores(bot, split: pd.DataFrame, ids: list[int], runs: dict[str, list[PolicyRun]], k: int = 5,
                  seed: int = config.SEED) -> pd.DataFrame:
    """Per set of photos and policy: the poster's score and precision@k of similar() (``similar_credit``),
    seconds a photo spent on the background, the time auto saves against always, and auto's score minus
    always's with a 95% paired bootstrap interval (1,000 resamples of the queries)."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, photo_runs in runs.items():
        credit = {}
        for policy in ("never", "always"):
            credit[policy] = similar_credit(bot, split, [r.query(policy) for r in photo_runs], ids, k)
        # auto embeds exactly never's or always's image: its answers are theirs, not searched again
        kept = np.array([r.packshot for r in photo_runs])[:, None]
        credit["auto"] = np.where(kept, credit["never"], credit["always"])
        seconds = {p: float(np.mean([r.seconds(p) for r in photo_runs])) for p in POLICIES}
        for policy in POLICIES:
            diff = (credit[policy] - credit["always"]).mean(axis=1)
            boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(1000)]
            rows.append({"photos": name, "policy": policy, "poster_score": float(credit[policy].mean()),
                         f"precision@{k}": float((credit[policy] == 1.0).mean()),
                         "seconds_per_photo": seconds[policy], "saved_vs_always_s": seconds["always"] - seconds[policy],
                         "minus_always": float(diff.mean()), "ci95_low": float(np.percentile(boot, 2.5)),
                         "ci95_high": float(np.percentile(boot, 97.5)), "n": len(photo_runs)})
    return pd.DataFrame(rows)
