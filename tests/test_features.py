"""Face encoders: dlib's descriptor of the aligned crop agrees with dlib's own chip; VGG-Face
(random weights written to a file) has the paper's shapes and refuses to run without weights.

    pytest tests/test_features.py
"""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest
import torch

from s2f.faces.align import similarity_to_template, to_uint8_hwc, warp_faces
from s2f.faces.detect import FaceDetector
from s2f.faces.dlib_models import RESNET, model_path
from s2f.faces.features import (
    ENCODER_DIMS,
    VGGFACE_MEAN_RGB,
    VggFace,
    VggFaceEncoder,
    VggFaceWeightsMissing,
    get_encoder,
    load_vggface,
)
from s2f.media.synthetic_clips import face_patch


def _crop_and_dlib_descriptor(source: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.ascontiguousarray(face_patch(source, 110))
    face = FaceDetector.for_this_thread("hog").best_face(image)
    assert face is not None
    m = similarity_to_template(torch.from_numpy(face.landmarks[None]))
    crop = to_uint8_hwc(warp_faces(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float(), m))
    reference = dlib.face_recognition_model_v1(str(model_path(RESNET)))
    return crop[0], np.asarray(reference.compute_face_descriptor(image, face.shape))


def test_dlib_descriptor_of_the_crop_matches_dlibs_own_chip() -> None:
    encoder = get_encoder("dlib-resnet")
    crops, references = zip(*(_crop_and_dlib_descriptor(s) for s in range(3)), strict=True)
    features = encoder.encode(np.stack(crops))
    assert features.shape == (3, ENCODER_DIMS["dlib-resnet"]) and features.dtype == np.float32
    own = np.linalg.norm(features - np.stack(references), axis=1)
    others = [np.linalg.norm(features[i] - features[j]) for i in range(3) for j in range(i)]
    # Measured: 0.05-0.12 to dlib's own chip; 0.8-0.9 between these three people (dlib's
    # same-person threshold is 0.6).
    assert own.max() < 0.2, own
    assert min(others) > 0.6, others


def test_unknown_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown face encoder"):
        get_encoder("facenet")


def test_vggface_without_weights_says_what_to_get_and_where() -> None:
    with pytest.raises(VggFaceWeightsMissing, match="--vggface-weights"):
        get_encoder("vggface")
    with pytest.raises(VggFaceWeightsMissing, match="not found"):
        load_vggface("/nonexistent/vgg_face.pt")


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg_face_random.pt"
    torch.save(VggFace().state_dict(), path)
    return path


def test_vggface_shapes_fc7_after_relu_and_fc8(vgg_weights: Path) -> None:
    encoder = VggFaceEncoder(vgg_weights, device="cpu")
    crops = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    features = encoder.encode(crops)
    assert features.shape == (2, 4096) and features.dtype == np.float32
    assert (features >= 0).all() and (features > 0).any()  # after ReLU
    with torch.inference_mode():
        x = encoder.model.preprocess(torch.from_numpy(crops))
        logits = encoder.model.classify(torch.from_numpy(features))
        torch.testing.assert_close(logits, encoder.model(x), atol=1e-4, rtol=1e-4)
    assert logits.shape == (2, 2622)
    assert encoder.info()["feature"] == "fc7-after-relu"
    # Mean subtraction per VGG-Face: a crop of the mean colour becomes zeros.
    mean_crop = torch.tensor(VGGFACE_MEAN_RGB).round().to(torch.uint8).expand(1, 224, 224, 3)
    assert encoder.model.preprocess(mean_crop).abs().max() < 0.5


def test_vggface_rejects_a_state_dict_of_another_model(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pt"
    torch.save({"conv1_1.weight": torch.zeros(1)}, path)
    with pytest.raises(VggFaceWeightsMissing, match="not a VGG-Face state_dict"):
        load_vggface(path)
