"""`MSSSConfig`: every knob of the method in one dataclass, saved beside every checkpoint.

The defaults follow the paper (see `shared/reference/method.md`); where the authors' code
chose otherwise, that choice is an option here, named in the field's comment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Any, Tuple

from msss_tf.rundir import CONFIG_FILENAME  # noqa: F401  (re-exported)

LOSS_NAMES = ("clip", "frame", "pitch")
# Where a frozen encoder's embeddings can be read (`msss_tf.model.encoder.encoder_at_layer`):
# "output" (the encoder's frequency-pooled output, the paper's), an EfficientNet stage's
# output or "top" (the head's activation), frequency flattened.
EMBEDDING_LAYERS = ("output",) + tuple(f"stage{i}" for i in range(1, 8)) + ("top",)


@dataclasses.dataclass(frozen=True)
class MSSSConfig:
    # --- Front end: 16 kHz mono -> log-mel [frames, n_mels].
    sample_rate: int = 16000
    stft_window: int = 400  # 25 ms
    stft_hop: int = 160  # 10 ms
    fft_length: int = 512  # a power of two: TFLite's RFFT needs it
    n_mels: int = 64
    mel_fmin: float = 60.0
    mel_fmax: float = 7800.0
    spectrum_power: float = 1.0  # 1: magnitude (COLA, YAMNet); 2: power (authors' code)
    log_compress: bool = True  # False: raw mel (the authors' waveform mode)
    log_offset: float = 1e-6  # log(mel + log_offset)
    segment_frames: int = 96  # one training example: 96 frames = 0.96 s

    # --- Encoder: EfficientNet on one-channel log-mel; pooled over frequency.
    width_coefficient: float = 1.0  # 1.0, 1.0 is EfficientNet-B0
    depth_coefficient: float = 1.0
    drop_connect_rate: float = 0.2
    # Batch-norm moving-average momentum. 0.9 is PyTorch's default (momentum 0.1), which the
    # authors' code trains with; Keras's 0.99 leaves the inference statistics far from the
    # data's after a short run, and probes use inference mode.
    batch_norm_momentum: float = 0.9
    frequency_pooling: str = "mean"  # "mean" (paper) | "max" (authors' code)
    # "none" (paper) | "window_mean": the encoder first subtracts each input window's mean
    # log-mel, so a gain change (an additive offset in log-mel) does not reach the network.
    # Without it activations scale with the input level (quiet and loud windows ~600x apart
    # at the top of a trained encoder), which static int8 ranges cannot hold.
    input_normalization: str = "none"

    # --- Heads and similarity.
    embedding_dim: int = 512
    similarity: str = "bilinear"  # "bilinear" (Eq. 1) | "cosine" (Table 2 ablation)
    temperature: float = 0.2  # cosine similarity is divided by it
    share_similarity: bool = False  # True: one W for clip and frame losses (authors' code)

    # --- Losses: L = L_clip + lambda_frame L_frame + lambda_pitch L_pitch.
    losses: Tuple[str, ...] = LOSS_NAMES
    lambda_frame: float = 1.0  # paper 1.0; authors' shipped config 0.01
    lambda_pitch: float = 1.0  # paper 1.0; authors' shipped config 0.01
    frame_tau: int = 0  # neighbours with 0 < |t - t'| <= tau are positives too
    frame_positives: str = "pitch_shifted"  # "pitch_shifted" (paper Eq. 5) | "self" (authors)
    # Frame-loss candidates: "segment" (paper: the anchor's other frames) | "batch" (every
    # pitch-shifted frame of the batch; the paper's form is solved from frame position).
    frame_negatives: str = "segment"
    pitch_ratio_min: float = 0.8
    pitch_ratio_max: float = 1.2
    pitch_target: str = "ratio"  # "ratio": rho - 1 (authors) | "semitones": 12 log2 rho
    positive_noise_std: float = 0.001  # COLA's N(0, 0.001^2) on the positive's waveform

    # --- Optimisation.
    optimizer: str = "adam"  # "adam" | "adamw" | "sgd"
    learning_rate: float = 1e-4  # paper 1e-4 at batch 1024; COLA 1e-3 at batch 64
    weight_decay: float = 0.0  # adamw only
    clipnorm: float = 0.0  # 0: no gradient clipping
    warmup_steps: int = 0  # linear learning-rate warm-up over these steps (0: none)
    batch_size: int = 1024
    seed: int = 0

    def __post_init__(self):
        self._check_types()  # first: the range checks below compare numbers
        # Lists from JSON become tuples so the dataclass stays hashable and frozen.
        object.__setattr__(self, "losses", tuple(self.losses))
        self.validate()

    def _check_types(self) -> None:
        """Every field's type, with an error naming the field, the value and the type
        expected (e.g. `--set=log_offset=abc`). NumPy scalars become Python ones (the
        config is saved as JSON); an integral float (1e3 from JSON) is accepted for an
        integer field."""
        for field in dataclasses.fields(self):
            name, kind, value = field.name, _FIELD_KINDS[field.name], getattr(self, field.name)
            default = field.default

            def fail(expected):
                raise ValueError(
                    f"MSSSConfig.{name}={value!r}: must be {expected}, got a "
                    f"{type(value).__name__} (the default is {default!r})")

            if kind == "bool":
                if not isinstance(value, (bool,) + _numpy_bool_types()):
                    fail("true or false (a boolean)")
                value = bool(value)
            elif kind == "int":
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    fail("an integer")
                if not isinstance(value, numbers.Integral):
                    if not (math.isfinite(value) and float(value).is_integer()):
                        fail("an integer")
                value = int(value)
            elif kind == "float":
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    fail("a number")
                if not math.isfinite(value):
                    fail("a finite number")
                if not isinstance(value, (int, float)):  # NumPy scalars
                    value = float(value)
            elif kind == "str":
                if not isinstance(value, str):
                    fail("a string")
            else:  # losses: a list of names
                if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(
                        isinstance(v, str) for v in value):
                    fail(f"a list of loss names from {list(LOSS_NAMES)}, e.g. "
                         f"[\"clip\", \"frame\"]")
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ derived
    @property
    def segment_samples(self) -> int:
        """Waveform samples that give exactly `segment_frames` STFT frames."""
        return (self.segment_frames - 1) * self.stft_hop + self.stft_window

    @property
    def segment_seconds(self) -> float:
        return self.segment_samples / self.sample_rate

    @property
    def frame_seconds(self) -> float:
        return self.stft_hop / self.sample_rate

    @property
    def needs_shifted_view(self) -> bool:
        """The pitch-shifted anchor is encoded for L_pitch and for Eq. 5's frame positives."""
        return "pitch" in self.losses or (
            "frame" in self.losses and self.frame_positives == "pitch_shifted"
        )

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        def fail(field, why):
            raise ValueError(f"MSSSConfig.{field}={getattr(self, field)!r}: {why}")

        if self.sample_rate <= 0:
            fail("sample_rate", "must be positive")
        if not 0 < self.stft_hop <= self.stft_window:
            fail("stft_hop", "must be in (0, stft_window]")
        if self.fft_length < self.stft_window or self.fft_length & (self.fft_length - 1):
            fail("fft_length", "must be a power of two >= stft_window (TFLite's RFFT)")
        if self.n_mels <= 0:
            fail("n_mels", "must be positive")
        if not 0 <= self.mel_fmin < self.mel_fmax:
            fail("mel_fmin", f"must satisfy 0 <= mel_fmin < mel_fmax={self.mel_fmax}")
        if self.mel_fmax > self.sample_rate / 2:
            fail("mel_fmax", f"exceeds the Nyquist frequency {self.sample_rate / 2}")
        if self.spectrum_power <= 0:
            fail("spectrum_power", "must be positive")
        if self.log_offset <= 0:
            fail("log_offset", "must be positive")
        if self.segment_frames < 32:
            fail("segment_frames", "must be >= 32 (the encoder downsamples time by 32)")
        if self.width_coefficient <= 0 or self.depth_coefficient <= 0:
            fail("width_coefficient", "width and depth coefficients must be positive")
        if not 0 < self.batch_norm_momentum < 1:
            fail("batch_norm_momentum", "must be in (0, 1)")
        if not 0 <= self.drop_connect_rate < 1:
            fail("drop_connect_rate", "must be in [0, 1)")
        if self.frequency_pooling not in ("mean", "max"):
            fail("frequency_pooling", "must be 'mean' or 'max'")
        if self.input_normalization not in ("none", "window_mean"):
            fail("input_normalization", "must be 'none' or 'window_mean'")
        if self.embedding_dim <= 0:
            fail("embedding_dim", "must be positive")
        if self.similarity not in ("bilinear", "cosine"):
            fail("similarity", "must be 'bilinear' or 'cosine'")
        if self.temperature <= 0:
            fail("temperature", "must be positive")
        unknown = [name for name in self.losses if name not in LOSS_NAMES]
        if unknown or not self.losses:
            fail("losses", f"must be a non-empty subset of {LOSS_NAMES}")
        if len(set(self.losses)) != len(self.losses):
            fail("losses", "lists a loss twice")
        if "frame" in self.losses and self.lambda_frame <= 0:
            fail("lambda_frame", "must be positive when the frame loss is on")
        if "pitch" in self.losses and self.lambda_pitch <= 0:
            fail("lambda_pitch", "must be positive when the pitch loss is on")
        if self.frame_tau < 0:
            fail("frame_tau", "must be >= 0")
        if self.frame_positives not in ("pitch_shifted", "self"):
            fail("frame_positives", "must be 'pitch_shifted' or 'self'")
        if self.frame_negatives not in ("segment", "batch"):
            fail("frame_negatives", "must be 'segment' or 'batch'")
        if self.frame_negatives == "batch" and self.frame_positives != "pitch_shifted":
            fail("frame_negatives", "'batch' needs frame_positives='pitch_shifted'")
        if not 0 < self.pitch_ratio_min <= self.pitch_ratio_max:
            fail("pitch_ratio_min", "must satisfy 0 < pitch_ratio_min <= pitch_ratio_max")
        if "pitch" in self.losses and self.pitch_ratio_min == self.pitch_ratio_max:
            fail("pitch_ratio_max", "equals pitch_ratio_min: the pitch loss has nothing to learn")
        if self.pitch_target not in ("ratio", "semitones"):
            fail("pitch_target", "must be 'ratio' or 'semitones'")
        if self.positive_noise_std < 0:
            fail("positive_noise_std", "must be >= 0")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            fail("optimizer", "must be 'adam', 'adamw' or 'sgd'")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            fail("learning_rate", "must be a positive finite number")
        if self.weight_decay < 0:
            fail("weight_decay", "must be >= 0")
        if self.clipnorm < 0:
            fail("clipnorm", "must be >= 0")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or self.warmup_steps < 0:
            fail("warmup_steps", "must be an integer >= 0")
        if self.batch_size < 2 and "clip" in self.losses:
            fail("batch_size", "must be >= 2: the clip loss needs in-batch negatives")
        if self.batch_size < 1:
            fail("batch_size", "must be >= 1")

    # ------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["losses"] = list(self.losses)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MSSSConfig":
        if not isinstance(d, dict):
            raise ValueError(f"MSSSConfig: expected an object of fields (a dict, JSON "
                             f"{{\"name\": value}}), got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"MSSSConfig: unknown field(s) {unknown}; known: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "MSSSConfig":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MSSSConfig":
        return cls.from_dict(json.loads(text))

    def save(self, directory: str) -> str:
        """Writes `msss_config.json` into `directory` atomically; returns its path."""
        from msss_tf.atomic import write_text_atomically

        return write_text_atomically(os.path.join(directory, CONFIG_FILENAME),
                                     self.to_json() + "\n")

    @classmethod
    def load(cls, directory_or_file: str) -> "MSSSConfig":
        path = directory_or_file
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_FILENAME)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no MSSS config at {path}")
        with open(path) as f:
            try:
                return cls.from_json(f.read())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e


def _numpy_bool_types() -> tuple:
    """NumPy's bool scalar type when NumPy is loaded (this module does not import it)."""
    import sys

    np = sys.modules.get("numpy")
    return (np.bool_,) if np is not None else ()


# The type of each field, from its annotation (`from __future__ import annotations` keeps
# them as strings): "bool" | "int" | "float" | "str" | "losses".
_FIELD_KINDS = {
    field.name: {"Tuple[str, ...]": "losses"}.get(field.type, field.type)
    for field in dataclasses.fields(MSSSConfig)
}
assert set(_FIELD_KINDS.values()) <= {"bool", "int", "float", "str", "losses"}, _FIELD_KINDS
