"""Background removal for shoppers' photos: image in, alpha mask / cut-out out.

Backends (``get_backend(name)``):

- ``isnet``: ISNet "general use" (DIS) salient-object segmentation, ONNX via onnxruntime. The
  published graph only runs at 1024x1024 (its Resize sizes are constants), about 2 s per image
  on 2 CPU cores; ``rewrite_isnet`` scales those constants so that it runs at 320-768 px.
- ``modnet``: the poster's portrait-matting model, from an ONNX file the user supplies
  (``SHOPBOT_MODNET_MODEL``; CC BY-NC-SA weights, so never the default).
- ``grabcut``: OpenCV's GrabCut, no weights: the offline fallback.
- ``none``: keep everything.
- ``auto``: decide per photo. A photo whose border is mostly near-white already looks like a
  catalogue packshot and is kept as it is (``looks_like_packshot``, well under a millisecond); any
  other photo goes to the best remover here (``best_backend``: isnet when its model is available,
  else grabcut).

``prepare_query`` is what ``ShopBot.similar(remove_background=...)`` runs: when the background is
removed, the cut-out is composited on white, like the catalogue, and cropped to the product.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from . import config
from .config import logger
from .data import ImageInput, load_image
from .artifacts import ArtifactError  # not .vision (torch): a chat over the API cuts out with no model here

ISNET_NATIVE = 1024
#: Default ISNet working size, measured on 300 pasted-background queries (two seeds of notebook 05's
#: set, main-object filter on): mean IoU 0.78 at 512 px (0.24 s), 0.84 at 704 (0.46 s), 0.87 at 768
#: (0.56 s), 0.87 at 832 and 896 (0.62, 0.76 s); the published 1024 px graph takes 1.1 s.
ISNET_SIZE = 768
#: Mask components smaller than this fraction of the largest one are dropped (see ``main_object``).
MIN_COMPONENT = 0.5
#: Images smaller than this (either side) are kept whole: there is nothing to segment reliably.
MIN_SIDE = 16
#: ``auto`` keeps a photo whose border ring is at least this fraction near-white (a packshot). Chosen on
#: 2,000 catalogue photos and 1,000 composites drawn apart from the benchmark's. Measured by
#: ``benchmarks/bench_background.py`` on the test split (7,072 products): it cuts out 1.6% of their
#: catalogue photos (models cut by the frame, studio-grey backdrops) and keeps none of their pasted
#: composites (whose highest share is about 0.23).
PACKSHOT_BORDER = 0.5
#: Near-white: every channel at least this (the catalogue's white, JPEG noise included).
WHITE_LEVEL = 225
#: The border ring is this fraction of the short side of the photo, looked at about ``CHECK_PX`` px.
BORDER_RING = 0.06
CHECK_PX = 96


class BackgroundModelError(ArtifactError):
    """A background-removal model is missing or does not have the expected inputs/outputs."""


class Backend(Protocol):
    name: str

    def mask(self, image: Image.Image) -> np.ndarray:
        """Foreground alpha (H, W) float32 in 0..1 for an RGB image."""


# --------------------------------------------------------------------------- ONNX backends
def isnet_model_path(download: bool = False) -> Path:
    """``SHOPBOT_BG_MODEL``, else the download registry's copy, else rembg's cache (``U2NET_HOME`` or
    ~/.u2net), else a ``BackgroundModelError`` saying what to set. Only with ``download`` (a build
    step: ``pipeline.prerequisites``) is it fetched, through the registry (checked by rembg's MD5,
    written atomically); a serving kernel never downloads."""
    from .downloads import DownloadError, fetch, local

    path = config.bg_model()
    if path is not None:
        if not path.is_file():
            raise BackgroundModelError(f"SHOPBOT_BG_MODEL={path} is not a file")
        return path
    rembg = config.u2net_home() / "isnet-general-use.onnx"
    found = local("isnet") or (rembg if rembg.is_file() else None)
    if found is not None:
        return found
    if not download:
        raise BackgroundModelError("no ISNet model: set SHOPBOT_BG_MODEL to isnet-general-use(.quint8).onnx "
                                   f"(or put it at {rembg}, or fetch it with shopbot_utils.downloads.fetch('isnet')); "
                                   "background removal falls back to grabcut")
    try:
        return fetch("isnet", download=True)
    except DownloadError as exc:
        raise BackgroundModelError(f"{exc} (or set SHOPBOT_BG_MODEL)") from None


def rewrite_isnet(model_bytes: bytes, size: int) -> bytes:
    """The ISNet graph made to run at ``size`` x ``size`` (a multiple of 32).

    Every ``Resize`` in the exported graph has constant target sizes computed for a 1024 px input
    (so a different input shape fails where a ``Concat`` meets a mismatched upsampled map). We
    scale each of those constants by ``size / 1024`` and change the declared input and output
    shapes; the weights are untouched.
    """
    import onnx
    from onnx import numpy_helper

    if size % 32 or not 64 <= size <= ISNET_NATIVE:
        raise ValueError(f"ISNet size must be a multiple of 32 between 64 and {ISNET_NATIVE}, got {size}")
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done = set()
    for node in graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or node.input[3] not in inits or node.input[3] in done:
            continue
        sizes = numpy_helper.to_array(inits[node.input[3]]).copy()
        if ((sizes[2:] * size) % ISNET_NATIVE).any():
            raise ValueError(f"{node.name}: sizes {sizes.tolist()} do not scale to {size} px")
        sizes[2:] = sizes[2:] * size // ISNET_NATIVE
        inits[node.input[3]].CopyFrom(numpy_helper.from_array(sizes.astype(np.int64), node.input[3]))
        done.add(node.input[3])
    if not done:
        raise BackgroundModelError("this ONNX graph has no constant Resize sizes: is it ISNet?")
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[2].dim_value, dims[3].dim_value = size, size
    del graph.value_info[:]  # inferred shapes for 1024 px would now be wrong
    return model.SerializeToString()


@lru_cache(maxsize=8)
def _session(model_path: str, size: int | None):
    import onnxruntime as ort

    data = Path(model_path).read_bytes()
    if size is not None and size != ISNET_NATIVE:
        data = rewrite_isnet(data, size)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad files
        raise BackgroundModelError(f"{model_path} is not a model onnxruntime can run: {exc}") from None


def _check_contract(session, model_path: str | Path) -> None:
    """Input ``input`` [1,3,H,W] float and output ``output`` [1,1,H,W]: ISNet's and MODNet's contract."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [i.name for i in inputs], [o.name for o in outputs]
    if names[0][:1] != ["input"] or "output" not in names[1] or len(inputs[0].shape) != 4:
        raise BackgroundModelError(f"{model_path}: expected input 'input' [1,3,H,W] and output 'output' "
                                   f"[1,1,H,W], found inputs {names[0]} and outputs {names[1][:3]}")


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float mask resized bilinearly to PIL ``size`` = (width, height)."""
    return np.asarray(Image.fromarray(mask.astype(np.float32), "F").resize(size, Image.BILINEAR), np.float32)


class IsnetBackend:
    """ISNet general-use at ``size`` px (the graph rewritten when ``size`` != 1024)."""

    name = "isnet"

    def __init__(self, model_path: str | Path | None = None, size: int = ISNET_SIZE):
        self.model_path = str(model_path or isnet_model_path())
        self.size = int(size)
        self.session = _session(self.model_path, self.size)
        _check_contract(self.session, self.model_path)

    def mask(self, image: Image.Image) -> np.ndarray:
        x = np.asarray(image.convert("RGB").resize((self.size, self.size), Image.BILINEAR), np.float32)
        x = ((x - 128.0) / 256.0).transpose(2, 0, 1)[None]
        out = self.session.run(["output"], {"input": x})[0][0, 0]
        lo, hi = float(out.min()), float(out.max())
        out = (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)  # as rembg normalises it
        return _resize_mask(out, image.size)


class ModnetBackend:
    """MODNet portrait matting from a user-supplied ONNX export (``SHOPBOT_MODNET_MODEL``).

    Contract (the official ``export_onnx.py``): input ``input`` [1,3,H,W] RGB scaled
    (x - 127.5) / 127.5 with H, W multiples of 32 (reference short side 512), output ``output``
    [1,1,H,W] matte in 0..1.
    """

    name = "modnet"

    def __init__(self, model_path: str | Path | None = None, ref_size: int = 512):
        path = model_path or config.modnet_model()
        if not path or not Path(path).is_file():
            raise BackgroundModelError("MODNet needs its ONNX export (CC BY-NC-SA weights, not shipped): set "
                                       "SHOPBOT_MODNET_MODEL to modnet.onnx from ZHKKKe/MODNet's export_onnx.py")
        self.model_path, self.ref_size = str(path), int(ref_size)
        self.session = _session(self.model_path, None)
        _check_contract(self.session, self.model_path)

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """MODNet's own rule: short side to ``ref_size``, both sides rounded down to a multiple of 32."""
        scale = self.ref_size / min(width, height)
        return (max(32, int(width * scale) // 32 * 32), max(32, int(height * scale) // 32 * 32))

    def mask(self, image: Image.Image) -> np.ndarray:
        w, h = self.input_size(*image.size)
        x = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), np.float32)
        x = ((x - 127.5) / 127.5).transpose(2, 0, 1)[None]
        out = self.session.run(["output"], {"input": x})[0][0, 0]
        return _resize_mask(np.clip(out, 0, 1), image.size)


class GrabCutBackend:
    """OpenCV GrabCut initialised with a rectangle ``margin`` inside the border (no weights needed).

    Runs on a copy at most ``work_size`` px on its long side for speed."""

    name = "grabcut"

    def __init__(self, iterations: int = 4, margin: float = 0.04, work_size: int = 240):
        self.iterations, self.margin, self.work_size = iterations, margin, work_size

    def mask(self, image: Image.Image) -> np.ndarray:
        import cv2

        scale = min(1.0, self.work_size / max(image.size))
        small = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                            Image.BILINEAR)
        bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])
        h, w = bgr.shape[:2]
        mx, my = max(1, int(w * self.margin)), max(1, int(h * self.margin))
        labels = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(config.SEED)
        cv2.grabCut(bgr, labels, (mx, my, w - 2 * mx, h - 2 * my), bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
        return _resize_mask(fg, image.size)


class NoBackend:
    """Keep the whole photo."""

    name = "none"

    def mask(self, image: Image.Image) -> np.ndarray:
        return np.ones((image.height, image.width), np.float32)


# --------------------------------------------------------------------------- deciding per photo
def white_border(image: Image.Image, ring: float = BORDER_RING, level: int = WHITE_LEVEL) -> float:
    """The fraction of the photo's border ring (``ring`` of its short side) whose pixels are near-white
    (every channel >= ``level``), on a copy shrunk by a whole factor (box average) to about ``CHECK_PX`` px."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    factor = max(1, max(image.size) // CHECK_PX)
    rgb = np.asarray((image.reduce(factor) if factor > 1 else image).convert("RGB"))
    h, w = rgb.shape[:2]
    b = max(1, round(ring * min(h, w)))
    edge = np.ones((h, w), bool)
    edge[b:h - b, b:w - b] = False
    return float((rgb[edge].min(axis=1) >= level).mean())


def looks_like_packshot(image: Image.Image, threshold: float = PACKSHOT_BORDER) -> bool:
    """Does the photo already look like a catalogue packshot (its border mostly near-white)?"""
    return white_border(image) >= threshold


class AutoBackend:
    """Remove the background only when the photo needs it: ``remover`` (default ``best_backend()``)
    on a photo that does not look like a packshot (``looks_like_packshot``), nothing on one that does.

    >>> auto = AutoBackend(GrabCutBackend())
    >>> auto.choose(Image.new("RGB", (80, 60), "white")).name
    'none'
    """

    name = "auto"

    def __init__(self, remover: Backend | None = None, threshold: float = PACKSHOT_BORDER):
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold is a fraction of the border in (0, 1], got {threshold}")
        self.remover = remover if remover is not None else best_backend()
        self.threshold = threshold

    def choose(self, image: Image.Image) -> Backend:
        """The backend this photo needs: ``NoBackend`` for a packshot, else the remover."""
        return NoBackend() if looks_like_packshot(image, self.threshold) else self.remover

    def mask(self, image: Image.Image) -> np.ndarray:
        return self.choose(image).mask(image)


BACKENDS = ("auto", "isnet", "modnet", "grabcut", "none")


def best_backend(**options) -> Backend:
    """The remover used when a photo needs one: isnet when its model is available, else grabcut."""
    try:
        return IsnetBackend(**options)
    except BackgroundModelError as exc:
        logger.warning("background removal: %s; using grabcut", exc)
        return GrabCutBackend()


@lru_cache(maxsize=16)
def get_backend(name: str = "auto", **options) -> Backend:
    """A backend by name (``BACKENDS``); ``auto`` decides per photo (``AutoBackend`` over
    ``best_backend(**options)``)."""
    if name == "auto":
        return AutoBackend(best_backend(**options))
    factories = {"isnet": IsnetBackend, "modnet": ModnetBackend, "grabcut": GrabCutBackend, "none": NoBackend}
    if name not in factories:
        raise ValueError(f"unknown background-removal backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return factories[name](**options)


def resolve_backend(choice: bool | str | Backend = "auto", **options) -> Backend:
    """What ``remove_background=`` means everywhere: ``"auto"`` (decide per photo), ``True`` (always,
    with ``best_backend``), ``False`` or ``None`` (never), a name from ``BACKENDS``, or a backend."""
    if choice is True:
        return best_backend(**options)
    if choice is False or choice is None:
        return NoBackend()
    if isinstance(choice, str):
        return get_backend(choice, **options)
    if callable(getattr(choice, "mask", None)):
        return choice
    raise ValueError(f"remove_background must be 'auto', True, False, a backend name ({', '.join(BACKENDS)}) "
                     f"or a backend, got {choice!r}")


# --------------------------------------------------------------------------- cut-outs
@dataclass
class Cutout:
    """The result of background removal: ``removed`` says whether the background was removed, ``note``
    says so in words ("background removed with isnet", "background kept: ...")."""

    image: Image.Image  # the input, RGB
    mask: np.ndarray  # alpha (H, W) in 0..1
    backend: str  # the backend that ran ("none" when auto kept a packshot)
    seconds: float  # the whole decision: auto's check, then the backend
    removed: bool = True
    note: str = ""
    border: float | None = None  # auto's measure: the near-white fraction of the border (see white_border)

    def query(self) -> Image.Image:
        """What similar() embeds: the cut-out on white, cropped to it (``on_white``), or the photo as it is."""
        return self.on_white(crop=True) if self.removed else self.image

    def rgba(self) -> Image.Image:
        """The cut-out with the mask as its alpha channel."""
        out = self.image.convert("RGBA")
        out.putalpha(Image.fromarray((self.mask * 255).round().astype(np.uint8), "L"))
        return out

    def on_white(self, crop: bool = True, margin: float = 0.04) -> Image.Image:
        """Composited on white like the catalogue and, with ``crop``, cropped to the product."""
        alpha = self.mask[:, :, None]
        rgb = np.asarray(self.image, np.float32) * alpha + 255.0 * (1 - alpha)
        out = Image.fromarray(rgb.round().astype(np.uint8), "RGB")
        box = mask_box(self.mask, margin) if crop else None
        return out.crop(box) if box else out


def mask_box(mask: np.ndarray, margin: float = 0.04, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom) of the mask above ``threshold``, with a margin; None if empty."""
    ys, xs = np.nonzero(mask > threshold)
    if not len(xs):
        return None
    h, w = mask.shape
    pad = int(round(margin * max(xs.max() - xs.min(), ys.max() - ys.min())))
    return (max(0, xs.min() - pad), max(0, ys.min() - pad), min(w, xs.max() + 1 + pad), min(h, ys.max() + 1 + pad))


def main_object(mask: np.ndarray, min_fraction: float = MIN_COMPONENT) -> np.ndarray:
    """``mask`` without its connected regions (above 0.5) smaller than ``min_fraction`` of the largest.

    A shopper photographs one product; a salient model also picks up whatever else stands out (a
    face, a coin, a clock). Dropping the smaller regions raised ISNet's mean IoU on 300 pasted
    queries from 0.85 to 0.87 at 768 px (0.77 to 0.78 at 512); the kept regions' soft edges stay.
    """
    from scipy import ndimage

    labels, n = ndimage.label(mask > 0.5)
    if n <= 1:
        return mask
    areas = np.bincount(labels.ravel())[1:]
    small = np.flatnonzero(areas < min_fraction * areas.max()) + 1
    return np.where(np.isin(labels, small), 0.0, mask).astype(np.float32)


def remove_background(image: ImageInput, backend: bool | str | Backend = "auto") -> Cutout:
    """Cut the product out of a photo (the main object, see ``main_object``) when ``backend`` says so
    (see ``resolve_backend``; ``auto`` checks the photo first). Tiny images (< ``MIN_SIDE`` px), and
    photos where the backend finds nothing, are kept whole."""
    img = load_image(image)
    engine = resolve_backend(backend)
    start = time.perf_counter()
    border = None
    if isinstance(engine, AutoBackend):
        border = white_border(img)
        engine = NoBackend() if border >= engine.threshold else engine.remover
    keep = None
    if engine.name == "none":
        keep = ("the photo already looks like a catalogue photo "
                f"({border:.0%} of its border is white)") if border is not None else "removal is off"
        mask = np.ones((img.height, img.width), np.float32)
    elif min(img.size) < MIN_SIDE:
        keep = f"the photo is under {MIN_SIDE} px, too small to cut out"
        mask = np.ones((img.height, img.width), np.float32)
    else:
        mask = main_object(engine.mask(img))
        if (mask > 0.5).mean() < 0.002:  # nothing found: better the whole photo than an empty query
            logger.info("background removal (%s) found no product; keeping the whole photo", engine.name)
            keep = f"{engine.name} found no product in the photo"
            mask = np.ones_like(mask)
    note = f"background kept: {keep}" if keep else f"background removed with {engine.name}"
    return Cutout(img, mask, engine.name, time.perf_counter() - start, keep is None, note, border)


def prepare_query(image: ImageInput, backend: bool | str | Backend = "auto") -> Image.Image:
    """What similar() embeds for a shopper's photo: the product on white, cropped to it, when the
    background is removed (``Cutout.query``)."""
    return remove_background(image, backend).query()


def to_png_bytes(image: Image.Image) -> bytes:
    """PNG-encode an image (for uploads in tests and the demo)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
