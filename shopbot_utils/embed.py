"""Embeddings: run the trained model over catalogue images and store vectors + ids with numpy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import __version__
from .data import ImageError, ImageInput
from .artifacts import atomic_writer, read_meta, write_atomic
from .vision import ArtifactError, ShopNet, batches, to_tensor, DEFAULT_IMAGE_SIZE

EMBEDDINGS_FORMAT_VERSION = 1


@torch.inference_mode()
def embed_images(model: ShopNet, images: Sequence[ImageInput],
                 size: tuple[int, int] = DEFAULT_IMAGE_SIZE, batch_size: int = 16,
                 desc: str | None = None) -> np.ndarray:
    """Embeddings (N, embed_dim) float32 of a list of images, in batches."""
    model.eval()
    out = [model.embed(to_tensor(chunk, size)).numpy() for chunk in batches(images, batch_size, desc)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.embed_dim), np.float32)


def embed_files(model: ShopNet, ids: Sequence[int], paths: Sequence[Path],
                size: tuple[int, int] = DEFAULT_IMAGE_SIZE, batch_size: int = 16,
                desc: str | None = "embedding") -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Embed image files, skipping missing or unreadable ones.

    Returns ``(ids, vectors, skipped_ids)``: a bad file costs only its own row.
    """
    ids = np.asarray(ids, dtype=np.int64)
    ok = np.array([Path(p).is_file() and Path(p).stat().st_size > 0 for p in paths], dtype=bool)
    good_ids, good_paths = ids[ok], [p for p, k in zip(paths, ok) if k]
    vectors: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    skipped = ids[~ok].tolist()
    for chunk in batches(np.arange(len(good_paths)), batch_size, desc):
        chunk_paths = [good_paths[i] for i in chunk]
        try:
            vectors.append(embed_images(model, chunk_paths, size, batch_size))
            kept.append(good_ids[chunk])
        except ImageError:  # find the bad file(s) one by one, keep the rest
            for i, p in zip(chunk, chunk_paths):
                try:
                    vectors.append(embed_images(model, [p], size))
                    kept.append(good_ids[[i]])
                except ImageError:
                    skipped.append(int(good_ids[i]))
    if not vectors:
        return np.zeros(0, np.int64), np.zeros((0, model.embed_dim), np.float32), skipped
    return np.concatenate(kept), np.concatenate(vectors), skipped


def save_embeddings(folder: str | Path, ids: np.ndarray, vectors: np.ndarray, model_sha256: str) -> Path:
    """Write ``embeddings.npz`` (ids, vectors) and ``embeddings.json`` (what produced them), each whole
    or not at all (see ``artifacts.atomic_writer``)."""
    folder = Path(folder)
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    path = folder / "embeddings.npz"
    with atomic_writer(path) as f:
        np.savez(f, ids=np.asarray(ids, np.int64), vectors=np.asarray(vectors, np.float32))
    meta = {"format_version": EMBEDDINGS_FORMAT_VERSION, "package_version": __version__,
            "model_sha256": model_sha256, "count": int(len(ids)), "dim": int(vectors.shape[1])}
    write_atomic(folder / "embeddings.json", json.dumps(meta, indent=1))
    return path


def load_embeddings(folder: str | Path, model_sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(ids, vectors)``; ``ArtifactError`` if missing, damaged or made by another model."""
    folder = Path(folder)
    path, meta_path = folder / "embeddings.npz", folder / "embeddings.json"
    meta = read_meta(meta_path, path, None, EMBEDDINGS_FORMAT_VERSION,
                     f"no embeddings in {folder}: run `make run` (or notebook 03) first", "rebuild with `make run`")
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        raise ArtifactError(f"{path} was computed with another model (sha256 {str(meta.get('model_sha256'))[:12]}...) "
                            f"than {folder}/model.pth (sha256 {model_sha256[:12]}...): re-run notebook 03 (or `make run`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, vectors = z["ids"], z["vectors"]
    except Exception as exc:  # noqa: BLE001 - a damaged file gets one clear message
        raise ArtifactError(f"{path} could not be read: {exc}") from None
    if len(ids) != len(vectors) or len(ids) != meta.get("count"):
        raise ArtifactError(f"{path} holds {len(ids)} ids and {len(vectors)} vectors, "
                            f"{meta_path} says {meta.get('count')}")
    return ids, vectors
