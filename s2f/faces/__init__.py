"""Faces in video frames: dlib detection and landmarks (`detect`), similarity alignment and
224x224 crops with kornia (`align`), and dlib's XML annotation reader (`annotations`).

    from s2f.faces.detect import FaceDetector
    from s2f.faces.align import similarity_to_template, warp_faces

Tests: `pytest tests/test_faces.py` (quality against the annotated photos in s2f/assets/faces).
"""
