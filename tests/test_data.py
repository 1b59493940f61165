"""Parsing, finding the catalogue, the split and image loading."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from shopbot_utils import config, data
from shopbot_utils.data import CatalogueNotFoundError, ImageError, StylesReport, load_image, read_styles

from conftest import image_bytes, random_image

KAGGLE = """id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName
15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt
39386,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012,Casual,Peter England Men Party Blue Jeans, Slim, Fit
x12,Men,Apparel
59263,Women,Accessories,Watches,Watches,Silver,Winter,2016,Casual,Titan Women Silver Watch
"""
SEVEN = """id,masterCategory,subCategory,articleType,baseColour,usage,productDisplayName
1163,Apparel,Topwear,Tshirts,Blue,Sports,Nike Sahara Team India Fanwear Round Neck Jersey
1525,Accessories,Bags,Backpacks,Navy Blue,Casual,Puma Deck Navy Blue Backpack
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "styles.csv"
    path.write_text(text)
    return path


def test_kaggle_form_repairs_extra_commas_and_drops_broken_lines(tmp_path):
    report = StylesReport()
    df = read_styles(_write(tmp_path, KAGGLE), report)
    assert df["id"].tolist() == [15970, 39386, 59263]
    assert df.loc[39386, "productDisplayName"] == "Peter England Men Party Blue Jeans, Slim, Fit"
    assert df.loc[39386, "usage"] == "Casual"
    assert report.repaired_ids == [39386]
    assert report.dropped_lines == [4]
    assert {"gender", "season", "year"} <= set(df.columns)


def test_seven_column_form(tmp_path):
    df = read_styles(_write(tmp_path, SEVEN))
    assert list(df.columns) == data.STYLE_COLUMNS
    assert df.loc[1525, "articleType"] == "Backpacks"


def test_not_a_styles_file(tmp_path):
    with pytest.raises(ValueError, match="not a styles.csv"):
        read_styles(_write(tmp_path, "a,b,c\n1,2,3\n"))


def _tiny_catalogue(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    _write(folder, SEVEN)
    random_image().save(folder / "images" / "1163.jpg")
    random_image(mode="L").save(folder / "images" / "999.jpg")  # an image without a row
    return folder


def test_report_images_without_rows_and_rows_without_images(tmp_path):
    cat = data.load_catalogue(_tiny_catalogue(tmp_path / "cat"))
    assert cat.report.images_without_row == [999]
    assert cat.report.rows_without_image == [1525]
    assert cat.styles["id"].tolist() == [1163]


def test_find_catalogue_in_zip_and_nested_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPBOT_CACHE", str(tmp_path / "cache"))
    root = _tiny_catalogue(tmp_path / "src" / "myntradataset")
    assert data.find_catalogue(tmp_path / "src") == root
    archive = tmp_path / "fashion.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in root.rglob("*"):
            zf.write(f, f.relative_to(tmp_path / "src"))
    found = data.find_catalogue(archive)
    assert (found / "styles.csv").read_text() == SEVEN
    assert found.is_relative_to(tmp_path / "cache")


def test_missing_catalogue_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOPBOT_DATA", raising=False)
    monkeypatch.setenv("SHOPBOT_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CatalogueNotFoundError, match="SHOPBOT_DATA"):
        data.find_catalogue()
    monkeypatch.setenv("SHOPBOT_DATA", str(tmp_path / "nope.zip"))
    with pytest.raises(CatalogueNotFoundError, match="does not exist"):
        data.find_catalogue()


def test_download_path_used_when_online(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOPBOT_DATA", raising=False)
    monkeypatch.setenv("SHOPBOT_OFFLINE", "0")
    monkeypatch.setenv("SHOPBOT_CACHE", str(tmp_path / "empty"))
    root = _tiny_catalogue(tmp_path / "kaggle")
    monkeypatch.setattr(data, "_download", lambda: root)
    assert data.find_catalogue() == root

    def fail():
        raise ConnectionError("no network")

    monkeypatch.setattr(data, "_download", fail)
    with pytest.raises(CatalogueNotFoundError, match="no network"):
        data.find_catalogue()


def _styles(n_per_class: dict[str, int]) -> pd.DataFrame:
    rows, i = [], 0
    for cls, n in n_per_class.items():
        for _ in range(n):
            rows.append({"id": i, "articleType": cls, "subCategory": "s", "masterCategory": "m",
                         "baseColour": "c", "usage": "u", "productDisplayName": f"p{i}"})
            i += 1
    return pd.DataFrame(rows)


def test_split_is_stratified_disjoint_and_reproducible():
    styles = _styles({"a": 100, "b": 50, "c": 20, "rare": 5})
    s1 = data.make_split(styles, n_classes=3)
    s2 = data.make_split(styles.sample(frac=1, random_state=3), n_classes=3)
    assert set(s1["articleType"]) == {"a", "b", "c"}
    assert s1.sort_values("id")["split"].tolist() == s2.sort_values("id")["split"].tolist()
    assert s1["id"].is_unique
    frac = s1.groupby("articleType")["split"].apply(lambda s: (s == "test").mean())
    assert frac.between(0.15, 0.25).all()
    assert not s1.equals(data.make_split(styles, n_classes=3, seed=7))


def test_split_per_class_and_round_trip(tmp_path):
    split = data.make_split(_styles({"a": 100, "b": 50}), n_classes=2, per_class=10)
    assert split.groupby("articleType").size().tolist() == [10, 10]
    data.save_split(split, tmp_path)
    back = data.load_split(tmp_path)
    assert back["id"].tolist() == split["id"].tolist()
    assert back["split"].tolist() == split["split"].tolist()


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        data.make_split(_styles({"a": 10}), n_classes=1, valid=0.5, test=0.6)


def test_top_classes_real_catalogue(catalogue):
    classes = data.top_classes(catalogue.styles)
    assert len(classes) == 37
    assert classes[0] == "Tshirts"
    assert catalogue.styles["articleType"].isin(classes).sum() == 35366


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "CMYK", "P"])
def test_load_image_modes_become_rgb(mode, tmp_path):
    img = random_image(mode="RGB").convert(mode) if mode != "CMYK" else random_image(mode="CMYK")
    fmt = "PNG" if mode in ("RGBA", "P") else "JPEG"
    out = load_image(image_bytes(img, fmt))
    assert out.mode == "RGB" and out.size == (60, 80)


def test_load_image_transparent_becomes_white():
    img = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert load_image(img).getpixel((5, 5)) == (255, 255, 255)


def test_load_image_path_bytes_and_pil_agree(tmp_path):
    img = random_image()
    path = tmp_path / "x.png"
    img.save(path)
    a, b, c = load_image(path), load_image(path.read_bytes()), load_image(img)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))


def test_load_image_bad_inputs(tmp_path):
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"%PDF-1.4 this is not a picture")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(image_bytes(random_image((200, 200)))[:600])
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="expected a path"):
        load_image(12345)


def test_load_image_refuses_huge_before_decoding():
    huge = image_bytes(Image.new("1", (20000, 20000)), "PNG")
    with pytest.raises(ImageError, match="too large|20000x20000"):
        load_image(huge)


def test_fit_to_canvas_keeps_aspect_on_white():
    wide = Image.new("RGB", (200, 50), (0, 0, 0))
    out = data.fit_to_canvas(wide, (160, 120))
    assert out.size == (120, 160)
    assert out.getpixel((60, 0)) == (255, 255, 255) and out.getpixel((60, 80)) == (0, 0, 0)
    catalogue_shaped = random_image((60, 80))
    assert data.fit_to_canvas(catalogue_shaped, (160, 120)).size == (120, 160)


def test_config_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOPBOT_ARTIFACTS", str(tmp_path / "a"))
    monkeypatch.setenv("SHOPBOT_FIGURES", str(tmp_path / "f"))
    assert config.artifacts_dir() == tmp_path / "a"
    assert config.figures_dir() == tmp_path / "f"


def test_load_image_refuses_over_our_own_limit():
    with pytest.raises(ImageError, match="9000x9000"):
        load_image(image_bytes(Image.new("1", (9000, 9000)), "PNG"))


# --------------------------------------------------------------------------- hostile and unusual images
def _exif_jpeg(retag: int | None = None) -> bytes:
    """A 40x30 JPEG whose EXIF says "rotate 90°" (orientation 6) and has a Make tag; ``retag`` moves
    the ASCII Make value onto another tag number (0x0140 is a SHORT tag: Pillow cannot write it back)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Canon", 6
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "JPEG", exif=exif.tobytes())
    jpeg = bytearray(buf.getvalue())
    start = jpeg.find(b"Exif\0\0") + 6
    order = "<" if jpeg[start:start + 2] == b"II" else ">"
    ifd = start + struct.unpack(order + "I", jpeg[start + 4:start + 8])[0]
    for k in range(struct.unpack(order + "H", jpeg[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        if retag is not None and struct.unpack(order + "H", jpeg[entry:entry + 2])[0] == 0x010F:
            jpeg[entry:entry + 2] = struct.pack(order + "H", retag)
    return bytes(jpeg)


def test_malformed_exif_is_ignored_not_raised():
    assert load_image(_exif_jpeg()).size == (30, 40)  # orientation 6 is applied
    out = load_image(_exif_jpeg(retag=0x0140))  # an ASCII value on a SHORT tag
    assert out.mode == "RGB" and out.size == (30, 40)
    assert load_image(out).size == (30, 40)  # not rotated twice when loaded again


def _seed_images() -> dict[str, bytes]:
    """One small image per format, with EXIF where the format carries it."""
    rng = np.random.default_rng(config.SEED)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112], exif[0x011A], exif[0x0128] = "Canon", "EOS 5D", 6, 72.0, 2
    out = {}
    for fmt, img, kwargs in [("JPEG", rgb, {"exif": exif.tobytes()}), ("PNG", rgb.convert("RGBA"), {"exif": exif.tobytes()}),
                             ("GIF", rgb.convert("P"), {"transparency": 0}), ("WEBP", rgb, {"exif": exif.tobytes()}),
                             ("TIFF", rgb, {"exif": exif.tobytes()})]:
        buf = io.BytesIO()
        img.save(buf, fmt, **kwargs)
        out[fmt] = buf.getvalue()
    return out


def _mutations(data: bytes, rng: np.random.Generator, n: int):
    """``n`` seeded mutants of ``data``: flipped bytes (in its EXIF block, or the first 200 bytes where
    the headers are, or anywhere), 16-bit fields set to extremes, truncations and duplicated chunks."""
    exif = max(data.find(b"MM\x00\x2a"), data.find(b"II\x2a\x00"))
    hot = (exif, exif + 120) if exif >= 0 else (0, 200)
    for _ in range(n):
        d = bytearray(data)
        kind = rng.integers(5)
        if kind in (0, 1):
            lo, hi = hot if kind == 0 else (0, len(d))
            for _ in range(rng.integers(1, 4)):
                d[rng.integers(lo, min(hi, len(d)))] = rng.integers(256)
        elif kind == 2:
            at = rng.integers(len(d) - 2)
            d[at:at + 2] = (b"\xff\xff", b"\x00\x00", b"\x7f\xff")[rng.integers(3)]
        elif kind == 3:
            d = d[:rng.integers(1, len(d))]
        else:
            at, size = rng.integers(len(d)), rng.integers(1, 64)
            d[at:at] = d[at:at + size]
        yield bytes(d)


def test_fuzzed_images_load_or_get_a_clear_error():
    """3,500 seeded mutants of JPEG/PNG/GIF/WebP/TIFF files: each is an RGB image or an ``ImageError``."""
    import warnings

    rng = np.random.default_rng(config.SEED)
    failures, loaded = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the damage it tolerates
        for fmt, data in _seed_images().items():
            for i, mutant in enumerate(_mutations(data, rng, 700)):
                try:
                    out = load_image(mutant)
                    assert out.mode == "RGB" and min(out.size) >= 1 and max(out.size) <= data_module_max_side()
                    loaded += 1
                except ImageError:
                    pass
                except Exception as exc:  # noqa: BLE001 - what the test looks for
                    failures.append(f"{fmt} #{i}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} mutants raised: {failures[:5]}"
    assert loaded > 500  # most mutants are still pictures: the test is not only exercising the errors


def data_module_max_side() -> int:
    return getattr(data, "MAX_SIDE", 10**9)


def test_large_images_are_decoded_reduced():
    big_png = image_bytes(Image.new("RGB", (6300, 6300), (20, 120, 200)), "PNG")
    assert len(big_png) < 200_000  # the 100 KB upload of the issue
    out = load_image(big_png)
    assert out.size == (1024, 1024) and out.getpixel((500, 500)) == (20, 120, 200)
    wide = load_image(image_bytes(Image.new("RGB", (4000, 1000), (250, 250, 0))))
    assert wide.size == (1024, 256)
    assert load_image(Image.new("RGBA", (3000, 2000), (0, 0, 0, 0))).size == (1024, 683)
    assert load_image(image_bytes(random_image((60, 80)))).size == (60, 80)  # catalogue images untouched


def _gradient(dtype, top) -> np.ndarray:
    return np.linspace(0, top, 256, dtype=np.float64)[None, :].repeat(16, 0).astype(dtype)


@pytest.mark.parametrize("array, fmt", [
    (_gradient(np.uint16, 65535), "PNG"),  # 16-bit grey: mode I;16
    (_gradient(np.uint16, 65535), "TIFF"),
    (_gradient(np.int32, 65535), None),  # mode I, as older Pillow opens 16-bit PNGs
    (_gradient(np.float32, 1.0), "TIFF"),  # mode F in 0..1
    (_gradient(np.float32, 255.0), None),  # mode F in 0..255
])
def test_high_bit_depth_images_are_scaled_not_clipped(array, fmt):
    img = Image.fromarray(array)
    out = np.asarray(load_image(image_bytes(img, fmt) if fmt else img))[..., 0].astype(int)
    assert out[0, 0] == 0 and out[0, -1] == 255
    assert abs(out[0, 128] - 128) <= 2 and (out == 255).mean() < 0.02  # a gradient, not 99.6% white


@pytest.mark.parametrize("array, message", [
    (np.full((8, 8), np.nan, np.float32), "not a number"),
    (_gradient(np.float32, 1000.0), "0..1 or 0..255"),
    (_gradient(np.int32, 10**6), "0..65535"),
])
def test_high_bit_depth_images_out_of_range_are_refused(array, message):
    with pytest.raises(ImageError, match=message):
        load_image(Image.fromarray(array))


def test_duplicate_ids_are_dropped_and_reported(tmp_path):
    report = StylesReport()
    df = read_styles(_write(tmp_path, SEVEN + "1525,Apparel,Topwear,Tshirts,Red,Casual,A second 1525\n"), report)
    assert df["id"].tolist() == [1163, 1525] and df.loc[1525, "articleType"] == "Backpacks"  # the first row kept
    assert report.duplicate_ids == [1525]
    assert "1 rows with a duplicate id dropped" in report.summary()
