"""Voice encoder layer table (shape of every layer), padding modes, face decoder and TPS warp."""

from __future__ import annotations

import torch

from s2f.models.face_decoder import (
    FaceDecoder,
    FaceDecoderConfig,
    pixels_to_normalized,
    tps_warp,
)
from s2f.models.voice_encoder import (
    VoiceEncoder,
    VoiceEncoderConfig,
    forward_shapes,
    macs_per_sample,
)

# The paper's Table 1 as (C, T, F); "same" padding.
PAPER_TABLE = [
    ("input", (2, 598, 257)), ("conv", (64, 598, 257)), ("conv", (64, 598, 257)),
    ("conv", (128, 598, 257)), ("maxpool", (128, 299, 257)), ("conv", (128, 299, 257)),
    ("maxpool", (128, 149, 257)), ("conv", (128, 149, 257)), ("maxpool", (128, 74, 257)),
    ("conv", (256, 74, 257)), ("maxpool", (256, 37, 257)), ("conv", (512, 37, 257)),
    ("conv", (512, 18, 128)), ("conv", (512, 9, 64)), ("avgpool", (512, 1, 64)),
    ("fc_relu", (4096,)), ("fc", (4096,)),
]


def _meta_shapes(cfg: VoiceEncoderConfig) -> tuple[list[tuple[str, tuple[int, ...]]], int]:
    with torch.device("meta"):
        model = VoiceEncoder(cfg)
        spec = torch.empty(1, 2, cfg.num_frames, 257)
    return forward_shapes(model, spec), model.fc_in


def test_paper_config_matches_the_layer_table() -> None:
    shapes, fc_in = _meta_shapes(VoiceEncoderConfig.paper())
    assert shapes == PAPER_TABLE
    assert fc_in == 64 * 512 == 32768


def test_valid_padding_leaves_57_bins() -> None:
    shapes, fc_in = _meta_shapes(VoiceEncoderConfig.preset("paper", padding="valid"))
    assert shapes[-3] == ("avgpool", (512, 1, 57))
    assert fc_in == 29184


def test_paper_model_runs_and_final_activation() -> None:
    # real compute on a short input (the fc input does not depend on time)
    torch.manual_seed(0)
    cfg = VoiceEncoderConfig.preset("paper", seconds=1.0, channels=(8,) * 9, fc_width=64)
    out = VoiceEncoder(cfg).eval()(torch.randn(2, 2, cfg.num_frames, 257))
    assert out.shape == (2, 4096) and (out >= 0).all()
    small = VoiceEncoderConfig.small()
    assert small.final_activation == "none" and small.out_dim == 128 and small.num_frames == 298
    model = VoiceEncoder(VoiceEncoderConfig.preset("small", seconds=1.0)).eval()
    out = model(torch.randn(3, 2, 98, 257))
    assert out.shape == (3, 128) and (out < 0).any()


def test_macs_counted_analytically() -> None:
    cfg = VoiceEncoderConfig.paper()
    # layer 1: 598*257 positions * 64 out * 2 in * 16
    first = 598 * 257 * 64 * 2 * 16
    assert macs_per_sample(cfg) > first
    assert 9e10 < macs_per_sample(cfg) < 1.2e11


def test_tps_warp_moves_points_where_asked() -> None:
    size = 64
    img = torch.zeros(1, 1, size, size)
    img[0, 0, 20, 16] = 1.0  # a dot at pixel (x=16, y=20)
    pts = torch.tensor([[[16.0, 20.0], [44.0, 40.0], [30.0, 10.0], [12.0, 50.0]]])
    moved = pts.clone()
    moved[0, 0] = torch.tensor([24.0, 27.0])
    out = tps_warp(img, pixels_to_normalized(pts, size), pixels_to_normalized(moved, size))
    y, x = divmod(int(out[0, 0].argmax()), size)
    assert (x, y) == (24, 27)
    # identity when nothing moves
    grid = torch.rand(1, 3, size, size)
    same = tps_warp(grid, pixels_to_normalized(pts, size), pixels_to_normalized(pts, size))
    torch.testing.assert_close(same[..., 2:-2, 2:-2], grid[..., 2:-2, 2:-2], atol=1e-4, rtol=0)


def test_face_decoder_shapes_and_first_layer() -> None:
    torch.manual_seed(0)
    cfg = FaceDecoderConfig.small(in_dim=16)
    model = FaceDecoder(cfg).eval()
    feats = torch.randn(2, 16)
    texture, landmarks, image = model(feats)
    assert texture.shape == (2, 3, 64, 64) and landmarks.shape == (2, 68, 2)
    assert image is not None and image.shape == (2, 3, 64, 64)
    assert model.first_layer(feats).shape == (2, cfg.first_dim)
    # landmarks start at the mean shape (zero-initialised offsets)
    torch.testing.assert_close(landmarks, model.mean_shape.expand(2, -1, -1))
    assert FaceDecoderConfig.paper().first_dim == 1000
