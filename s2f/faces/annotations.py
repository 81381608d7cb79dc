"""Read dlib's imglab XML annotations (face boxes with 68 iBUG landmarks).

    from s2f.faces.annotations import read_dlib_xml
    for image in read_dlib_xml(Path("s2f/assets/faces/testing_with_face_landmarks.xml")):
        image.path, image.boxes[0], image.landmarks[0]   # (x0, y0, x1, y1), (68, 2) or None

Used by the quality tests (detector recall, landmark error) and the template builder.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class AnnotatedImage:
    path: Path
    boxes: list[tuple[float, float, float, float]]  # x0, y0, x1, y1 (x1 = left + width)
    landmarks: list[np.ndarray | None]  # (68, 2) float per box, None when the box has no parts


def read_dlib_xml(xml_path: Path) -> list[AnnotatedImage]:
    root = ET.parse(xml_path).getroot()
    images = []
    for image in root.iter("image"):
        boxes, marks = [], []
        for box in image.iter("box"):
            if box.get("ignore") == "1":
                continue
            top, left = float(box.get("top", 0)), float(box.get("left", 0))
            width, height = float(box.get("width", 0)), float(box.get("height", 0))
            boxes.append((left, top, left + width, top + height))
            parts = {int(p.get("name", -1)): (float(p.get("x", 0)), float(p.get("y", 0)))
                     for p in box.iter("part")}
            marks.append(np.array([parts[i] for i in range(68)], dtype=np.float64)
                         if len(parts) == 68 else None)
        images.append(AnnotatedImage(xml_path.parent / image.get("file", ""), boxes, marks))
    return images
