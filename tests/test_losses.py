"""The Speech2Face loss on known values: L1 of f_dec, per-sample normalised L2, distillation."""

from __future__ import annotations

import math

import torch

from s2f.models.losses import (
    LossConfig,
    distillation,
    face_decoder_loss,
    normalized_l2,
    speech2face_loss,
)


def test_normalized_l2_is_per_sample() -> None:
    v_f = torch.tensor([[3.0, 4.0], [100.0, 0.0]])
    v_s = torch.tensor([[4.0, 3.0], [0.0, 0.5]])
    got = normalized_l2(v_f, v_s)
    # sample 0: (0.6-0.8)^2 + (0.8-0.6)^2 = 0.08 ; sample 1: orthogonal unit vectors = 2
    torch.testing.assert_close(got, torch.tensor([0.08, 2.0]))
    # batch-wide normalisation would give something else for sample 0
    batch_norm = ((v_f / v_f.norm()) - (v_s / v_s.norm())).pow(2).sum(1)
    assert not torch.allclose(batch_norm, got)


def test_distillation_known_value() -> None:
    a = torch.tensor([[2.0, 0.0]])
    b = torch.tensor([[0.0, 0.0]])
    p = torch.tensor([math.e, 1.0]) / (math.e + 1)  # softmax([1, 0])
    expected = -(p * math.log(0.5)).sum()
    torch.testing.assert_close(distillation(a, b, 2.0), expected.reshape(1).float())


def test_loss_terms_and_weights() -> None:
    f_dec = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        f_dec.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    v_f = torch.tensor([[3.0, 4.0]])
    v_s = torch.tensor([[4.0, 3.0]])
    loss, terms = speech2face_loss(v_s, v_f, f_dec, None, LossConfig())
    # |f(v_f)-f(v_s)|_1 = |-1| + |1| + |0| = 2 ; λ1 * 0.08
    assert terms["loss_l1_fdec"] == 2.0 and terms["distill_on"] == 0.0
    torch.testing.assert_close(loss, torch.tensor(2.0 + 0.025 * 0.08))
    classifier = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.eye(2))
    loss2, terms2 = speech2face_loss(v_s, v_f, f_dec, classifier, LossConfig())
    d = distillation(v_f, v_s, 2.0)[0]
    assert terms2["distill_on"] == 1.0
    torch.testing.assert_close(loss2, loss + 200.0 * d)


def test_loss_is_zero_at_the_target_and_differentiable() -> None:
    f_dec = torch.nn.Linear(4, 5)
    v_f = torch.randn(3, 4)
    v_s = v_f.clone().requires_grad_(True)
    loss, _ = speech2face_loss(v_s, v_f, f_dec)
    assert float(loss.detach()) < 1e-6
    loss2, _ = speech2face_loss(v_s + 0.1, v_f, f_dec)
    loss2.backward()
    assert v_s.grad is not None and v_s.grad.abs().sum() > 0


def test_face_decoder_loss() -> None:
    z = torch.zeros(1, 3, 4, 4)
    o = torch.ones(1, 3, 4, 4)
    lm = torch.zeros(1, 68, 2)
    loss, terms = face_decoder_loss(o, lm + 0.1, z, z, lm, z)
    assert terms["loss_texture"] == 1.0 and terms["loss_image"] == 0.0
    torch.testing.assert_close(terms["loss_landmarks"], 0.02, atol=1e-6, rtol=0)
    torch.testing.assert_close(float(loss), 1.0 + 10 * 0.02, atol=1e-6, rtol=0)
