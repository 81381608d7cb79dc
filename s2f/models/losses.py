"""The Speech2Face loss (Oh et al. 2019, eq. 1), and the face decoder's training loss.

    L = ‖f_dec(v_f) − f_dec(v_s)‖₁ + λ1 ‖v_f/‖v_f‖ − v_s/‖v_s‖‖₂² + λ2 L_distill(f_VGG(v_f), f_VGG(v_s))
    L_distill(a, b) = −Σ_i p_i(a) log p_i(b),  p_i(x) = softmax(x / T)_i

Every term is computed per sample (the normalisation in the λ1 term is each sample's own
norm, never the batch's) and averaged over the batch. The L1 term is summed over the decoder's
first-layer units (a norm, as written), likewise the squared L2. The distillation term exists
only with a face encoder that has a classification layer (VGG-Face); with dlib's descriptor
`classifier` is None and the term is reported as off (``distill_on = 0``).

`cosine_weight` > 0 (a small-data option, off by default, not the paper's) adds
``w · (1 − cos(v_f, v_s))``, logged as ``loss_cosine``.

    pytest tests/test_losses.py
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossConfig:
    lambda1: float = 0.025
    lambda2: float = 200.0
    temperature: float = 2.0
    eps: float = 1e-8
    cosine_weight: float = 0.0


def normalized_l2(v_f: torch.Tensor, v_s: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per sample ‖v_f/‖v_f‖ − v_s/‖v_s‖‖², shape B."""
    a = v_f / v_f.norm(dim=1, keepdim=True).clamp_min(eps)
    b = v_s / v_s.norm(dim=1, keepdim=True).clamp_min(eps)
    return (a - b).pow(2).sum(dim=1)


def distillation(logits_f: torch.Tensor, logits_s: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per sample −Σ p(a) log p(b) with temperature-T softmaxes, shape B."""
    p = F.softmax(logits_f / temperature, dim=1)
    log_q = F.log_softmax(logits_s / temperature, dim=1)
    return -(p * log_q).sum(dim=1)


def speech2face_loss(
    v_s: torch.Tensor,
    v_f: torch.Tensor,
    decoder_first_layer: Projection,
    classifier: Projection | None = None,
    cfg: LossConfig = LossConfig(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's loss (mean over the batch) and its terms as floats for logging."""
    loss, terms = speech2face_loss_terms(v_s, v_f, decoder_first_layer, classifier, cfg)
    return loss, {k: float(v) for k, v in terms.items()}


def speech2face_loss_terms(
    v_s: torch.Tensor,
    v_f: torch.Tensor,
    decoder_first_layer: Projection,
    classifier: Projection | None = None,
    cfg: LossConfig = LossConfig(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
    """`speech2face_loss` with its terms left as detached 0-d tensors on the loss's device:
    reading them is a host sync, which the CUDA training loop does only every log_every steps."""
    v_s, v_f = v_s.float(), v_f.float()
    l1 = (decoder_first_layer(v_f) - decoder_first_layer(v_s)).abs().sum(dim=1).mean()
    l2 = normalized_l2(v_f, v_s, cfg.eps).mean()
    loss = l1 + cfg.lambda1 * l2
    terms: dict[str, torch.Tensor | float] = {"loss_l1_fdec": l1.detach(),
                                              "loss_l2_norm": l2.detach(), "distill_on": 0.0}
    if classifier is not None:
        distill = distillation(classifier(v_f), classifier(v_s), cfg.temperature).mean()
        loss = loss + cfg.lambda2 * distill
        terms["loss_distill"] = distill.detach()
        terms["distill_on"] = 1.0
    if cfg.cosine_weight > 0:
        cos = (1 - F.cosine_similarity(v_s, v_f, dim=1, eps=cfg.eps)).mean()
        loss = loss + cfg.cosine_weight * cos
        terms["loss_cosine"] = cos.detach()
    terms["loss"] = loss.detach()
    return loss, terms


@dataclass(frozen=True)
class DecoderLossConfig:
    texture_weight: float = 1.0
    landmark_weight: float = 10.0
    image_weight: float = 1.0


def face_decoder_loss(
    texture: torch.Tensor, landmarks: torch.Tensor, image: torch.Tensor | None,
    texture_target: torch.Tensor, landmark_target: torch.Tensor, image_target: torch.Tensor,
    cfg: DecoderLossConfig = DecoderLossConfig(),
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 texture + λ landmark MSE (normalised coordinates) + L1 warped image (when given)."""
    loss, terms = face_decoder_loss_terms(texture, landmarks, image, texture_target,
                                          landmark_target, image_target, cfg)
    return loss, {k: float(v) for k, v in terms.items()}


def face_decoder_loss_terms(
    texture: torch.Tensor, landmarks: torch.Tensor, image: torch.Tensor | None,
    texture_target: torch.Tensor, landmark_target: torch.Tensor, image_target: torch.Tensor,
    cfg: DecoderLossConfig = DecoderLossConfig(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`face_decoder_loss` with its terms as detached 0-d tensors (no host sync)."""
    lt = (texture - texture_target).abs().mean()
    ll = (landmarks - landmark_target).pow(2).sum(dim=-1).mean()
    loss = cfg.texture_weight * lt + cfg.landmark_weight * ll
    terms = {"loss_texture": lt.detach(), "loss_landmarks": ll.detach()}
    if image is not None:
        li = (image - image_target).abs().mean()
        loss = loss + cfg.image_weight * li
        terms["loss_image"] = li.detach()
    terms["loss"] = loss.detach()
    return loss, terms
