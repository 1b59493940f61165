"""Shared fixtures: the shared catalogue (via SHOPBOT_DATA or ../shared) and a small trained bot."""
from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SHARED_ZIP = SHARED / "data" / "fashion-product-images-small.zip"
# NLTK reads NLTK_DATA when it is first imported: point it at ../shared before any test does.
if (SHARED / "nltk_data").is_dir():
    os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
SHARED_ISNET = SHARED / "models" / "isnet-general-use-quint8.onnx"
if SHARED_ISNET.is_file():
    os.environ.setdefault("SHOPBOT_BG_MODEL", str(SHARED_ISNET))


# ----------------------------------------------------------------- golden notebooks (nbval)
# nbval starts each notebook's kernel with this process's environment, before its first cell runs:
# the hooks below point it at the real catalogue and at one temporary artifacts folder that the
# golden notebooks share, in order (01 writes the split that 02 trains on...), and put the
# environment back for the other tests.
_golden_work: list[Path] = []
_saved_env: dict[str, str | None] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.path.suffix != ".ipynb":
        return
    from shopbot_utils.report import golden_environment

    source = Path(os.environ.get("SHOPBOT_DATA") or SHARED_ZIP)
    if not source.exists():
        pytest.skip("the catalogue is not here: set SHOPBOT_DATA or put ../shared beside the checkout")
    if not _golden_work:
        _golden_work.append(Path(tempfile.mkdtemp(prefix="shopbot-golden-")))
    env = golden_environment(_golden_work[0]) | {"SHOPBOT_DATA": str(source)}
    _saved_env.update({k: os.environ.get(k) for k in env if k not in _saved_env})
    os.environ.update(env)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    if item.path.suffix == ".ipynb":
        for k, v in _saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _saved_env.clear()


def pytest_sessionfinish(session):
    for work in _golden_work:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never download."""
    monkeypatch.setenv("SHOPBOT_OFFLINE", "1")


@pytest.fixture(scope="session")
def catalogue_source() -> Path:
    """The real catalogue (zip or folder): SHOPBOT_DATA, else ../shared."""
    value = os.environ.get("SHOPBOT_DATA")
    path = Path(value) if value else SHARED_ZIP
    if not path.exists():
        pytest.skip("the catalogue is not here: set SHOPBOT_DATA or put ../shared beside the checkout")
    return path


@pytest.fixture(scope="session")
def catalogue(catalogue_source):
    from shopbot_utils.data import load_catalogue

    return load_catalogue(catalogue_source)


@pytest.fixture(scope="session")
def small_artifacts(tmp_path_factory, catalogue):
    """A bot trained in CPU mode on 30 products per class (3 epochs), split images embedded."""
    from shopbot_utils import pipeline
    from shopbot_utils.data import make_split, save_split

    folder = tmp_path_factory.mktemp("artifacts")
    split = make_split(catalogue.styles, per_class=30)
    save_split(split, folder)
    result = pipeline.train_model(folder, catalogue, split, mode="cpu", epochs=3)
    pipeline.embed_catalogue(folder, catalogue, scope="split")
    return folder, result


@pytest.fixture(scope="session")
def bot(small_artifacts):
    from shopbot_utils import ShopBot

    return ShopBot.load(small_artifacts[0])


def need_browser() -> None:
    """Skip a browser test without chromium, with a message; where ``SHOPBOT_REQUIRE_BROWSER=1`` (CI), fail."""
    from shopbot_utils.browser import browser_problem

    problem = browser_problem()
    if problem and os.environ.get("SHOPBOT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test must run here (SHOPBOT_REQUIRE_BROWSER=1), but {problem}")
    if problem:
        pytest.skip(f"browser test skipped: {problem}")


def image_bytes(img: Image.Image, fmt: str = "JPEG") -> bytes:
    """Encode a PIL image."""
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def random_image(size=(60, 80), mode="RGB", seed=0) -> Image.Image:
    """A small noise image."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4}.get(mode)
    shape = (size[1], size[0], channels) if channels else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@pytest.fixture(scope="session")
def chat_artifacts(tmp_path_factory, small_artifacts):
    """The small bot's artifacts plus an intent model (the patterns alone, 40 epochs) and the text
    search: everything the chat uses."""
    import shutil

    from shopbot_utils.intents import build_intents
    from shopbot_utils.pipeline import build_text_search

    folder = tmp_path_factory.mktemp("chat") / "artifacts"
    shutil.copytree(small_artifacts[0], folder)
    build_intents(folder, bitext=None, clinc=None, baseline=False)
    build_text_search(folder)
    return folder


def tiny_modnet(path, names=("input", "output")):
    """An ONNX graph with MODNet's contract: matte = sigmoid(10 * mean over RGB of the scaled input)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [names[0], "axes"], ["m"], keepdims=1),
         helper.make_node("Mul", ["m", "ten"], ["s"]), helper.make_node("Sigmoid", ["s"], [names[1]])],
        "tiny_modnet",
        [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [1, 1, "h", "w"])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]), helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path
