"""Read a still face image (a voice-face pair's true face, a reconstruction) as a one-frame clip.

The real pairs source (`s2f.ingest.pairs`) gives each clip a face image instead of a video; the
paper's and our reconstructions are images too. Each becomes a `DecodedClip` of one frame at
time 0, so preprocessing and evaluation run the same detect / align / embed path on it as on a
video frame (`s2f.preprocess.clips`).

Memory is bounded whatever the file says: an image larger than `MAX_IMAGE_PIXELS` is refused
before it is decoded (PIL reads the size from the header), and a broken or truncated file comes
back as a `DecodeError` with the reason, never raised.

    python -m s2f.media.image FACE.jpg     # prints the decoded size or the reason it failed
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from s2f.media.video import DecodedClip, DecodeError

IMAGE_DECODER = "image"
MAX_IMAGE_PIXELS = 4096 * 4096  # a 224x224 crop is 50k pixels; a photo rarely above 24M


def decode_image(clip_key: str, path: str | Path) -> DecodedClip | DecodeError:
    """The image at `path` as a one-frame clip (uint8 RGB, 1×H×W×3), or why it cannot be."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                return DecodeError(clip_key, IMAGE_DECODER,
                                   f"{path}: {width}x{height} pixels is over the "
                                   f"{MAX_IMAGE_PIXELS} limit for a face image")
            rgb = np.array(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        return DecodeError(clip_key, IMAGE_DECODER, f"{path}: no such file")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return DecodeError(clip_key, IMAGE_DECODER,
                           f"{path}: not a readable image ({type(exc).__name__}: {exc})"[:400])
    return array_clip(clip_key, rgb)


def array_clip(clip_key: str, image: np.ndarray) -> DecodedClip:
    """An in-memory H×W×3 uint8 image (a decoder's output) as a one-frame clip."""
    frame = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[None])
    if frame.ndim != 4 or frame.shape[-1] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {tuple(image.shape)}")
    return DecodedClip(clip_key, frame, [0.0], IMAGE_DECODER)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    result = decode_image(Path(args[0]).stem, args[0])
    if isinstance(result, DecodeError):
        print(result.message)
        return 1
    print(f"{args[0]}: {result.frames.shape[2]}x{result.frames.shape[1]} RGB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
