"""Settings of the model, of training and of sampling, and the flat parameter layout.

    >>> from microgpt_fast.config import GPTConfig, param_layout
    >>> cfg = GPTConfig(vocab_size=27)
    >>> sum(rows * cols for _, rows, cols in param_layout(cfg))
    4192

GPTConfig shapes the model, TrainConfig the run (a resumed checkpoint must
match both), SampleConfig the samples; threads, kernel and engine are options
of a run, not settings (threads never change its numbers; a kernel only in
the last bits, but for avx512_bf16, see RunOptions). Each field declares
its command-line flag's help once, and every command builds its flags from
these declarations (cli.add_config_flags). Every field is validated here, so
that the compiled kernels never see a size they cannot handle; invalid values
raise ValueError naming the field.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from .kernels import VARIANTS

DTYPES = ("float64", "float32")
# How a data file is read (data.py): one document a line, or one stream of characters.
FORMATS = ("lines", "text")
# The held-out fraction when none is given: the original has none; a text is
# one stream, and a run on it is measured on its last tenth.
DEFAULT_VAL_FRACTION = {"lines": 0.0, "text": 0.1}
LR_SCHEDULES = ("linear", "cosine", "constant")
NORMS = ("rmsnorm", "layernorm")
ACTIVATIONS = ("relu", "gelu", "relu2", "silu")
INITS = ("microgpt", "gpt2")


def on_off(text) -> bool:
    """A switch's value from the command line or a sweep grid: on/off (also
    true/false, yes/no, 1/0); a bool passes through."""
    if isinstance(text, bool):
        return text
    value = {"on": True, "true": True, "yes": True, "1": True,
             "off": False, "false": False, "no": False, "0": False}.get(str(text).lower())
    if value is None:
        raise ValueError(f"expected on or off, got {text!r}")
    return value


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_int(obj, name: str, minimum: int) -> None:
    value = getattr(obj, name)
    _require(isinstance(value, int) and not isinstance(value, bool),
             f"{name} must be an integer, got {value!r}")
    _require(value >= minimum, f"{name} must be >= {minimum}, got {value}")


def _require_positive(obj, name: str) -> None:
    value = getattr(obj, name)
    _require(isinstance(value, (int, float)) and not isinstance(value, bool)
             and value == value and value > 0 and value != float("inf"),
             f"{name} must be a positive finite number, got {value!r}")


def _require_nonnegative(obj, name: str) -> None:
    value = getattr(obj, name)
    _require(isinstance(value, (int, float)) and not isinstance(value, bool)
             and 0 <= value < float("inf"),
             f"{name} must be a finite number >= 0, got {value!r}")


def _field(default, help: str, **flag):
    """A config field whose command-line flag is declared with it: help text and,
    where needed, choices, a metavar, the type (when the default is None) and
    how the default reads in the help ("shown"); cli.add_config_flags reads them."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass
class GPTConfig:
    """Shape of the model (the original's defaults)."""

    vocab_size: int = _field(27, "characters of the data plus BOS (set from the data)")
    n_embd: int = _field(16, "embedding width, C")
    n_head: int = _field(4, "attention heads, H (divides n-embd); head size C / H")
    n_layer: int = _field(1, "transformer blocks, L")
    block_size: int = _field(16, "most positions trained per document, T")
    norm: str = _field("rmsnorm", "normalization: rmsnorm (the original's) or layernorm",
                       choices=NORMS)
    norm_gain: bool = _field(False, "a learned per-channel gain in every norm, starting at 1")
    emb_norm: bool = _field(True, "a norm after the embedding: the original's (off: the "
                            "residual stream starts as the plain sum, as in nanoGPT)")
    final_norm: bool = _field(False, "a norm before the LM head")
    activation: str = _field("relu", "MLP activation: relu (the original's), gelu (exact, "
                             "with erf), relu2 (squared ReLU) or silu", choices=ACTIVATIONS)
    tie_embeddings: bool = _field(False, "the LM head is the token embedding matrix")
    mlp_ratio: int = _field(4, "MLP hidden width in units of n-embd")
    init: str = _field("microgpt", "initial weights: microgpt (the original's: every weight "
                       "N(0, 0.08)) or gpt2 (N(0, 0.02), the residual output projections "
                       "scaled by 1/sqrt(2 n-layer))", choices=INITS)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "GPTConfig":
        _require_int(self, "vocab_size", 2)
        _require_int(self, "n_embd", 1)
        _require_int(self, "n_head", 1)
        _require_int(self, "n_layer", 1)
        _require_int(self, "block_size", 1)
        _require(self.n_embd % self.n_head == 0,
                 f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        _require_int(self, "mlp_ratio", 1)
        for name, choices in (("norm", NORMS), ("activation", ACTIVATIONS), ("init", INITS)):
            _require(getattr(self, name) in choices,
                     f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        for name in ("norm_gain", "emb_norm", "final_norm", "tie_embeddings"):
            _require(isinstance(getattr(self, name), bool),
                     f"{name} must be on or off, got {getattr(self, name)!r}")
        return self

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def num_params(self) -> int:
        return sum(rows * cols for _, rows, cols in param_layout(self))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Adam:
    """Adam's settings, the original's values (the one place they are written),
    and the learning-rate schedule both engines follow.

    The update of step s, for every weight p with gradient g:
      g <- g * min(1, grad_clip / (norm + 1e-6)), norm the L2 norm of the whole
           gradient (only when grad_clip > 0; PyTorch's clip_grad_norm_)
      p <- p - lr_s * weight_decay * p, computed as p * (1 - lr_s * weight_decay),
           decoupled as in AdamW, on weight matrices only (never a norm gain:
           see decays); then Adam with bias correction (ALGORITHM.md).
    """

    learning_rate: float = 0.01  # peak rate
    beta1: float = 0.85          # first-moment decay
    beta2: float = 0.99          # second-moment decay
    eps: float = 1e-8            # denominator guard
    lr_schedule: str = "linear"  # the original's decay to min_lr; or cosine, constant
    warmup_steps: int = 0        # linear warm-up steps before the schedule
    min_lr: float = 0.0          # the rate linear and cosine decay to
    weight_decay: float = 0.0    # decoupled weight decay (AdamW), 0: off
    grad_clip: float = 0.0       # bound on the gradient's global L2 norm, 0: off

    def learning_rate_at(self, step: int, total_steps: int) -> float:
        """The rate of step `step` (0-based) of a total_steps run: learning_rates
        of that one step, so the two never differ in a bit."""
        return float(self.learning_rates(step, 1, total_steps)[0])

    def learning_rates(self, step0: int, num_steps: int, total_steps: int) -> np.ndarray:
        """The rates of steps s = step0 .. step0 + num_steps - 1, float64.

        With lr = learning_rate, W = warmup_steps, T = total_steps:
          s < W (warm-up):  lr * (s + 1) / W
          after, with p = (s - W) / (T - W), the fraction of the schedule done:
            linear:    min_lr + (lr - min_lr) * (1 - p)
            cosine:    min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * p))
            constant:  lr
        With the defaults (linear, W = 0, min_lr = 0) this is the original's
        lr * (1 - s / T) bit for bit: 0 + x, lr - 0 and s - 0 are exact. Each
        rate depends on its own step alone (numpy's + - * / round as Python's
        do; the cosine is math.cos, element by element), so any split of the
        steps into chunks gives the same bits.
        """
        lr, floor, W = self.learning_rate, self.min_lr, self.warmup_steps
        steps = np.arange(step0, step0 + num_steps, dtype=np.float64)
        if self.lr_schedule == "constant":
            rates = np.full(num_steps, float(lr))
        else:
            done = (steps - W) / max(total_steps - W, 1)
            if self.lr_schedule == "linear":
                rates = floor + (lr - floor) * (1 - done)
            else:  # cosine
                cosines = np.array([math.cos(math.pi * p) for p in done.tolist()], np.float64)
                rates = floor + (lr - floor) * 0.5 * (1 + cosines)
        if W > 0:
            rates = np.where(steps < W, lr * (steps + 1) / W, rates)
        return rates


def decays(name: str) -> bool:
    """Whether weight decay applies to the parameter `name` of param_layout: to
    every weight matrix, never to a norm gain (a name ending in "gain")."""
    return not name.endswith("gain")


@dataclass
class TrainConfig:
    """What shapes a run: every field here must match when a checkpoint is resumed
    (the original's defaults, batch 1, float64)."""

    steps: int = _field(1000, "optimizer steps: the length of the learning-rate schedule")
    batch_size: int = _field(1, "documents (lines) or windows (text) per step")
    learning_rate: float = _field(Adam.learning_rate, "Adam's peak learning rate (see "
                                  "--lr-schedule)")
    beta1: float = _field(Adam.beta1, "Adam first-moment decay")
    beta2: float = _field(Adam.beta2, "Adam second-moment decay")
    eps: float = _field(Adam.eps, "Adam epsilon")
    lr_schedule: str = _field(Adam.lr_schedule, "learning rate after the warm-up: linear (the "
                              "original's decay to --min-lr), cosine (decay to --min-lr) or "
                              "constant", choices=LR_SCHEDULES)
    warmup_steps: int = _field(Adam.warmup_steps, "steps of linear warm-up from "
                               "learning-rate / warmup-steps to learning-rate")
    min_lr: float = _field(Adam.min_lr, "the rate the linear and cosine schedules end at")
    weight_decay: float = _field(Adam.weight_decay, "decoupled weight decay (AdamW) of the "
                                 "weight matrices, never of norm gains; 0: off")
    grad_clip: float = _field(Adam.grad_clip, "clip the gradient to this global L2 norm; "
                              "0: off")
    seed: int = _field(42, "seed of the random stream (shuffle, init, samples)")
    dtype: str = _field("float64", "float64 reproduces the original; the reference is always "
                        "float64", choices=DTYPES)
    val_fraction: float | None = _field(
        None, "hold out this last fraction of the shuffled documents (lines) or of the "
        "characters (text)", type=float, metavar="F", shown="0 for lines, 0.1 for text")
    data_format: str | None = _field(
        None, "how the data file is read: lines (one document a line, each between BOS "
        "tokens) or text (one stream of characters, newlines included, trained in windows of "
        "block-size + 1 characters at pseudo-random offsets)", choices=FORMATS, type=str,
        shown="text for the bundled shakespeare, lines for names and any file")

    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        _require_int(self, "steps", 1)
        _require_int(self, "batch_size", 1)
        _require_positive(self, "learning_rate")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _require(isinstance(value, (int, float)) and 0 <= value < 1,
                     f"{name} must be in [0, 1), got {value!r}")
        _require_positive(self, "eps")
        _require(self.lr_schedule in LR_SCHEDULES,
                 f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                 f"got {self.lr_schedule!r}")
        _require_int(self, "warmup_steps", 0)
        _require(self.warmup_steps <= self.steps,
                 f"warmup_steps ({self.warmup_steps}) must be at most steps ({self.steps})")
        for name in ("min_lr", "weight_decay", "grad_clip"):
            _require_nonnegative(self, name)
        _require(self.min_lr <= self.learning_rate,
                 f"min_lr ({self.min_lr}) must be at most learning_rate ({self.learning_rate})")
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool),
                 f"seed must be an integer, got {self.seed!r}")
        _require(self.dtype in DTYPES,
                 f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _require(self.val_fraction is None or (
                     isinstance(self.val_fraction, (int, float))
                     and not isinstance(self.val_fraction, bool) and 0 <= self.val_fraction < 1),
                 f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        _require(self.data_format is None or self.data_format in FORMATS,
                 f"data_format must be one of {', '.join(FORMATS)}, got {self.data_format!r}")
        return self

    def resolved(self, natural_format: str) -> "TrainConfig":
        """This config with the data's defaults filled in: data_format, where not
        given, the data's natural format (data.natural_format); val_fraction, where
        not given, that format's default (0 for lines, 0.1 for text)."""
        data_format = self.data_format or natural_format
        val_fraction = (DEFAULT_VAL_FRACTION[data_format] if self.val_fraction is None
                        else self.val_fraction)
        return replace(self, data_format=data_format, val_fraction=val_fraction)

    @property
    def adam(self) -> Adam:
        return Adam(self.learning_rate, self.beta1, self.beta2, self.eps, self.lr_schedule,
                    self.warmup_steps, self.min_lr, self.weight_decay, self.grad_clip)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SampleConfig:
    """How to sample after training: free to change on resume."""

    temperature: float = _field(0.5, "sampling temperature, finite and > 0")
    num_samples: int = _field(20, "how many samples to draw")
    prompt: str | None = _field(None, "text each sample continues", type=str, metavar="TEXT",
                                shown="none for lines; a newline for text")
    max_len: int | None = _field(None, "most characters drawn per sample (text: exactly this "
                                 "many)", type=int, metavar="N",
                                 shown="up to the block size for lines; 300 for text")

    def __post_init__(self):
        self.validate()

    def validate(self) -> "SampleConfig":
        _require(isinstance(self.temperature, (int, float))
                 and not isinstance(self.temperature, bool) and 0 < self.temperature < math.inf,
                 f"temperature must be finite and > 0, got {self.temperature!r}")
        _require_int(self, "num_samples", 0)
        _require(self.prompt is None or isinstance(self.prompt, str),
                 f"prompt must be a string, got {self.prompt!r}")
        if self.max_len is not None:
            _require_int(self, "max_len", 1)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


ENGINES = ("compiled", "reference")


@dataclass
class RunOptions:
    """How a run is carried out, so all of these may change on resume: any
    thread count gives the same bits; the kernel variants of one family
    (novec and generic, avx2 and avx512) give the same bits, the two families
    differ in the last bits (FMA or not); avx512_bf16 rounds the inputs of
    float32's weight products to bfloat16 (kernels.py): resume its runs with
    it to go on with the same numbers."""

    data: str | None = _field(None, "the bundled names (32,033 names) or shakespeare (1.1 MB of "
                              "plays), or a UTF-8 text file (a file called names or "
                              "shakespeare: ./names)", metavar="NAME|PATH", type=str,
                              shown="names")
    engine: str = _field("compiled", "compiled Cython engine, or the pure-Python reference",
                         choices=ENGINES)
    kernel: str | None = _field(None, "compiled kernel variant", choices=VARIANTS, type=str,
                                shown="$MICROGPT_FAST_KERNEL, else the best this CPU runs")
    threads: int | None = _field(None, "OpenMP threads, never more than the documents of a "
                                 "step", type=int,
                                 shown="$OMP_NUM_THREADS, else every core")
    adapt_threads: bool = _field(True, "train on fewer of those threads while that measures "
                                 "faster (a busy machine), probing the others now and then")


# Known recipes: settings that go together, under one name (--preset). nanogpt is
# nanoGPT's choices for its character-level Shakespeare model (no dropout, no
# biases): its architecture, its AdamW settings (min_lr = learning_rate / 10)
# and its schedule.
PRESETS = {
    "nanogpt": {
        "norm": "layernorm", "norm_gain": True, "emb_norm": False, "final_norm": True,
        "activation": "gelu", "tie_embeddings": True, "init": "gpt2",
        "learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.99, "lr_schedule": "cosine",
        "warmup_steps": 100, "min_lr": 1e-4, "weight_decay": 0.1, "grad_clip": 1.0,
    },
}


def describe_preset(name: str) -> str:
    """"norm=layernorm, norm_gain=on, ...": what a preset sets, for --help."""
    return ", ".join(f"{k}={'on' if v is True else 'off' if v is False else v}"
                     for k, v in PRESETS[name].items())


def with_preset(name: str | None, given: dict) -> dict:
    """The settings of a run: a preset's (none when name is None) with the given
    fields over them, so that a field given explicitly wins."""
    if name is None:
        return dict(given)
    _require(name in PRESETS, f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    return {**PRESETS[name], **given}


def configs_from(values: dict) -> tuple[GPTConfig, TrainConfig]:
    """The GPTConfig and TrainConfig of one dict of fields, each field to its own
    class; an unknown name is a ValueError."""
    model_names = {f.name for f in fields(GPTConfig)}
    train_names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - model_names - train_names)
    _require(not unknown, f"unknown config fields: {', '.join(unknown)}")
    return (GPTConfig(**{k: v for k, v in values.items() if k in model_names}),
            TrainConfig(**{k: v for k, v in values.items() if k in train_names}))


def _matrices(cfg: GPTConfig) -> list[tuple[str, int, int]]:
    """(name, rows, cols) of the original's matrices, lm_head included: what
    init_params draws, in the order it draws them."""
    C, V, T, F = cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.mlp_ratio * cfg.n_embd
    layout = [("wte", V, C), ("wpe", T, C), ("lm_head", V, C)]
    for i in range(cfg.n_layer):
        layout += [
            (f"layer{i}.attn_wq", C, C),
            (f"layer{i}.attn_wk", C, C),
            (f"layer{i}.attn_wv", C, C),
            (f"layer{i}.attn_wo", C, C),
            (f"layer{i}.mlp_fc1", F, C),
            (f"layer{i}.mlp_fc2", C, F),
        ]
    return layout


def norm_names(cfg: GPTConfig) -> list[str]:
    """Every norm of the model, in the order of the forward pass: the one after the
    embedding when cfg.emb_norm, the two of each layer (before attention, before
    the MLP), then the final one when cfg.final_norm. With cfg.norm_gain each
    has a gain named NAME + "_gain"."""
    names = ["emb_norm"] if cfg.emb_norm else []
    for i in range(cfg.n_layer):
        names += [f"layer{i}.attn_norm", f"layer{i}.mlp_norm"]
    return names + (["final_norm"] if cfg.final_norm else [])


def param_layout(cfg: GPTConfig) -> list[tuple[str, int, int]]:
    """(name, rows, cols) of every matrix, in the flat order of the original.

    A matrix "rows x cols" maps cols inputs to rows outputs. The optimizer, the
    checkpoints and the compiled engine all use this order. With
    tie_embeddings there is no lm_head (the head reads wte); with norm_gain
    each norm's gain (1, C) follows every matrix, in norm_names order, so that
    the original's matrices keep their places.
    """
    layout = [m for m in _matrices(cfg) if not (cfg.tie_embeddings and m[0] == "lm_head")]
    if cfg.norm_gain:
        layout += [(f"{name}_gain", 1, cfg.n_embd) for name in norm_names(cfg)]
    return layout


# the matrices that write into the residual stream, scaled down by the gpt2 init
_RESIDUAL_OUTPUTS = (".attn_wo", ".mlp_fc2")


def init_params(cfg: GPTConfig, rng, std: float | None = None) -> list[float]:
    """Draw every matrix from rng.gauss(0, std), row by row, in flat order; every
    gain starts at 1.

    std: the microgpt init's 0.08 for every matrix; the gpt2 init's 0.02, and
    0.02 / sqrt(2 n_layer) for the residual output projections (attn_wo,
    mlp_fc2). A given std overrides both. Both engines start from these numbers,
    so the random stream stays the original's: after this call it continues
    into sampling. The draws are the same whatever the options: the gains take
    none, and a tied model still draws lm_head's numbers (and drops them), so
    that its other matrices and the stream after init are the untied model's.
    """
    def std_of(name: str) -> float:
        if std is not None:
            return std
        if cfg.init == "microgpt":
            return 0.08
        return 0.02 / math.sqrt(2 * cfg.n_layer) if name.endswith(_RESIDUAL_OUTPUTS) else 0.02

    drawn = {name: [rng.gauss(0, s) for _ in range(rows * cols)]
             for name, rows, cols in _matrices(cfg) for s in [std_of(name)]}
    return [value for name, rows, cols in param_layout(cfg)
            for value in drawn.get(name, [1.0] * (rows * cols))]
