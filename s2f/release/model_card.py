"""The model card of a registered voice encoder, written by the pipeline from its records.

`write_model_card` renders markdown from an evaluation row (as stored in the `evaluations`
table, so every number in the card is the table's number), the data summary of the data
directory and the training run's params. `publish_model_card` logs it as `model_card.md` in the
evaluation's MLflow run and sets it as the registered model version's description, which the
MLflow UI shows on the version's page (a compact form without the per-measurement tables when
the full card exceeds the registry's 5,000-character description column).

    python -m s2f.release.model_card DATA_DIR [VERSION]    # prints the card of the latest evaluation
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s2f.evaluation.data import data_summary
from s2f.evaluation.metrics import RECALL_KS
from s2f.evaluation.record import read_evaluations
from s2f.evaluation.scores import SECONDS, paper_distance_label, sec_tag
from s2f.registry.inference import VOICE_ENCODER_NAME
from storage.layout import DataLayout

MAX_DESCRIPTION = 5000

FACE_ENCODERS = {
    "dlib-resnet": ("dlib's ResNet face descriptor (dlib_face_recognition_resnet_model_v1, "
                    "128-D, LFW 99.38 %), shipped in the face-recognition-models wheel",
                    "the descriptor is the network's final linear output (signed, no ReLU); the "
                    "voice encoder's last layer has no activation to match"),
    "vggface": ("VGG-Face (VGG16 for face recognition), 4096-D, user-supplied converted weights",
                "fc7 taken after its ReLU (non-negative); the voice encoder ends in a ReLU to "
                "match"),
}


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{float(v):.{digits}f}"


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{float(v):.2g}"


def _ci(m: dict[str, float], name: str) -> str:
    if name not in m:
        return "n/a"
    return f"{_num(m[name])} [{_num(m.get(name + '_ci_low'))}, {_num(m.get(name + '_ci_high'))}]"


def _similarity_table(m: dict[str, float]) -> list[str]:
    out = ["| input | cosine distance (deg) | L2 | L1 |", "|---|---|---|---|"]
    rows = [(f"voice, {sec_tag(s)}", f"_{sec_tag(s)}", "") for s in SECONDS]
    rows.append(("mean face (baseline)", "", "mean_face_"))
    for label, suffix, prefix in rows:
        cells = [f"{_num(m.get(f'{prefix}{k}_mean{suffix}'))} ± "
                 f"{_num(m.get(f'{prefix}{k}_std{suffix}'))}" for k in ("cosine_deg", "l2", "l1")]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def _recall_table(m: dict[str, float]) -> list[str]:
    heads = [f"voice {sec_tag(s)} [95% CI]" for s in SECONDS]
    out = ["| K | chance | " + " | ".join(heads) + " | mean face [95% CI] |",
           "|---|---|" + "---|" * len(heads) + "---|"]
    for k in RECALL_KS:
        if f"chance_at_{k}" not in m:
            continue
        cells = [_ci(m, f"recall_at_{k}_{sec_tag(s)}") for s in SECONDS]
        out.append(f"| {k} | {_num(m[f'chance_at_{k}'])} | " + " | ".join(cells)
                   + f" | {_ci(m, f'mean_face_recall_at_{k}')} |")
    return out


def _paper_table(m: dict[str, float]) -> list[str]:
    """The paper's retrieval protocol (one pool entry per test clip, three distances), with the
    paper's own figures as labelled reference rows."""
    from s2f.evaluation.metrics import PAPER_KS
    from s2f.evaluation.paper import PAPER_RETRIEVAL

    out = ["| input | distance | " + " | ".join(f"R@{k} [95% CI]" for k in PAPER_KS) + " |",
           "|---|---|" + "---|" * len(PAPER_KS)]
    out.append("| chance (this pool) | - | " + " | ".join(
        _num(m.get(f"paper_chance_at_{k}")) for k in PAPER_KS) + " |")
    for s in SECONDS:
        for d in ("l2", "l1", "cosine"):
            out.append(f"| voice, {sec_tag(s)} | {paper_distance_label(d, m)} | " + " | ".join(
                _ci(m, f"paper_recall_at_{k}_{d}_{sec_tag(s)}") for k in PAPER_KS) + " |")
    for method, label in (("mean_face", "mean face (baseline)"), ("oracle", "oracle ceiling")):
        if f"{method}_paper_recall_at_1_cosine" in m:
            out.append(f"| {label} | cosine | " + " | ".join(
                _ci(m, f"{method}_paper_recall_at_{k}_cosine") for k in PAPER_KS) + " |")
    for (sec, d), values in PAPER_RETRIEVAL.items():
        out.append(f"| paper (reference), {sec} | {paper_distance_label(d)} | "
                   + " | ".join(f"{v / 100:.4f}" for v in values) + " |")
    return out


def _controls_table(m: dict[str, float], control: dict[str, Any] | None,
                    seed: int | None = None) -> list[str]:
    """The model beside its controls; `control`: its own shuffled control's test row
    (`shuffled_control_row`), or None."""
    out = ["| predictor (test, 6 s) | recall@10 per identity [95% CI] | paper R@10 cosine "
           "[95% CI] |", "|---|---|---|",
           f"| this model | {_ci(m, 'recall_at_10_6s')} | {_ci(m, 'paper_recall_at_10_cosine_6s')} |"]
    if control is not None:
        c = control["metrics"]
        out.append(f"| shuffled-voice control (seed {control.get('seed')}, evaluation "
                   f"{control.get('evaluation_id')}) | "
                   f"{_ci(c, 'recall_at_10_6s')} | {_ci(c, 'paper_recall_at_10_cosine_6s')} |")
    else:
        out.append(f"| shuffled-voice control | none of seed {seed} and these settings on "
                   "this snapshot | - |")
    out.append(f"| mean face (baseline) | {_ci(m, 'mean_face_recall_at_10')} | "
               f"{_ci(m, 'mean_face_paper_recall_at_10_cosine')} |")
    for method, label in (("f0_ridge", "F0-only ridge"), ("acoustic_ridge", "acoustic ridge"),
                          ("gender_only", "gender-only"),
                          ("paper_s2f_image", "paper's S2F images")):
        if f"{method}_recall_at_10" in m:
            out.append(f"| {label} | {_ci(m, f'{method}_recall_at_10')} | "
                       f"{_ci(m, f'{method}_paper_recall_at_10_cosine')} |")
    if "oracle_recall_at_10" in m:
        out.append(f"| oracle ceiling (exact voice settings) | {_ci(m, 'oracle_recall_at_10')} | "
                   f"{_ci(m, 'oracle_paper_recall_at_10_cosine')} |")
    out.append(f"| chance | {_num(m.get('chance_at_10'))} | {_num(m.get('paper_chance_at_10'))} |")
    return out


def _correlation_tables(m: dict[str, float]) -> list[str]:
    cranio = sorted({k[len("cranio_"):-len("_r")] for k in m
                     if k.startswith("cranio_") and k.endswith("_r")})
    out: list[str] = []
    if cranio:
        out += ["", "Craniofacial measurements on dlib's 68 landmarks detected on the rendered "
                "faces, reconstruction of the true feature (F2F) vs of the voice feature (S2F); "
                "p Bonferroni-corrected over the measurements; random pairs: r of S2F vs "
                f"another sample's F2F over {_num(m.get('cranio_random_pairings'), 0)} random "
                "pairings, mean [95 % range]:", "",
                "| measurement | Pearson r | p | p Bonferroni | random pairs [95 %] |",
                "|---|---|---|---|---|"]
        out += [f"| {c} | {_num(m.get(f'cranio_{c}_r'), 3)} | {_p(m.get(f'cranio_{c}_p'))} | "
                f"{_p(m.get(f'cranio_{c}_p_bonferroni'))} | "
                f"{_num(m.get(f'cranio_random_pair_{c}'), 3)} "
                f"[{_num(m.get(f'cranio_random_pair_{c}_low'), 3)}, "
                f"{_num(m.get(f'cranio_random_pair_{c}_high'), 3)}] |" for c in cranio]
    voice = sorted(k[len("voice_"):-len("_r")] for k in m
                   if k.startswith("voice_") and k.endswith("_r"))
    if voice:
        out += ["", "Demo-corpus voice parameters vs a read-out of the predicted feature "
                "(`ridge`: leave-one-out ridge; `ridge_true`: the same from the true face "
                "feature, the ceiling; `projection`: the corpus's own projection):", "",
                "| parameter_method | Pearson r | p |", "|---|---|---|"]
        out += [f"| {v} | {_num(m.get(f'voice_{v}_r'), 3)} | {_p(m.get(f'voice_{v}_p'))} |"
                for v in voice]
    return out


def _setting(params: dict[str, str], key: str) -> str:
    """A training param; `None` there means "the preset's default"."""
    value = params.get(key)
    return "the preset's default" if value in (None, "None", "") else value


def _header(evaluation: dict[str, Any]) -> list[str]:
    name, version = evaluation.get("model_name"), evaluation.get("model_version")
    return [
        f"# Model card: {name} v{version}",
        "",
        "Speech2Face voice encoder (Oh et al., CVPR 2019, reproduced): predicts the face "
        "feature of a speaker from a spectrogram of their speech; the face decoder "
        f"({evaluation.get('decoder_name') or 'none'} v{evaluation.get('decoder_version') or '-'}) "
        "turns the feature into a frontal, neutral face. Written by the pipeline from the "
        "evaluations table; do not edit by hand.",
        "",
    ]


def _use_and_limits() -> list[str]:
    return [
        "## Intended use",
        "- Research on the correlation between voices and faces; reproducing the paper's "
        "measurements (feature similarity, retrieval, craniofacial correlations).",
        "- Teaching and testing of the pipeline on the built-in demo corpus.",
        "",
        "## Out of scope",
        "- Identifying, recognising, locating or tracking a person from their voice.",
        "- Forensic, surveillance, hiring, credit, insurance or any other decision about a person.",
        "- Producing an image presented as what a particular speaker looks like.",
        "",
        "## What the model cannot recover",
        "- A recognisable face. It predicts an average-looking face whose traits (for example "
        "apparent gender, age range, some craniofacial proportions) correlate with the voice in "
        "the training data; retrieval below shows how far from identity that is.",
        "- Anything the voice does not carry: hairstyle, expression, skin detail, accessories.",
        "- The same face across languages or recording conditions: the paper reports that one "
        "speaker in two languages can yield different faces.",
        "",
    ]


def _training_data(evaluation: dict[str, Any], data: dict[str, Any], params: dict[str, str]
                   ) -> list[str]:
    status = ", ".join(f"{k}: {v}" for k, v in data.get("status_counts", {}).items()) or "n/a"
    splits = ", ".join(f"{k}: {v} clips / {data.get('split_videos', {}).get(k, '?')} videos"
                       for k, v in data.get("split_counts", {}).items()) or "n/a"
    return [
        "## Training data",
        f"- Manifests: {', '.join(data.get('manifests', [])) or 'n/a'} "
        f"({data.get('rows', 'n/a')} manifest rows).",
        f"- Rows by ingestion status: {status}.",
        "- Split rule: the manifest's split column; `test` rows are never trained on. Dev "
        "(which validation, seed choice and the promotion gate read) is "
        + ("the dev manifest's rows (split by person upstream, as the demo corpus does)."
           if "dev" in data.get("split_counts", {}) else
           "carved from the training rows by identity (the YouTube video id stands in for the "
           "speaker where identities are unknown: sha1(id) / 2^160 < "
           f"{params.get('dev_fraction', '0.1')} goes to dev), so no speaker is on both sides."),
        f"- Split sizes (ok clips): {splits}.",
        # runs logged before the rename carry the param as `data_snapshot`
        f"- Input fingerprint of the training run: "
        f"{params.get('input_fingerprint', params.get('data_snapshot', 'n/a'))} (hash of "
        f"the clips and face_features shards' metadata it read; {params.get('train_pairs', '?')} train / "
        f"{params.get('val_pairs', '?')} validation pairs).",
        f"- Training data snapshot id: {data.get('train_snapshot_id') or 'n/a'}; test snapshot "
        f"id: {evaluation.get('split_snapshot_id')} (sha256 of the sorted clip keys).",
        "",
    ]


def _face_encoder(evaluation: dict[str, Any], params: dict[str, str]) -> list[str]:
    face_encoder = evaluation.get("face_encoder") or params.get("encoder", "dlib-resnet")
    fe_desc, fe_act = FACE_ENCODERS.get(face_encoder, (face_encoder, "see the training run"))
    return [
        "## Face encoder",
        f"- `{face_encoder}`: {fe_desc}.",
        f"- Activation: {fe_act}.",
        f"- Voice encoder: preset `{params.get('preset', '?')}`, input length (s) "
        f"{_setting(params, 'seconds')}, last activation {_setting(params, 'final_activation')}, window "
        f"{params.get('window', 'hann_periodic')}, compression "
        f"{params.get('compression', 'real_imag')}, padding {params.get('padding', 'same')}.",
        "",
    ]


def _voice_frontend(params: dict[str, str], compact: bool = False) -> list[str]:
    """Which voice front-end, and for a pretrained one where its weights come from and what
    they were trained on (the training run's params; runs before issue 28 are `paper`). The
    compact card (the registry's 5,000 characters) gets one line."""
    frontend = params.get("voice_frontend", "paper")
    mode = "fine-tuned" if params.get("ge2e_finetune") == "True" else "frozen"
    if compact:
        return [f"Voice front-end: `{frontend}`" + (
            f" (pretrained GE2E speaker encoder, {mode}, sha256 "
            f"{params.get('ge2e_weights_sha256', '?')[:12]}…; its training data: see "
            "`model_card.md`)." if frontend == "ge2e" else " (the paper's CNN, from scratch)."),
            ""]
    if frontend != "ge2e":
        return ["## Voice front-end",
                "- `paper`: the paper's CNN over the compressed complex spectrogram, trained "
                "from scratch on this model's training pairs only.", ""]
    return [
        "## Voice front-end",
        f"- `ge2e`: a pretrained GE2E speaker encoder ({mode}) and a trained 2-layer MLP head "
        f"(width {params.get('ge2e_head_width', '?')}) to the face feature"
        + (" from the speaker embedding and the input's median F0 (`f0_input`: log F0, "
           "standardised on the training clips, measured by the model on its input)."
           if params.get("f0_input") == "True" else "."),
        f"- Pretrained weights: `{params.get('ge2e_weights_file', '?')}` of "
        f"{params.get('ge2e_package', '?')} {params.get('ge2e_version', '?')} "
        f"({params.get('ge2e_license', '?')}), sha256 {params.get('ge2e_weights_sha256', '?')}; "
        "loaded with torch.load(weights_only=True), no code of the package run.",
        f"- What the speaker encoder was trained on: {params.get('ge2e_trained_on', 'n/a')}",
        "- For the comparison: the encoder has heard far more speech than this model's "
        "training pairs (thousands of speakers), possibly including test speakers' voices, "
        "never their faces; what it adds over the paper CNN is voice knowledge, not "
        "voice-face pairs. Results of the two front-ends are not from the same amount of data.",
        "",
    ]


def _evaluation(evaluation: dict[str, Any], compact: bool, control: dict[str, Any] | None
                ) -> list[str]:
    m: dict[str, float] = evaluation["metrics"]
    lines = [
        "## Evaluation",
        f"Test split: {evaluation.get('n_clips')} clips, {evaluation.get('n_identities')} "
        f"identities (identity = {evaluation.get('identity_source')}); evaluation "
        f"{evaluation.get('evaluation_id')}, MLflow run {evaluation.get('mlflow_run_id')}.",
        "",
        "Feature similarity (mean ± std over test clips; L2 and L1 on L2-normalised features):",
        "",
        *_similarity_table(m),
        "",
        "Retrieval, per-identity protocol (SF2F's): recall@K of the true identity among the "
        "per-identity averaged true features of the test identities, bootstrap 95 % CI over "
        "voices:",
        "",
        *_recall_table(m),
        "",
        # the compact card (the registry's 5,000 characters) names the table, without it
        *([f"Retrieval, the paper's protocol ({_num(m.get('paper_pool_size'), 0)} test clips; "
           "L2, L1 on raw features, cosine): see `model_card.md` in the evaluation run.", ""]
          if compact else
          [f"Retrieval, the paper's protocol: pool = the true features of "
           f"{_num(m.get('paper_pool_size'), 0)} test clips (up to 5,000), one query per clip, "
           "ranked by L2 and L1 on the raw features (as the paper) and by cosine on "
           "L2-normalised ones, separately; chance = K / pool. The paper's rows (a 5,000-image "
           "pool of VGG-Face features) are reference figures:", "", *_paper_table(m), ""]),
        "Controls beside the model (the test split is scored once per version and never feeds "
        "a decision; the promotion gate reads the dev split; the shuffled control is the "
        "model's own: its seed, settings, data):",
        "",
        *_controls_table(m, control, evaluation.get("seed")),
        "",
        f"Diversity (spread of predictions / spread of true features, 6 s): "
        f"{_num(m.get('diversity_6s'))}"
        + ("." if compact else  # the registry's 5,000 characters: the headline number only
           f"; of the decoder's landmarks: {_num(m.get('recon_landmark_diversity'))}; of its "
           f"images: {_num(m.get('recon_image_diversity'))}. Near 0 means one face for every "
           "voice."),
    ]
    if compact:
        return lines + ["", "Diversity of the decoder's output, craniofacial and voice-parameter "
                        "correlations: see `model_card.md` in the evaluation run."]
    return lines + _correlation_tables(m)


def _biases() -> list[str]:
    return [
        "",
        "## Known biases and limitations",
        "- The composition of the training data (age, gender, ethnicity, language, accent, "
        "recording conditions) is unknown: AVSpeech-style data is whatever YouTube videos were "
        "collected, and the demo corpus is synthetic (morphed photographs, espeak-ng voices).",
        "- The model learns the correlations of that data, including its stereotypes; groups "
        "rare in the data get worse, more average reconstructions.",
        "- The face encoder's own biases (dlib / VGG-Face) are inherited.",
        "- No demographic classifier is run here; the paper's demographic confusion matrices "
        "are not reproduced.",
    ]


def write_model_card(evaluation: dict[str, Any], data: dict[str, Any],
                     params: dict[str, str] | None = None, compact: bool = False,
                     control: dict[str, Any] | None = None) -> str:
    """Markdown model card. `evaluation`: a row of the evaluations table (metrics as a dict);
    `data`: `s2f.evaluation.data.data_summary`; `params`: the training run's params."""
    params = params or {}
    lines = [*_header(evaluation), *_use_and_limits(), *_training_data(evaluation, data, params),
             *_face_encoder(evaluation, params), *_voice_frontend(params, compact),
             *_evaluation(evaluation, compact, control),
             *_biases()]
    return "\n".join(lines) + "\n"


def training_params(name: str, version: str) -> dict[str, str]:
    """Params of the run that produced a registered model version (empty if it has none)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    return dict(client.get_run(run_id).data.params) if run_id else {}


def publish_model_card(layout: DataLayout, evaluation: dict[str, Any]) -> str:
    """Write the card for the evaluated model version, log it as `model_card.md` in the
    evaluation's MLflow run and set it as the version's description. Returns the card."""
    from mlflow import MlflowClient

    client = MlflowClient()
    name, version = evaluation["model_name"], evaluation["model_version"]
    if not name or not version:
        raise ValueError("the evaluation is of an unregistered model: no version to describe")
    params = training_params(name, version)
    control = shuffled_control_row(layout, evaluation, params)
    card = write_model_card(evaluation, data_summary(layout), params, control=control)
    if evaluation.get("mlflow_run_id"):
        client.log_text(evaluation["mlflow_run_id"], card, "model_card.md")
    description = card if len(card) <= MAX_DESCRIPTION else \
        write_model_card(evaluation, data_summary(layout), params, compact=True, control=control)
    client.update_model_version(name, version, description=description[:MAX_DESCRIPTION])
    return card


# The training run's params that say which run it was (s2f.train.voice.VoiceTrainer.run_params:
# the run identity less the seed and the shuffle flag). Runs logged before they existed lack
# them on both sides, and are then matched by seed alone.
RUN_IDENTITY_PARAMS = ("config_hash", "input_fingerprint", "frozen_sha1")


def run_params_of(run_id: str | None) -> dict[str, str] | None:
    """The params of an MLflow run (None for none, or one that cannot be read)."""
    if not run_id:
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return dict(MlflowClient().get_run(run_id).data.params)
    except MlflowException:
        return None


def shuffled_control_row(layout: DataLayout, evaluation: dict[str, Any],
                         params: dict[str, str],
                         params_of: Callable[[str | None], dict[str, str] | None] = run_params_of
                         ) -> dict[str, Any] | None:
    """This model's shuffled-voice control: the first test row of kind shuffled_control on the
    evaluation's snapshot whose training run has the model's seed and the same
    `RUN_IDENTITY_PARAMS` as the model's training run (`params`): the same settings (steps
    included), data and frozen decoder, only the face features shuffled. None when no such
    control was scored (another seed's or another config's control is not this model's)."""
    for r in read_evaluations(layout):
        if r["kind"] != "shuffled_control" or r["role"] != "test" \
                or r["split_snapshot_id"] != evaluation.get("split_snapshot_id") \
                or r.get("seed") is None or r.get("seed") != evaluation.get("seed"):
            continue
        control = params_of(r.get("model_run_id"))
        if control is not None and all(control.get(k) == params.get(k)
                                       for k in RUN_IDENTITY_PARAMS):
            return r
    return None


def latest_model_evaluation(layout: DataLayout, model_name: str = VOICE_ENCODER_NAME,
                version: str | None = None) -> dict[str, Any]:
    rows = [r for r in read_evaluations(layout) if r["model_name"] == model_name
            and (version is None or r["model_version"] == version)]
    if not rows:
        raise LookupError(f"no evaluation of {model_name} {version or ''}: run `s2f evaluate`")
    return rows[-1]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    layout = DataLayout(Path(args[0]))
    os.environ.setdefault("MLFLOW_TRACKING_URI", layout.mlflow_tracking_uri)
    row = latest_model_evaluation(layout, version=args[1] if len(args) > 1 else None)
    print(write_model_card(row, data_summary(layout),
                           training_params(row["model_name"], row["model_version"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
