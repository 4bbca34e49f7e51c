"""Hyperparameters of the model and of training, and the flat parameter layout.

    >>> from microgpt_fast.config import GPTConfig, param_layout
    >>> cfg = GPTConfig(vocab_size=27)
    >>> sum(rows * cols for _, rows, cols in param_layout(cfg))
    4192

Every field is validated here, so that the compiled kernels never see a size
they cannot handle. Invalid values raise ValueError naming the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

DTYPES = ("float64", "float32")


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


@dataclass
class GPTConfig:
    """Shape of the model (the original's defaults)."""

    vocab_size: int = 27  # characters of the data plus BOS
    n_embd: int = 16      # width of the residual stream, C
    n_head: int = 4       # attention heads, H; head_dim D = C / H
    n_layer: int = 1      # transformer blocks, L
    block_size: int = 16  # most positions trained per document, T

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
    """Adam's settings, the original's values: the one place they are written.
    Both engines decay the rate linearly, lr_t = learning_rate * (1 - step / steps)."""

    learning_rate: float = 0.01  # peak rate
    beta1: float = 0.85          # first-moment decay
    beta2: float = 0.99          # second-moment decay
    eps: float = 1e-8            # denominator guard


@dataclass
class TrainConfig:
    """How to train and sample (the original's defaults, batch 1, float64)."""

    steps: int = 1000            # optimizer steps
    batch_size: int = 1          # documents per step, B
    learning_rate: float = Adam.learning_rate
    beta1: float = Adam.beta1
    beta2: float = Adam.beta2
    eps: float = Adam.eps
    seed: int = 42               # seeds Python's random: shuffle, init, sampling
    dtype: str = "float64"       # float64 reproduces the original; float32 is faster
    threads: int | None = None   # None: OMP_NUM_THREADS, else every core
    temperature: float = 0.5     # sampling temperature
    num_samples: int = 20        # names sampled after training
    val_fraction: float = 0.0    # last fraction of the shuffled documents held out

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
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool),
                 f"seed must be an integer, got {self.seed!r}")
        _require(self.dtype in DTYPES,
                 f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.threads is not None:
            _require_int(self, "threads", 1)
        _require_positive(self, "temperature")
        _require_int(self, "num_samples", 0)
        _require(isinstance(self.val_fraction, (int, float))
                 and not isinstance(self.val_fraction, bool) and 0 <= self.val_fraction < 1,
                 f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        return self

    @property
    def adam(self) -> Adam:
        return Adam(self.learning_rate, self.beta1, self.beta2, self.eps)

    def to_dict(self) -> dict:
        return asdict(self)


def configs_from(values: dict, **train_fields) -> tuple[GPTConfig, TrainConfig]:
    """The GPTConfig and TrainConfig of one dict of fields, each field to its own
    class (train_fields: more TrainConfig fields); an unknown name is a ValueError."""
    model_names = {f.name for f in fields(GPTConfig)}
    train_names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - model_names - train_names)
    _require(not unknown, f"unknown config fields: {', '.join(unknown)}")
    return (GPTConfig(**{k: v for k, v in values.items() if k in model_names}),
            TrainConfig(**{k: v for k, v in values.items() if k in train_names}, **train_fields))


def param_layout(cfg: GPTConfig) -> list[tuple[str, int, int]]:
    """(name, rows, cols) of every matrix, in the flat order of the original.

    A matrix "rows x cols" maps cols inputs to rows outputs. The optimizer, the
    checkpoints and the compiled engine all use this order.
    """
    C, V, T = cfg.n_embd, cfg.vocab_size, cfg.block_size
    layout = [("wte", V, C), ("wpe", T, C), ("lm_head", V, C)]
    for i in range(cfg.n_layer):
        layout += [
            (f"layer{i}.attn_wq", C, C),
            (f"layer{i}.attn_wk", C, C),
            (f"layer{i}.attn_wv", C, C),
            (f"layer{i}.attn_wo", C, C),
            (f"layer{i}.mlp_fc1", 4 * C, C),
            (f"layer{i}.mlp_fc2", C, 4 * C),
        ]
    return layout


def init_params(cfg: GPTConfig, rng, std: float = 0.08) -> list[float]:
    """Draw every parameter from rng.gauss(0, std), row by row, in flat order.

    Both engines start from these numbers, so the random stream stays the
    original's: after this call it continues into sampling.
    """
    return [rng.gauss(0, std) for _, rows, cols in param_layout(cfg)
            for _ in range(rows * cols)]
