"""The handler of `s2f predict`: plain inference, without Prefect, from a voice or video file
to a labelled face (`s2f.registry.predict`).

    s2f predict AUDIO... --out DIR [--data-dir DIR] [--model-uri ...@champion] [--seconds 6]
"""

from __future__ import annotations

import sys

from flows.params import PredictParams


def run_predict_from_cli(params: PredictParams) -> int:
    """`s2f predict`: 0 when every file gave a face, 1 when some could not (reasons printed),
    2 when the models cannot be loaded."""
    from s2f.registry.inference import ModelResolutionError
    from s2f.registry.predict import predict_files

    try:
        results = predict_files(list(params.audio), params.out, params.model_uri,
                                params.decoder_uri, seconds=params.seconds)
    except ModelResolutionError as exc:
        print(f"s2f predict: {exc}", file=sys.stderr)
        return 2
    for r in results:
        if r.error:
            print(f"s2f predict: {r.error}", file=sys.stderr)
        else:
            print(f"{r.source} -> {r.image_path} (+ .npy feature, .json sidecar)")
    print("note: each image is a statistical reconstruction, not the speaker's face")
    return 1 if any(r.error for r in results) else 0
