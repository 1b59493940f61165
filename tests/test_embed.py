"""Embedding files in batches, skipping bad ones, and the embeddings' save/load checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from shopbot_utils import vision
from shopbot_utils.embed import embed_files, embed_images, load_embeddings, save_embeddings
from shopbot_utils.vision import ArtifactError

from conftest import random_image


@pytest.fixture(scope="module")
def model():
    return vision.create_model("efficientnet_lite0", n_classes=3)


def test_embed_files_skips_missing_and_corrupt_files(model, tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.jpg"
        random_image(seed=i).save(p)
        paths.append(p)
    paths[1].write_bytes(b"not a jpeg")
    paths[3].unlink()
    ids, vectors, skipped = embed_files(model, [10, 11, 12, 13, 14], paths, batch_size=2, desc=None)
    assert ids.tolist() == [10, 12, 14] and sorted(skipped) == [11, 13]
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    alone = embed_images(model, [paths[2]])
    assert np.allclose(vectors[1], alone[0], atol=1e-5)


def test_embedding_batches_agree_with_single_images(model):
    images = [random_image(seed=s) for s in range(4)]
    together = embed_images(model, images, batch_size=4)
    one_by_one = np.concatenate([embed_images(model, [im]) for im in images])
    assert np.allclose(together, one_by_one, atol=1e-4)


def test_save_load_round_trip_and_mismatches(tmp_path):
    ids, vectors = np.array([3, 1, 2]), np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    save_embeddings(tmp_path, ids, vectors, model_sha256="abc")
    ids2, vectors2 = load_embeddings(tmp_path, model_sha256="abc")
    assert ids2.tolist() == [3, 1, 2] and np.array_equal(vectors, vectors2)
    with pytest.raises(ArtifactError, match="another model"):
        load_embeddings(tmp_path, model_sha256="def")
    meta = json.loads((tmp_path / "embeddings.json").read_text())
    (tmp_path / "embeddings.json").write_text(json.dumps(meta | {"format_version": 0}))
    with pytest.raises(ArtifactError, match="format v0"):
        load_embeddings(tmp_path)
    (tmp_path / "embeddings.json").write_text(json.dumps(meta | {"count": 4}))
    with pytest.raises(ArtifactError, match="says 4"):
        load_embeddings(tmp_path)
    with pytest.raises(ValueError, match="3 ids for 2 vectors"):
        save_embeddings(tmp_path, ids, vectors[:2], "abc")
    with pytest.raises(ArtifactError, match="no embeddings"):
        load_embeddings(tmp_path / "none")
