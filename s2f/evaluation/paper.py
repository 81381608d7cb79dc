"""The paper's own figures (Oh et al., CVPR 2019, and its supplementary material), as reference
rows of the report and the model card, always labelled as the paper's
(../shared/docs/speech2face.md lists them with their sources).

Retrieval: a database of 5,000 face images, one per test clip, VGG-Face fc7 features; recall@K
in %. The paper prints chance as 1/2/5/10 %, which does not fit a 5,000 pool; chance here is
K / pool (0.02 % at K = 1).

    python -m s2f.evaluation.paper      # prints the reference rows
"""

from __future__ import annotations

PAPER_POOL = 5000
# (input, distance) → recall@1, @2, @5, @10 in %
PAPER_RETRIEVAL: dict[tuple[str, str], tuple[float, float, float, float]] = {
    ("6 s", "l2"): (8.28, 13.66, 24.66, 35.84),
    ("6 s", "l1"): (8.34, 13.70, 24.66, 36.22),
    ("6 s", "cosine"): (10.92, 17.00, 30.60, 45.82),
    ("3 s", "cosine"): (8.54, 13.64, 24.80, 38.54),
}
# Craniofacial Pearson r (F2F vs S2F, 1,000 test images, all p < 0.001); random pairs 0.02.
PAPER_CRANIOFACIAL: dict[str, float] = {
    "upper lip height": 0.16, "lateral upper lip heights": 0.26, "jaw width": 0.11,
    "nose height": 0.14, "nose width": 0.35, "labio-oral region": 0.17,
    "mandibular index": 0.20, "intercanthal index": 0.21, "nasal index": 0.38,
    "vermilion height index": 0.29, "mouth-face width index": 0.20, "nose area": 0.28,
}
PAPER_RANDOM_PAIR_R = 0.02
# Feature similarity, VGG-Face fc7: input → (cosine deg, L2, L1) means.
PAPER_SIMILARITY: dict[str, tuple[float, float, float]] = {
    "6 s": (45.75, 0.18, 9.42), "3 s": (48.43, 0.19, 9.81)}


def main() -> int:
    for (seconds, distance), values in PAPER_RETRIEVAL.items():
        print(f"paper, {seconds}, {distance}: recall@1/2/5/10 = "
              + "/".join(f"{v:.2f}" for v in values) + f" % of a {PAPER_POOL} pool")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
