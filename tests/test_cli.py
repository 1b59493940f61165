"""The command line end to end on the small test artifacts: ``similar`` and ``classify`` with each
``--background`` option, ``refine``, ``more-like``, and the same one-line error for a bad photo."""
from __future__ import annotations

import json
import os
import re

import pytest

from shopbot_utils.__main__ import main
from shopbot_utils.background import get_backend, white_border
from shopbot_utils.background_bench import make_composites
from shopbot_utils.data import ImageError, load_image

from conftest import image_bytes, random_image, tiny_modnet

needs_isnet = pytest.mark.skipif(not os.environ.get("SHOPBOT_BG_MODEL"), reason="no ISNet model (SHOPBOT_BG_MODEL)")
#: What auto uses to cut out here: ISNet when its model is given, else GrabCut.
REMOVER = "isnet" if os.environ.get("SHOPBOT_BG_MODEL") else "grabcut"


@pytest.fixture(scope="module")
def photos(tmp_path_factory, small_artifacts, catalogue):
    """A valid-split product's catalogue photo (a packshot) and the same product pasted on a photo."""
    folder = tmp_path_factory.mktemp("photos")
    valid = small_artifacts[1].valid["id"].astype(int).tolist()
    pid = next(i for i in valid if white_border(load_image(catalogue.image_path(i))) == 1.0)
    packshot = folder / "packshot.jpg"
    packshot.write_bytes(catalogue.image_path(pid).read_bytes())
    street = folder / "street.png"
    make_composites({pid: packshot}, seed=4)[0].image.save(street)
    return {"id": pid, "packshot": str(packshot), "street": str(street)}


@pytest.fixture
def modnet(tmp_path, monkeypatch):
    """A graph with MODNet's contract as SHOPBOT_MODNET_MODEL (the real weights are never shipped)."""
    monkeypatch.setenv("SHOPBOT_MODNET_MODEL", str(tiny_modnet(tmp_path / "modnet.onnx")))
    get_backend.cache_clear()
    yield
    get_backend.cache_clear()


def run(capsys, artifacts, *argv) -> tuple[int, list[str], str]:
    status = main(["--artifacts", str(artifacts[0]), *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


@pytest.mark.parametrize("option, note", [
    ("auto", f"background removed with {REMOVER}"),
    ("none", "background kept: removal is off"),
    pytest.param("isnet", "background removed with isnet", marks=needs_isnet),
    ("grabcut", "background removed with grabcut"),
    ("modnet", r"background (removed with modnet|kept: modnet found no product in the photo)"),
])
def test_similar_and_classify_take_each_background_option(option, note, photos, small_artifacts, capsys, modnet):
    status, out, err = run(capsys, small_artifacts, "similar", photos["street"], "-k", "3", "--background", option)
    assert status == 0 and err == "" and re.fullmatch(note, out[0]), (out, err)
    assert out[1].split()[:2] == ["score", "id"] and len(table(out)) == 3
    status, out, _ = run(capsys, small_artifacts, "classify", photos["street"], "--top", "2", "--background", option)
    assert status == 0 and re.fullmatch(note, out[0]) and len(out) == 3
    status, out, _ = run(capsys, small_artifacts, "similar", photos["street"], "-k", "2", "--background", option, "--json")
    answer = json.loads("\n".join(out))
    assert re.fullmatch(note, answer["background"]["note"]) and len(answer["products"]) == 2
    assert answer["background"]["removed"] is (option != "none" and "kept" not in answer["background"]["note"])


def test_auto_is_the_default_and_keeps_a_packshot(photos, small_artifacts, capsys):
    status, out, _ = run(capsys, small_artifacts, "similar", photos["packshot"], "-k", "3")
    assert status == 0 and out[0] == ("background kept: the photo already looks like a catalogue photo "
                                      "(100% of its border is white)")
    assert str(photos["id"]) in out[2]  # a valid-split product: its own catalogue photo comes first
    assert run(capsys, small_artifacts, "similar", photos["packshot"], "-k", "3", "--background", "none")[1][1:] == out[1:]
    status, out, _ = run(capsys, small_artifacts, "classify", photos["packshot"], "--top", "1")
    assert status == 0 and out[0].startswith("background kept: the photo already looks like")


def table(out: list[str]) -> list[str]:
    """The product rows under the table's header."""
    header = next(i for i, line in enumerate(out) if line.split()[:2] == ["score", "id"])
    return out[header + 1:]


def test_refine_a_product_or_a_photo(photos, small_artifacts, bot, capsys):
    shirt = int(bot.products[(bot.products["articleType"] == "Tshirts") & (bot.products["baseColour"] != "Black")].index[0])
    status, out, _ = run(capsys, small_artifacts, "refine", shirt, "in black", "-k", "3")
    assert status == 0 and out[0] == "understood: articleType: Tshirts; baseColour: Black"  # the product's type kept
    rows = table(out)
    assert len(rows) == 3 and all(" Tshirts " in r and " Black " in r for r in rows)
    assert str(shirt) not in [r.split()[1] for r in rows]
    status, out, _ = run(capsys, small_artifacts, "refine", photos["street"], "in black", "--background", "grabcut")
    assert status == 0 and out[0] == "background removed with grabcut" and "baseColour: Black" in out[1]
    relaxed = any(line.startswith("No Black") for line in out)  # when no product of that type is black
    assert len(table(out)) == 5 and (relaxed or all(" Black " in r for r in table(out)))
    status, out, _ = run(capsys, small_artifacts, "refine", shirt, "for women", "--json")
    answer = json.loads("\n".join(out))
    assert "background" not in answer and answer["understood"]["gender"] == ["Women"]
    assert all(p["articleType"] == "Tshirts" for p in answer["products"])
    status, _, err = run(capsys, small_artifacts, "refine", 999_999_999, "in black")
    assert status == 2 and err == "error: no product with id 999999999 in the catalogue\n"


def test_more_like_a_product(small_artifacts, bot, capsys):
    watch = int(bot.products[bot.products["articleType"] == "Watches"].index[0])
    status, out, _ = run(capsys, small_artifacts, "more-like", watch, "-k", "4")
    assert status == 0 and len(out) == 5 and str(watch) not in [r.split()[1] for r in out[1:]]
    assert json.loads("\n".join(run(capsys, small_artifacts, "more-like", watch, "-k", "2", "--json")[1]))["products"]
    status, _, err = run(capsys, small_artifacts, "more-like", 999_999_999)
    assert status == 2 and err == "error: no product with id 999999999 in the catalogue\n"


def bad_photo(kind: str, folder):
    path = folder / f"{kind}.jpg"
    data = {"empty": b"", "text": b"shoes please", "truncated": image_bytes(random_image((300, 300)))[:2000]}
    if kind != "missing":
        path.write_bytes(data[kind])
    return path


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "missing"])
def test_a_bad_photo_is_the_same_one_line_error_everywhere(kind, small_artifacts, bot, capsys, tmp_path):
    path = bad_photo(kind, tmp_path)
    with pytest.raises(ImageError) as raised:
        load_image(path)
    message = str(raised.value)
    assert "\n" not in message
    for argv in (["similar", path], ["similar", path, "--background", "none"], ["classify", path],
                 ["classify", path, "--background", "grabcut"], ["refine", path, "in black"]):
        status, out, err = run(capsys, small_artifacts, *argv)
        assert (status, out, err) == (2, [], f"error: {message}\n"), argv
    for call in (lambda: bot.similar(path), lambda: bot.classify(path), lambda: bot.refine(path, "in black"),
                 lambda: bot.similar(path, remove_background=False)):
        with pytest.raises(ImageError) as raised:
            call()
        assert str(raised.value) == message


def test_bad_options_are_one_line_errors(photos, small_artifacts, capsys, monkeypatch):
    monkeypatch.delenv("SHOPBOT_MODNET_MODEL", raising=False)
    get_backend.cache_clear()
    status, out, err = run(capsys, small_artifacts, "similar", photos["street"], "--background", "modnet")
    assert status == 2 and out == [] and err.startswith("error: MODNet needs its ONNX export") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--artifacts", str(small_artifacts[0]), "similar", photos["street"], "--background", "magic"])
    assert "invalid choice: 'magic'" in capsys.readouterr().err
    status, _, err = run(capsys, small_artifacts, "similar", photos["street"], "-k", "0")
    assert status == 2 and err == "error: k must be a positive whole number, got 0\n"
