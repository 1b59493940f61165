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
from PIL import Image, ImageOps, UnidentifiedImageError

from . import config
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
        marker.write_text(stamp)
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

    def summary(self) -> str:
        """One line per finding, for logs and notebooks."""
        return (f"{self.rows} rows; {len(self.repaired_ids)} rows with extra commas repaired; "
                f"{len(self.dropped_lines)} malformed lines dropped; "
                f"{len(self.images_without_row)} images without a row; "
                f"{len(self.rows_without_image)} rows without an image")


def read_styles(path: str | Path, report: StylesReport | None = None) -> pd.DataFrame:
    """Parse ``styles.csv`` in the Kaggle 10-column form or the 7-column form.

    Lines whose product name holds extra commas are repaired (the surplus fields are joined back
    into ``productDisplayName``, the last column) and their ids listed in ``report``; lines with
    no numeric id or no article type are dropped and their line numbers listed there.
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
    df = df.drop_duplicates("id").set_index("id", drop=False).rename_axis(None)
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
    path = folder / "split.csv"
    split.to_csv(path, index=False)
    classes = sorted(split["articleType"].unique())
    (folder / "classes.json").write_text(json.dumps(classes, indent=1))
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
def load_image(src: ImageInput, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open a path, bytes or PIL image as an RGB image, with a clear error for bad input.

    Transparent images are composited on white (like the catalogue); greyscale, palette and
    CMYK images are converted; images over ``max_pixels`` are refused before decoding.
    """
    if isinstance(src, Image.Image):
        img = src
    else:
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
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageError(f"{name} is not an image PIL can read (JPEG, PNG, WebP, ...)") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is too large to open safely ({exc}): resize it first") from None
        except OSError as exc:
            raise ImageError(f"{name} could not be decoded (truncated or corrupt): {exc}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"the image is {w}x{h} pixels; the most we accept is {max_pixels:,} "
                         "pixels: resize it first")
    if w < 1 or h < 1:
        raise ImageError(f"the image has no pixels ({w}x{h})")
    try:
        img.load()
    except (OSError, SyntaxError) as exc:
        raise ImageError(f"the image could not be decoded (truncated or corrupt): {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"the image is too large to decode safely: {exc}") from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


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
