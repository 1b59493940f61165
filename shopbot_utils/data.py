"""The catalogue: find it, parse ``styles.csv``, pick Fashion-37, split it and load images safely."""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from . import config
from .artifacts import write_atomic
from .config import logger

ImageInput = Union[str, Path, bytes, bytearray, Image.Image]

#: Columns every parsed ``styles.csv`` has (the Kaggle original has ``gender, season, year`` too).
STYLE_COLUMNS = ["id", "masterCategory", "subCategory", "articleType", "baseColour", "usage",
                 "productDisplayName"]
#: Largest image we decode: 40 megapixels (a 20000x20000 upload is refused before decoding).
MAX_PIXELS = 40_000_000
SPLITS = ("train", "valid", "test")


class CatalogueNotFoundError(FileNotFoundError):
    """The catalogue could not be found locally nor downloaded."""


class ImageError(ValueError):
    """An input that is not a usable image."""


# --------------------------------------------------------------------------- finding the data
def _find_root(folder: Path) -> Path | None:
    """The folder holding ``styles.csv`` and ``images/`` at or up to two levels below ``folder``."""
    for candidate in [folder, *folder.glob("*"), *folder.glob("*/*")]:
        if (candidate / "styles.csv").is_file() and (candidate / "images").is_dir():
            return candidate
    return None


def _extract_zip(zip_path: Path, dest: Path) -> Path:
    """Extract ``zip_path`` into ``dest`` once (a marker records which zip was extracted)."""
    tqdm = config.progress_bar()

    stat = zip_path.stat()
    stamp = f"{zip_path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
    marker = dest / ".extracted"
    if not (marker.is_file() and marker.read_text() == stamp):
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path) as zf:
            for member in tqdm(zf.infolist(), desc=f"extracting {zip_path.name}", unit="file",
                               mininterval=1.0):
                zf.extract(member, dest)
        write_atomic(marker, stamp)
    root = _find_root(dest)
    if root is None:
        raise CatalogueNotFoundError(f"{zip_path} holds no styles.csv with an images/ folder")
    return root


def _download() -> Path:
    import kagglehub

    logger.info("downloading %s with kagglehub", config.KAGGLE_DATASET)
    return Path(kagglehub.dataset_download(config.KAGGLE_DATASET))


def find_catalogue(source: str | Path | None = None) -> Path:
    """The catalogue folder (``styles.csv`` + ``images/``).

    Looks at ``source``, then ``SHOPBOT_DATA`` (a Kaggle zip or folder), then the local cache,
    then downloads the Kaggle dataset with ``kagglehub`` unless ``SHOPBOT_OFFLINE=1``.
    """
    source = Path(source) if source is not None else config.data_source()
    cache = config.cache_dir() / "fashion-product-images-small"
    if source is not None:
        if not source.exists():
            raise CatalogueNotFoundError(f"SHOPBOT_DATA points at {source}, which does not exist")
        if source.is_file():
            if not zipfile.is_zipfile(source):
                raise CatalogueNotFoundError(f"{source} is neither a folder nor a zip archive")
            return _extract_zip(source, config.cache_dir() / source.stem)
        root = _find_root(source)
        if root is None:
            raise CatalogueNotFoundError(f"{source} holds no styles.csv with an images/ folder")
        return root
    root = _find_root(cache) if cache.is_dir() else None
    if root is not None:
        return root
    error = "offline (SHOPBOT_OFFLINE=1)"
    if not config.offline():
        try:
            root = _find_root(_download())
            if root is not None:
                return root
            error = "the download holds no styles.csv with an images/ folder"
        except Exception as exc:  # noqa: BLE001 - any failure means: tell the user what to set
            error = f"{type(exc).__name__}: {exc}"
    raise CatalogueNotFoundError(
        "Could not find the Fashion Product Images (Small) catalogue "
        f"(download failed: {error}). Set SHOPBOT_DATA to the Kaggle zip or its extracted folder, "
        f"or put the extracted files under {cache}."
    )


# --------------------------------------------------------------------------- parsing
@dataclass
class StylesReport:
    """What was odd in ``styles.csv`` and the image folder."""

    rows: int = 0
    repaired_ids: list[int] = field(default_factory=list)
    dropped_lines: list[int] = field(default_factory=list)
    images_without_row: list[int] = field(default_factory=list)
    rows_without_image: list[int] = field(default_factory=list)
    #: Ids that had more than one row: the first row is kept, the others dropped.
    duplicate_ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        """One line per finding, for logs and notebooks."""
        return (f"{self.rows} rows; {len(self.repaired_ids)} rows with extra commas repaired; "
                f"{len(self.dropped_lines)} malformed lines dropped; "
                f"{len(self.duplicate_ids)} rows with a duplicate id dropped; "
                f"{len(self.images_without_row)} images without a row; "
                f"{len(self.rows_without_image)} rows without an image")


def read_styles(path: str | Path, report: StylesReport | None = None) -> pd.DataFrame:
    """Parse ``styles.csv`` in the Kaggle 10-column form or the 7-column form.

    Lines whose product name holds extra commas are repaired (the surplus fields are joined back
    into ``productDisplayName``, the last column) and their ids listed in ``report``; lines with
    no numeric id or no article type are dropped and their line numbers listed there, and so are the
    later rows of an id that has several (``report.duplicate_ids``: the first row is kept).
    """
    report = report if report is not None else StylesReport()
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().strip().split(",")
    missing = [c for c in STYLE_COLUMNS if c not in header]
    if missing or header[-1] != "productDisplayName":
        raise ValueError(f"{path}: not a styles.csv (missing columns {missing or header[-1:]})")
    n = len(header)

    def repair(fields: list[str]) -> list[str]:
        # pandas calls this for lines with too many fields (a product name with commas).
        report.repaired_ids.append(int(fields[0]) if fields[0].isdigit() else -1)
        return fields[: n - 1] + [",".join(fields[n - 1:])]

    df = pd.read_csv(path, engine="python", on_bad_lines=repair, dtype=str,
                     keep_default_na=False, encoding_errors="replace")
    df = df.fillna("")
    df["id"] = pd.to_numeric(df["id"], errors="coerce")
    bad = df["id"].isna() | (df["articleType"].str.strip() == "")
    report.dropped_lines = (df.index[bad] + 2).tolist()  # 1-based file line numbers
    df = df[~bad].copy()
    df["id"] = df["id"].astype(np.int64)
    repeated = df["id"].duplicated()
    report.duplicate_ids = df.loc[repeated, "id"].tolist()
    df = df[~repeated].set_index("id", drop=False).rename_axis(None)
    report.rows = len(df)
    return df


@dataclass
class Catalogue:
    """The product table (rows that have an image) and where the images are."""

    root: Path
    styles: pd.DataFrame
    report: StylesReport

    @property
    def image_dir(self) -> Path:
        return self.root / "images"

    def image_path(self, product_id: int) -> Path:
        """The image file of one product."""
        return self.image_dir / f"{int(product_id)}.jpg"

    def __len__(self) -> int:
        return len(self.styles)


def load_catalogue(source: str | Path | None = None) -> Catalogue:
    """Find and parse the catalogue, reporting images without rows and rows without images."""
    root = find_catalogue(source)
    report = StylesReport()
    styles = read_styles(root / "styles.csv", report)
    image_ids = {int(p.stem) for p in (root / "images").glob("*.jpg") if p.stem.isdigit()}
    row_ids = set(styles["id"].tolist())
    report.images_without_row = sorted(image_ids - row_ids)
    report.rows_without_image = sorted(row_ids - image_ids)
    styles = styles[styles["id"].isin(image_ids)].copy()
    logger.info("catalogue %s: %s", root, report.summary())
    return Catalogue(root=root, styles=styles, report=report)


# --------------------------------------------------------------------------- Fashion-37 and split
def top_classes(styles: pd.DataFrame, n: int = config.N_CLASSES) -> list[str]:
    """The ``n`` most frequent article types, most frequent first (ties broken by name)."""
    counts = styles["articleType"].value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [name for name, _ in order[:n]]


def make_split(styles: pd.DataFrame, n_classes: int = config.N_CLASSES, valid: float = 0.1,
               test: float = 0.2, per_class: int | None = None,
               seed: int = config.SEED) -> pd.DataFrame:
    """A stratified train/valid/test split of the ``n_classes`` most frequent article types.

    ``per_class`` keeps at most that many products of each class first (for quick runs).
    Returns the product rows with a ``split`` column; the same seed gives the same split.
    """
    if not 0 < valid < 1 or not 0 < test < 1 or valid + test >= 1:
        raise ValueError(f"valid={valid} and test={test} must be fractions summing to below 1")
    classes = top_classes(styles, n_classes)
    rng = np.random.default_rng(seed)
    parts = []
    for cls in classes:
        ids = np.sort(styles.loc[styles["articleType"] == cls, "id"].to_numpy())
        ids = rng.permutation(ids)
        if per_class is not None:
            ids = ids[:per_class]
        if len(ids) < 3:
            raise ValueError(f"class {cls!r} has {len(ids)} products; a split needs at least 3")
        n_test = max(1, int(round(len(ids) * test)))
        n_valid = max(1, int(round(len(ids) * valid)))
        labels = np.array(["test"] * n_test + ["valid"] * n_valid
                          + ["train"] * (len(ids) - n_test - n_valid))
        parts.append(pd.DataFrame({"id": ids, "split": labels}))
    split = pd.concat(parts, ignore_index=True)
    out = styles.set_index("id", drop=False).loc[split["id"]].reset_index(drop=True)
    out["split"] = split["split"].to_numpy()
    return out


def save_split(split: pd.DataFrame, folder: str | Path) -> Path:
    """Write the split (with its classes) to ``folder/split.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = write_atomic(folder / "split.csv", split.to_csv(index=False))
    classes = sorted(split["articleType"].unique())
    write_atomic(folder / "classes.json", json.dumps(classes, indent=1))
    return path


def read_id_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV we wrote (all text columns, empty strings kept) with an integer ``id`` column."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["id"] = df["id"].astype(np.int64)
    return df


def load_split(folder: str | Path) -> pd.DataFrame:
    """Read the split that ``save_split`` wrote."""
    path = Path(folder) / "split.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run notebooks/01_data.ipynb (or `make run`) first")
    return read_id_csv(path)


# --------------------------------------------------------------------------- images
#: Photos are decoded reduced to at most this many pixels on their longer side, before any full-size
#: copy: nothing downstream needs more (ISNet works at 512-1024 px, the CNN at 160x120, thumbnails at
#: 160 px), and a plain 6300x6300 PNG (100 KB) no longer costs gigabytes through background removal.
MAX_SIDE = 1024
#: EXIF orientation -> the transposition that undoes it (what ``ImageOps.exif_transpose`` applies).
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}
_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
#: Rows of the reduced image made per strip (a strip of the full image is ``factor`` times as many).
_STRIP_ROWS = 64


def load_image(src: ImageInput, max_pixels: int = MAX_PIXELS, max_side: int | None = MAX_SIDE) -> Image.Image:
    """Open a path, bytes or PIL image as an RGB image at most ``max_side`` px on its longer side
    (``None``: full size), with a clear ``ImageError`` for anything that is not a usable picture.

    Images over ``max_pixels`` are refused before decoding; larger photos are decoded reduced (JPEG's
    own scaling, then box-averaged strip by strip). The EXIF orientation is applied (a malformed EXIF
    block is ignored). 16-bit, 32-bit and float images are scaled to 8 bits (refused when their values
    are not a picture's). Transparent images are composited on white (like the catalogue); greyscale,
    palette and CMYK images are converted.
    """
    img, name = _open(src)
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"the image is {w}x{h} pixels; the most we accept is {max_pixels:,} "
                         "pixels: resize it first")
    if w < 1 or h < 1:
        raise ImageError(f"the image has no pixels ({w}x{h})")
    try:
        if img is not src:  # ours: JPEG decodes at 1/2, 1/4 or 1/8 when that is still at least the target
            img.draft(None, _fit(img.size, max_side))
        img.load()
        orientation = _orientation(img)
        out = _to_8bit(_reduce(img, _working_mode(img), max_side), img.mode)
        if orientation is not None:
            out = out.transpose(orientation)
        out = _on_white(out)
    except (ImageError, MemoryError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} is too large to decode safely: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can make any decoder step raise anything
        raise ImageError(f"{name} could not be decoded (truncated or corrupt): {exc}") from None
    out.info = {}  # no EXIF left: loading the result again must not rotate it again
    return out


def _open(src: ImageInput) -> tuple[Image.Image, str]:
    """The image (not decoded yet when read from a file or bytes) and how to name it in errors."""
    if isinstance(src, Image.Image):
        return src, "the image"
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise ImageError("the upload is empty (0 bytes): choose an image file")
        data, name = bytes(src), "the upload"
    elif isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise ImageError(f"{path} does not exist or is not a file")
        data, name = path.read_bytes(), str(path)
        if not data:
            raise ImageError(f"{name} is empty (0 bytes): choose an image file")
    else:
        raise ImageError(f"expected a path, bytes or a PIL image, got {type(src).__name__}")
    try:
        return Image.open(io.BytesIO(data)), name
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image PIL can read (JPEG, PNG, WebP, ...)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} is too large to open safely ({exc}): resize it first") from None
    except Exception as exc:  # noqa: BLE001 - a damaged header can make a format's parser raise anything
        raise ImageError(f"{name} could not be decoded (truncated or corrupt): {exc}") from None


def _fit(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` scaled down to at most ``max_side`` on its longer side (unchanged when it fits)."""
    w, h = size
    if max_side is None or max(w, h) <= max_side:
        return size
    scale = max_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _orientation(img: Image.Image) -> Image.Transpose | None:
    """The transposition the EXIF orientation asks for; None when there is none or the EXIF is malformed."""
    try:
        return _ORIENTATION.get(int(img.getexif().get(0x0112, 1)))
    except Exception:  # noqa: BLE001 - a malformed EXIF block costs only the rotation
        logger.debug("ignoring a malformed EXIF block", exc_info=True)
        return None


def _working_mode(img: Image.Image) -> str:
    """The mode an image is reduced in: ``F`` for 16/32-bit and float, ``RGBA`` when it has
    transparency, ``L`` for greyscale, else ``RGB``."""
    if img.mode in _HIGH_DEPTH:
        return "F"
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        return "RGBA"
    return "L" if img.mode in ("1", "L") else "RGB"


def _reduce(img: Image.Image, mode: str, max_side: int | None) -> Image.Image:
    """``img`` in ``mode``, at most ``max_side`` px. A large image is box-averaged by a whole factor one
    strip at a time (no full-size converted copy), then resized to fit."""
    w, h = img.size
    factor = max(w, h) // max_side if max_side else 1
    if factor <= 1:
        out = img.convert(mode) if img.mode != mode else img.copy()
    else:
        out = Image.new(mode, (-(-w // factor), -(-h // factor)))
        rows = factor * _STRIP_ROWS
        for top in range(0, h, rows):
            strip = img.crop((0, top, w, min(h, top + rows)))
            out.paste((strip.convert(mode) if strip.mode != mode else strip).reduce(factor), (0, top // factor))
    size = _fit(out.size, max_side)
    return out if size == out.size else out.resize(size, Image.Resampling.LANCZOS)


def _to_8bit(img: Image.Image, source_mode: str) -> Image.Image:
    """A float (``F``) image from a 16-bit, 32-bit or float source scaled to 8-bit greyscale by its
    nominal range (0..65535, 0..255 or 0..1), or an ``ImageError`` when its values are not a picture's."""
    if img.mode != "F":
        return img
    values = np.asarray(img, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ImageError("the image holds values that are not a number (NaN or infinity): save it as an "
                         "8-bit JPEG or PNG")
    lo, hi = float(values.min()), float(values.max())
    if source_mode.startswith("I;16"):
        top = 65535.0
    elif source_mode == "I":
        if lo < 0 or hi > 65535:
            raise ImageError(f"the image holds 32-bit values from {lo:g} to {hi:g}, outside 0..65535: save it as "
                             "an 8-bit or 16-bit image")
        top = 255.0 if hi <= 255 else 65535.0
    else:
        if lo < 0 or hi > 255:
            raise ImageError(f"the image holds floating-point values from {lo:g} to {hi:g}, not 0..1 or 0..255: "
                             "save it as an 8-bit JPEG or PNG")
        top = 1.0 if hi <= 1 else 255.0
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def _on_white(img: Image.Image) -> Image.Image:
    """An RGB image: transparent pixels composited on white, like the catalogue's."""
    if img.mode == "RGBA":
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return img if img.mode == "RGB" else img.convert("RGB")


def fit_to_canvas(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize ``img`` to fit ``size`` = (height, width) keeping its aspect ratio, padding with white."""
    h, w = size
    if img.size == (w, h):
        return img
    scale = min(w / img.width, h / img.height)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    resized = img.resize(new, Image.BILINEAR)
    if new == (w, h):
        return resized
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    canvas.paste(resized, ((w - new[0]) // 2, (h - new[1]) // 2))
    return canvas
