"""Plain networks of the anomaly detector: VGG16 feature extractor, VAE and ViT scorer.

Only `nn.Module`s live here; scoring, calibration and loading are in `detector.py` and `checkpoint.py`.
Module and parameter names follow the published MedSight reference code (`VAEEncoder.net`, `fc_mu`,
`fc_var`, `ViTAnomalyScorer.blocks[i].attn.qkv`, ...) so its checkpoints load without renaming.

Parameter counts (asserted in tests):
    VAE 1,318,656 = encoder 560,512 + fc_mu/fc_var 131,584 + decoder 626,560.
    ViT 1,209,729 = patch embedding 4,224 + CLS 128 + positions 1,152 + 6 blocks x 197,888
                    + final LayerNorm 256 + head 16,641 (Linear 128→128, GELU, Dropout, Linear 128→1).
    A block is pre-norm attention with a bias-free fused qkv projection (as published) plus a GELU MLP
    128→512→128; `nn.TransformerEncoderLayer` would carry 384 extra qkv bias terms per block.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

FEATURE_DIM = 512
LATENT_DIM = 256
VAE_HIDDEN = (512, 384, 256)
VIT_PATCH_DIM = 32
VIT_DEPTH = 6
VIT_HEADS = 8
VIT_MLP_DIM = 512
VIT_DROPOUT = 0.1

#: Seed of the demo-tier extractor. Changing it changes the extractor hash and invalidates every
#: demo checkpoint, so it is a constant, not a setting.
DEMO_VGG_SEED = 1606

#: Index in `vgg16().features` of the ReLU closing the last conv block (conv5_3), before the final
#: max-pool: the activation map (512 x 14 x 14 at 224 px) used for spatial explanations.
LAST_CONV_RELU_INDEX = 29
#: That layer as a reader names it, in map details and in the files fitted on its activations.
LAYER_NAME = f"VGG16 features[{LAST_CONV_RELU_INDEX}] (conv5_3 + ReLU), 14×14 at 224 px"

EXTRACTOR_IMAGENET = "imagenet"
EXTRACTOR_DEMO = "demo-seeded"
EXTRACTOR_PHANTOM = "demo-phantom"
EXTRACTOR_LABELS = {
    EXTRACTOR_IMAGENET: "ImageNet VGG16 features (torchvision IMAGENET1K_V1)",
    EXTRACTOR_DEMO: "demo — not ImageNet features (VGG16 with fixed seeded random weights)",
    EXTRACTOR_PHANTOM: "demo — VGG16 fine-tuned on synthetic phantoms, not ImageNet features",
}

#: Weights file of the phantom-trained demo extractor (shipped in models/, see `save_phantom_extractor`).
PHANTOM_EXTRACTOR_FILE = "anomaly_vgg16_phantom.pt"
PHANTOM_EXTRACTOR_FORMAT = "medsight-vgg16-phantom"
#: First index in `vgg16().features` of the layers trained on phantoms (conv5_1 … pool5); blocks 1–4
#: (indices 0–23, through pool4) keep the seeded weights.
PHANTOM_TRAINABLE_FROM = 24


class VGG16Features(nn.Module):
    """Frozen VGG16 convolutional trunk → global average pool → 512-vector.

    `features` is exactly torchvision's `vgg16().features` (same layers, same state-dict keys), so
    ImageNet weights load into it directly. The module is always in eval mode with frozen parameters;
    gradients still flow to its input and activations, which spatial explanations need.

    Attributes:
        kind: "imagenet", "demo-phantom" (block 5 trained on phantoms) or "demo-seeded".
        sha256: hash of the weights (see `state_dict_sha256`), set by the builders.
    """

    def __init__(self, kind: str = EXTRACTOR_DEMO) -> None:
        super().__init__()
        self.features = make_layers(cfgs["D"], batch_norm=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = FEATURE_DIM
        self.kind = kind
        self.sha256 = ""
        self.freeze()

    def freeze(self) -> "VGG16Features":
        for param in self.parameters():
            param.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "VGG16Features":
        # Frozen feature extractor: never switch to training behaviour.
        return super().train(False)

    @property
    def target_layer(self) -> nn.Module:
        """The ReLU closing the last conv block (conv5_3): its 512×14×14 output at 224 px is what maps explain."""
        return self.features[LAST_CONV_RELU_INDEX]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward_with_activations(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """512-vector plus the last conv block's activation map (B, 512, 14, 14).

        When autograd is on, the activation map is made to require grad even if the input does not,
        so `torch.autograd.grad(score, activations)` works for Grad-CAM.
        """
        trunk = self.features[: LAST_CONV_RELU_INDEX + 1]
        tail = self.features[LAST_CONV_RELU_INDEX + 1 :]
        activations = trunk(x)
        if torch.is_grad_enabled() and not activations.requires_grad:
            activations.requires_grad_(True)
        pooled = torch.flatten(self.avgpool(tail(activations)), 1)
        return pooled, activations


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict: each tensor's name, dtype, shape and float32 bytes, by name."""
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def build_demo_extractor(seed: int = DEMO_VGG_SEED) -> VGG16Features:
    """VGG16 trunk with fixed, seeded random weights (the demo tier; not ImageNet features).

    Conv weights follow torchvision's own VGG init (Kaiming normal, fan_out, ReLU; zero bias) but draw
    from a `torch.Generator` seeded with `seed`, layer by layer in order, on the CPU. The result is
    bit-identical across processes and machines, so its hash is stable and demo checkpoints can be
    verified against it. Random convolutional features are a known baseline for anomaly detection.
    """
    extractor = VGG16Features(kind=EXTRACTOR_DEMO)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for layer in extractor.features:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                nn.init.zeros_(layer.bias)
    extractor.sha256 = state_dict_sha256(extractor)
    return extractor.freeze()


def build_imagenet_extractor(state_dict: dict[str, torch.Tensor]) -> VGG16Features:
    """VGG16 trunk from a torchvision VGG16 state dict (full model or `features` only).

    Raises:
        ValueError: when the state dict is not a VGG16 one.
    """
    features = {k[len("features."):]: v for k, v in state_dict.items() if k.startswith("features.")}
    if not features:
        features = dict(state_dict)
    extractor = VGG16Features(kind=EXTRACTOR_IMAGENET)
    try:
        extractor.features.load_state_dict(features, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"Not a VGG16 weights file: {str(exc).splitlines()[0]}") from None
    extractor.sha256 = state_dict_sha256(extractor)
    return extractor.freeze()


def save_phantom_extractor(path, block5: nn.Module, head: nn.Module | None = None, meta: dict | None = None
                           ) -> VGG16Features:
    """Write the phantom-trained extractor: block-5 weights in fp16 plus the seeded base; returns it as loaded.

    Only the trained layers are stored (blocks 1–4 are rebuilt from `DEMO_VGG_SEED`). The weights are
    rounded to fp16 first, and the returned extractor (and the recorded hash) is the fp16 file upcast to
    fp32 — exactly what `load_phantom_extractor` gives — so nothing downstream sees unrounded weights.
    """
    from pathlib import Path

    path = Path(path)
    extractor = build_demo_extractor()
    block5_state = {k: v.detach().cpu().half().clone() for k, v in block5.state_dict().items()}
    tail = extractor.features[PHANTOM_TRAINABLE_FROM:]
    tail.load_state_dict({k: v.float() for k, v in block5_state.items()}, strict=True)
    extractor.kind = EXTRACTOR_PHANTOM
    extractor.sha256 = state_dict_sha256(extractor)
    payload = {
        "format": PHANTOM_EXTRACTOR_FORMAT,
        "format_version": 1,
        "kind": EXTRACTOR_PHANTOM,
        "label": EXTRACTOR_LABELS[EXTRACTOR_PHANTOM],
        "base_seed": DEMO_VGG_SEED,
        "trainable_from": PHANTOM_TRAINABLE_FROM,
        "block5_state_fp16": block5_state,
        "head_state": None if head is None else {k: v.detach().cpu().float().clone()
                                                 for k, v in head.state_dict().items()},
        "sha256": extractor.sha256,
        "meta": dict(meta or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return extractor.freeze()


def load_phantom_extractor(path) -> VGG16Features:
    """The phantom-trained demo extractor from its weights file (seeded blocks 1–4 + stored block 5).

    Raises:
        ValueError: not such a file, or its weights do not reproduce the hash recorded in it.
    """
    from pathlib import Path

    path = Path(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != PHANTOM_EXTRACTOR_FORMAT:
        raise ValueError(f"{path.name} is not a phantom-trained VGG16 extractor file.")
    extractor = build_demo_extractor(int(raw.get("base_seed", DEMO_VGG_SEED)))
    tail = extractor.features[int(raw.get("trainable_from", PHANTOM_TRAINABLE_FROM)):]
    try:
        tail.load_state_dict({k: v.float() for k, v in raw["block5_state_fp16"].items()}, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"{path.name}: block-5 weights do not fit VGG16 ({str(exc).splitlines()[0][:160]}).") from None
    extractor.kind = EXTRACTOR_PHANTOM
    extractor.sha256 = state_dict_sha256(extractor)
    if raw.get("sha256") and raw["sha256"] != extractor.sha256:
        raise ValueError(f"{path.name}: weights do not match the hash recorded in the file (corrupted?).")
    extractor.weights_file = str(path)
    return extractor.freeze()


class FeatureStandardizer(nn.Module):
    """Fixed per-feature standardisation of the 512-vector: (x − mean) / std (buffers, not parameters).

    Used when the extractor's vectors vary too little between images for the VAE to learn from
    (the seeded random VGG16 of the demo tier: between-image std ≈ 0.006 around a mean ≈ 0.09). The
    statistics come from the normal training images and are stored in the checkpoint. Published
    checkpoints (ImageNet features) have none, and the VAE sees raw vectors, as published.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1).clamp_min(1e-6).clone())

    @classmethod
    def fit(cls, features: torch.Tensor) -> "FeatureStandardizer":
        features = torch.as_tensor(features, dtype=torch.float32)
        return cls(features.mean(dim=0), features.std(dim=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class VAEEncoder(nn.Module):
    """512 → 512 → 384 → 256 (Linear + LayerNorm + GELU + Dropout each), then `fc_mu` / `fc_var`."""

    def __init__(self, in_dim: int = FEATURE_DIM, hidden_dims: Sequence[int] = VAE_HIDDEN,
                 latent_dim: int = LATENT_DIM, dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden_dims:
            layers += [nn.Linear(prev, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout)]
            prev = width
        self.net = nn.Sequential(*layers)
        self.fc_mu = nn.Linear(prev, latent_dim)
        self.fc_var = nn.Linear(prev, latent_dim)  # log-variance

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.net(x)
        return self.fc_mu(hidden), self.fc_var(hidden)


class VAEDecoder(nn.Module):
    """256 → 256 → 384 → 512 (Linear + LayerNorm + GELU + Dropout each) → Linear 512 → 512."""

    def __init__(self, latent_dim: int = LATENT_DIM, hidden_dims: Sequence[int] = VAE_HIDDEN,
                 out_dim: int = FEATURE_DIM, dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = latent_dim
        for width in reversed(tuple(hidden_dims)):
            layers += [nn.Linear(prev, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VAE(nn.Module):
    """Variational autoencoder on the 512-vector of VGG16 features (latent z ∈ R^256).

    Sampling happens only in training mode; in eval mode z = mu, so scores are deterministic.
    """

    def __init__(self, in_dim: int = FEATURE_DIM, hidden_dims: Sequence[int] = VAE_HIDDEN,
                 latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.encoder = VAEEncoder(in_dim, hidden_dims, latent_dim)
        self.decoder = VAEDecoder(latent_dim, hidden_dims, in_dim)
        self.latent_dim = latent_dim

    def reparameterize(self, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        if self.training:
            return mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        return mu

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction, mu, log_var, z)."""
        mu, log_var = self.encoder(x)
        z = self.reparameterize(mu, log_var)
        return self.decoder(z), mu, log_var, z


def kl_per_sample(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image, averaged over the 256 latent dimensions (published reduction)."""
    return -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).mean(dim=1)


def recon_error_per_sample(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Feature reconstruction MSE per image, averaged over the 512 features."""
    return F.mse_loss(x_hat, x, reduction="none").mean(dim=1)


def vae_loss(x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
             beta: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch loss = mean recon MSE + beta * mean KL (both with the per-image reductions above)."""
    recon = recon_error_per_sample(x_hat, x).mean()
    kl = kl_per_sample(mu, log_var).mean()
    return recon + beta * kl, recon, kl


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with a fused bias-free qkv projection that can return its weights."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError("dim must be divisible by num_heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output (B, N, D), attention weights (B, heads, N, N))."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (self.dropout(attn) @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out), attn


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block: x + Attn(LN(x)); x + MLP(LN(x)) with GELU MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn_out, weights = self.attn(self.norm1(x))
        x = x + attn_out
        return x + self.ffn(self.norm2(x)), weights


class ViTAnomalyScorer(nn.Module):
    """ViT over the VAE latent: 8 patches of 32 → 128-d tokens + CLS → 6 blocks → LN → head → sigmoid.

    The 8 "patches" are consecutive slices of the latent vector, not image regions.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, patch_dim: int = VIT_PATCH_DIM, depth: int = VIT_DEPTH,
                 num_heads: int = VIT_HEADS, mlp_dim: int = VIT_MLP_DIM, dropout: float = VIT_DROPOUT) -> None:
        super().__init__()
        if latent_dim % patch_dim:
            raise ValueError("latent_dim must be divisible by patch_dim")
        self.num_patches = latent_dim // patch_dim
        self.d_model = patch_dim * 4
        self.patch_embed = nn.Linear(patch_dim, self.d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, self.d_model))
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(self.d_model, num_heads, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(self.d_model)
        self.head = nn.Sequential(
            nn.Linear(self.d_model, mlp_dim // 4), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim // 4, 1),
            nn.Sigmoid(),
        )
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def _tokens(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        x = self.patch_embed(z.reshape(b, self.num_patches, -1))
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embed)

    def forward(self, z: torch.Tensor, return_attention: bool = False):
        """Anomaly probability (B,) in [0, 1]; with `return_attention`, also every block's weights."""
        x = self._tokens(z)
        attentions: list[torch.Tensor] = []
        for block in self.blocks:
            x, weights = block(x)
            attentions.append(weights)
        score = self.head(self.norm(x)[:, 0]).squeeze(-1)
        return (score, attentions) if return_attention else score

    def cls_attention(self, z: torch.Tensor) -> torch.Tensor:
        """Last block's attention from the CLS token to the 8 latent patches, averaged over heads: (B, 8)."""
        _, attentions = self.forward(z, return_attention=True)
        return attentions[-1].mean(dim=1)[:, 0, 1:]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
