"""One config object naming every knob of a training run (logged whole to MLflow).

`TrainConfig` trains the voice encoder (the paper's recipe: batch 8, Adam β1 0.5 ε 1e-4, lr 1e-3
×0.95 every 10k steps; the small preset adds an EMA of the weights and validates on 6 s, the
evaluation's primary length); `DecoderTrainConfig` trains the face decoder. Presets: `small` (CPU demo:
3 s, channels /8, D=128 dlib descriptor) and `paper` (the table as written, VGG-Face 4096-D).

Voice front-end (`voice_frontend`): `paper` (the CNN over the spectrogram, trained from scratch,
the default) or `ge2e` (resemblyzer's pretrained GE2E speaker encoder, frozen unless
`ge2e_finetune`, and a trained 2-layer MLP head of width `ge2e_head_width`; `s2f.models.ge2e`).
Small-data options, off by default: `standardize_targets` (the model predicts z-scores of the
face feature, fitted on train and inverted inside the model), `cosine_weight` (a cosine term
added to the loss), `test_window_average` (in eval mode, average the predictions over 3 s
windows of the input; `s2f.models.frontend`); light audio augmentation of the training
waves only, drawn from the run's seed (`augment_speed` [low, high] factor by resampling,
`augment_gain_db` ± dB, `augment_snr_db` [low, high] dB of white noise; `s2f.train.augment`);
`f0_input` (ge2e only: the input's median F0, log and standardised on train, appended to the
embedding before the head; the model measures it on its own input wave, so evaluation, predict
and serving need nothing new. The paper CNN gets the spectrogram, computed outside the model,
and `models` may not import the STFT of `media`, so it has no wave to measure: refused).

    python -m s2f.train.config small      # prints the resolved config as JSON
"""

from __future__ import annotations

import json
import sys
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from s2f.media.audio import AudioConfig
from s2f.models.face_decoder import FaceDecoderConfig
from s2f.models.frontend import TEST_WINDOW_SECONDS
from s2f.models.ge2e import Ge2eConfig
from s2f.models.losses import DecoderLossConfig, LossConfig
from s2f.models.voice_encoder import VoiceEncoderConfig
from s2f.train.augment import Augment
from s2f.train.face_data import FACE_SHUFFLE_ROWS


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def flat(self) -> dict[str, str]:
        """Flat `key -> str(value)` for MLflow params."""
        return {k: json.dumps(v) if isinstance(v, list | dict) else str(v)
                for k, v in self.model_dump().items()}


class TrainConfig(_Base):
    """Voice encoder training. `preset` picks the model and default audio length."""

    preset: Literal["small", "paper"] = "small"
    encoder: str = "dlib-resnet"             # which face_features rows to predict
    seconds: float | None = None             # None: the preset's (3 s small, 6 s paper)
    padding: Literal["same", "valid"] = "same"
    final_activation: Literal["relu", "none"] | None = None  # None: the preset's
    window: Literal["hann_periodic", "hann_symmetric"] = "hann_periodic"
    compression: Literal["real_imag", "mag_phase"] = "real_imag"
    batch_size: int = 8                      # global: split over torchrun's processes
    lr: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    adam_eps: float = 1e-4
    lr_decay: float = 0.95
    decay_every: int = 10_000
    steps: int = 800                         # small: ~7 min on 2 CPU cores (demo corpus)
    lambda1: float = 0.025
    lambda2: float = 200.0
    temperature: float = 2.0
    seed: int = 0
    device: str = "auto"                     # auto | cpu | cuda | cuda:N
    channels: list[int] | None = None        # None: the preset's conv widths (9 of them)
    fc_width: int | None = None              # None: the preset's (256 small, 4096 paper)
    bf16: bool = True                        # autocast bf16 (CUDA only; ignored on CPU)
    audio_loader: Literal["auto", "pyav", "dali"] = "auto"  # auto: DALI on CUDA, else PyAV
    channels_last: bool = True               # channels-last memory (CUDA, and CPU: mkldnn ~2x)
    sync_batchnorm: bool = True              # torchrun, >1 process: BatchNorm over the global batch
    random_crop: bool = True                 # training windows at random offsets (val/test: start)
    weight_decay: float = 0.0                # Adam's L2 penalty (the paper: none)
    select: Literal["best_val", "last"] = "best_val"  # which weights are kept and registered
    ema_decay: float = 0.99                  # >0: validate, select and register an EMA of the weights
    val_seconds: float | None = 6.0          # validation window (the gate's primary length); None: training's
    checkpoint_every: int = 200
    dev_fraction: float = 0.1
    shuffle_voices: bool = False  # control: permute the face features across training identities
    val_every: int = 50
    val_batches: int = 16                    # cap on validation batches per evaluation
    log_every: int = 10
    decoder: Literal["registry", "checkpoint", "random"] = "checkpoint"  # f_dec source; random: smoke only
    run_name: str | None = None
    track: bool = True                       # MLflow on/off
    register_model: bool = True              # register the voice encoder in the model registry
    # -- speed and numerics (issue 16) --
    float64: bool = False                    # encoder in float64 (CPU only): the golden DDP test
    torch_compile: bool = True               # torch.compile the training forward (CUDA only)
    loader_workers: int = 0                  # processes decoding batches (0: in the loop's process)
    loader_prefetch: int = 2                 # batches each loader worker keeps ready
    # -- voice front-end (issue 28) --
    voice_frontend: Literal["paper", "ge2e"] = "paper"  # paper: the CNN; ge2e: GE2E + MLP head
    ge2e_head_width: int = 256               # hidden width of the ge2e head (2 linear layers)
    ge2e_finetune: bool = False              # train the pretrained speaker encoder too
    # -- small-data options (issue 28), off by default --
    standardize_targets: bool = False        # predict z-scores of the feature (fitted on train)
    cosine_weight: float = 0.0               # + w·(1 − cos(v_f, v_s)) in the loss
    test_window_average: bool = False        # eval: average predictions over 3 s windows
    augment_speed: list[float] | None = None  # [low, high] speed of training clips (resampled)
    augment_gain_db: float = 0.0             # training windows × a gain in [−g, g] dB
    augment_snr_db: list[float] | None = None  # [low, high]: + white noise at that SNR (dB)
    f0_input: bool = False                   # ge2e: the input's median F0 into the head

    @model_validator(mode="after")
    def _small_data_options(self) -> TrainConfig:
        for name in ("augment_speed", "augment_snr_db"):
            value = getattr(self, name)
            if value is not None and len(value) != 2:
                raise ValueError(f"{name} is a [low, high] range, got {value}")
        self.augment()  # the ranges' own checks
        if self.f0_input and self.voice_frontend != "ge2e":
            raise ValueError("f0_input needs voice_frontend='ge2e': the paper CNN takes the "
                             "spectrogram, computed outside the model, so the model has no wave "
                             "to measure F0 on at evaluation, predict and serving")
        return self

    def augment(self) -> Augment | None:
        """The training waves' augmentation; None when every part is off."""
        if self.augment_speed is None and not self.augment_gain_db and self.augment_snr_db is None:
            return None
        lo, hi = self.augment_speed or (1.0, 1.0)
        snr = None if self.augment_snr_db is None else (self.augment_snr_db[0],
                                                        self.augment_snr_db[1])
        return Augment(speed=(lo, hi), gain_db=self.augment_gain_db, snr_db=snr)

    def test_window_seconds(self) -> float | None:
        return TEST_WINDOW_SECONDS if self.test_window_average else None

    def frontend_config(self, out_dim: int | None = None) -> VoiceEncoderConfig | Ge2eConfig:
        """The chosen front-end's config: the paper CNN's (`encoder_config`) or ge2e's (its
        input length and last activation are the preset's, as the CNN's)."""
        paper = self.encoder_config(out_dim)
        if self.voice_frontend == "paper":
            return paper
        return Ge2eConfig(out_dim=paper.out_dim, head_width=self.ge2e_head_width,
                          finetune=self.ge2e_finetune, seconds=paper.seconds,
                          final_activation=paper.final_activation,
                          standardized=self.standardize_targets,
                          test_window_seconds=self.test_window_seconds(),
                          f0_input=self.f0_input)

    def encoder_config(self, out_dim: int | None = None) -> VoiceEncoderConfig:
        over: dict[str, object] = {"padding": self.padding,
                                   "standardized": self.standardize_targets,
                                   "test_window_seconds": self.test_window_seconds()}
        if self.seconds is not None:
            over["seconds"] = self.seconds
        if self.final_activation is not None:
            over["final_activation"] = self.final_activation
        if out_dim is not None:
            over["out_dim"] = out_dim
        if self.channels is not None:
            over["channels"] = tuple(self.channels)
        if self.fc_width is not None:
            over["fc_width"] = self.fc_width
        return VoiceEncoderConfig.preset(self.preset, **over)

    def audio_config(self, seconds: float | None = None) -> AudioConfig:
        seconds = self.encoder_config().seconds if seconds is None else seconds
        return AudioConfig(seconds=seconds, window=self.window,
                           compression=self.compression)

    def val_audio_config(self) -> AudioConfig:
        """Validation windows: `val_seconds` (e.g. the evaluation's primary length) or the
        training length."""
        return self.audio_config(self.val_seconds)

    def loss_config(self) -> LossConfig:
        return LossConfig(lambda1=self.lambda1, lambda2=self.lambda2, temperature=self.temperature,
                          cosine_weight=self.cosine_weight)

    @classmethod
    def preset_config(cls, name: str, **overrides: object) -> TrainConfig:
        base: dict[str, object] = {"preset": name}
        if name == "paper":
            base.update(encoder="vggface", steps=30_000, checkpoint_every=1000, val_every=1000,
                        ema_decay=0.0)
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


class DecoderTrainConfig(_Base):
    """Face decoder training (Cole et al.): features → landmarks + texture → warped image."""

    preset: Literal["small", "paper"] = "small"
    encoder: str = "dlib-resnet"
    image_size: int | None = None            # None: the preset's (64 small, 224 paper)
    batch_size: int = 16
    lr: float = 1e-3
    beta1: float = 0.9
    adam_eps: float = 1e-8
    steps: int = 400
    texture_weight: float = 1.0
    landmark_weight: float = 10.0
    image_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 200
    dev_fraction: float = 0.1
    log_every: int = 10
    run_name: str | None = None
    track: bool = True
    register_model: bool = True
    bf16: bool = False                       # autocast bf16 on CUDA (~1.7x; TPS warp stays fp32)
    # torch.compile the training forward (CUDA only, as the voice encoder's; off by default:
    # unmeasured, issue 27). Not part of the run's identity: the kernels change, not the maths,
    # so a run resumes with the flag flipped (and the decoders trained before keep their folder)
    torch_compile: bool = False
    NOT_IDENTITY: ClassVar[frozenset[str]] = frozenset({"torch_compile"})
    # faces shuffled together (`s2f.train.face_data`); part of the run's identity: it is the order
    shuffle_rows: int = FACE_SHUFFLE_ROWS
    loader_workers: int = 0                  # processes decoding the crops (0: the loop's own)
    loader_prefetch: int = 2                 # batches each loader worker keeps ready

    def decoder_config(self, in_dim: int) -> FaceDecoderConfig:
        base = FaceDecoderConfig.paper() if self.preset == "paper" else FaceDecoderConfig.small()
        size = self.image_size or base.image_size
        return FaceDecoderConfig(in_dim=in_dim, first_dim=base.first_dim,
                                 landmark_hidden=base.landmark_hidden, image_size=size,
                                 base_channels=base.base_channels)

    def loss_config(self) -> DecoderLossConfig:
        return DecoderLossConfig(self.texture_weight, self.landmark_weight, self.image_weight)


if __name__ == "__main__":
    print(TrainConfig.preset_config(sys.argv[1] if len(sys.argv) > 1 else "small")
          .model_dump_json(indent=2))
