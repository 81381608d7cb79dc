"""Names shared by training, evaluation, promotion and inference: registered models, aliases.

Kept free of heavy imports so that flows and the CLI can use them at import time.

    python -m s2f.registry.names      # prints the default model URIs
"""

from __future__ import annotations

VOICE_ENCODER_NAME = "speech2face-voice-encoder"
FACE_DECODER_NAME = "speech2face-face-decoder"
CHAMPION, CHALLENGER = "champion", "challenger"


def model_uri(name: str, alias: str) -> str:
    return f"models:/{name}@{alias}"


if __name__ == "__main__":
    for n in (VOICE_ENCODER_NAME, FACE_DECODER_NAME):
        print(model_uri(n, CHALLENGER), model_uri(n, CHAMPION))
