"""Rules for changing hyperparameters when the batch size changes from B to B' (k = B'/B).

Each rule is a published one, stated exactly with its source (``science.md`` section 7):

- SGD (with or without momentum): lr' = lr x k, with a linear warmup of at least 5 epochs
  when k > 1; momentum and L2 weight decay unchanged (Goyal et al. 2017, validated up to
  k = 32).
- Adam / RMSprop: lr' = lr x sqrt(k), eps' = eps / sqrt(k) (Malladi et al., NeurIPS 2022);
  beta2' = beta2^k, which keeps beta2's half-life in samples (Marek et al. 2025; to first
  order Malladi's 1 - beta2' = k (1 - beta2)); beta1 kept (Marek et al.).
- AdamW: as Adam, and weight decay such that tau = B / (lr x wd x N) is kept (Bergsma et al.
  2025): wd' = wd x k x lr / lr' = wd x sqrt(k).

Numbers only: nothing here imports numpy, JAX or torch. ``docs/rescale.md`` has the rules and
their sources in full.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable

from batchlab.errors import BatchlabError
from batchlab.parsing import choice_of, integer_at_least, number_of, parse_float, shown

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
ADAPTIVE = ("adam", "adamw", "rmsprop")  # the square-root family (Malladi et al. 2022)
GOYAL_WARMUP_EPOCHS = 5.0  # Goyal et al.'s gradual warmup: linear over the first 5 epochs
GOYAL_MAX_K = 32  # their largest validated k: 8k images per batch from a base of 256

GOYAL = "Goyal et al. 2017"
MALLADI = "Malladi et al. 2022"
MAREK = "Marek et al. 2025"
BERGSMA = "Bergsma et al. 2025"


@dataclass(frozen=True)
class Setting:
    """The hyperparameters that a batch-size change touches; ``weight_decay`` None = not given."""
    batch_size: int
    lr: float
    optimizer: str
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    weight_decay: float | None = None
    warmup_epochs: float = 0.0


@dataclass(frozen=True)
class Rule:
    """One hyperparameter's change: its values, the rule as plain text and the rule's source."""
    name: str
    before: float | int
    after: float | int
    formula: str
    source: str


@dataclass(frozen=True)
class Rescaled:
    """What :func:`rescale` returns: the new setting, the rules that made it and notes."""
    setting: Setting
    rules: list[Rule]
    notes: list[str]

    def table(self) -> list[dict[str, Any]]:
        """One row per rule: name, before, after, formula, source."""
        return [asdict(rule) for rule in self.rules]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the new setting's fields, the rules and the notes."""
        return {"setting": asdict(self.setting), "rules": self.table(), "notes": list(self.notes)}


# Each key as written in a setting's text, and the reader that checks its value (the message
# names the key as the user wrote it, so "B" stays "B").
_READERS: dict[str, Callable[[Any], Any]] = {
    "batch_size": integer_at_least("B", 1),
    "lr": number_of("lr", positive=True),
    "optimizer": choice_of("optimizer", OPTIMIZERS),
    "momentum": number_of("momentum", low=0, high=1),
    "beta1": number_of("beta1", low=0, high=1),
    "beta2": number_of("beta2", low=0, high=1),
    "eps": number_of("eps", positive=True),
    "weight_decay": number_of("weight_decay", low=0),
    "warmup_epochs": number_of("warmup_epochs", low=0),
}
_ALIASES = {"B": "batch_size", "wd": "weight_decay"}
_REQUIRED = ("batch_size", "lr", "optimizer")


def parse_setting(text: str) -> Setting:
    """A :class:`Setting` from ``"B=64 lr=3e-4 optimizer=adamw beta2=0.999 weight_decay=0.01"``
    (space- or comma-separated key=value; ``B`` or ``batch_size``, ``wd`` or ``weight_decay``).
    B, lr and the optimizer are required: the optimizer decides which rule applies, so it is
    never guessed. A bad key or value is a :class:`BatchlabError` naming it."""
    values: dict[str, str] = {}
    for item in re.split(r"[\s,]+", re.sub(r"\s*=\s*", "=", str(text).strip())):
        if not item:
            continue
        key, sep, value = item.partition("=")
        name = _ALIASES.get(key, key)
        if not sep or not value:
            raise BatchlabError(f"setting item {shown(item)} is not key=value (e.g. B=64 lr=0.1 optimizer=sgd)")
        if name not in _READERS:
            raise BatchlabError(f"unknown setting key {shown(key)}: known keys are B (or batch_size), lr, optimizer, "
                                "momentum, beta1, beta2, eps, weight_decay (or wd), warmup_epochs")
        if name in values:
            raise BatchlabError(f"setting key {shown(key)} is given twice")
        values[name] = value.lower() if name == "optimizer" else value
    missing = [("B" if name == "batch_size" else name) for name in _REQUIRED if name not in values]
    if missing:
        raise BatchlabError(f"the setting needs {', '.join(missing)} (e.g. B=64 lr=0.1 optimizer=sgd), "
                            f"got {shown(text)}")
    return _checked(values)


def _checked(values: dict[str, Any]) -> Setting:
    """A Setting whose every given value passed its reader (None leaves weight decay unset)."""
    return Setting(**{name: _READERS[name](v) if v is not None else None for name, v in values.items()})


def format_setting(setting: Setting) -> str:
    """The setting in :func:`parse_setting`'s syntax: B, lr and the optimizer, then every field
    that differs from its default, so the line can be pasted back."""
    parts = [f"B={setting.batch_size}", f"lr={_number(setting.lr)}", f"optimizer={setting.optimizer}"]
    for field in fields(Setting)[3:]:
        value = getattr(setting, field.name)
        if value is not None and value != field.default:
            parts.append(f"{field.name}={_number(value)}")
    return " ".join(parts)


def _number(x: float) -> str:
    """``x`` to 6 significant digits, more where 1 - x needs them (a beta2 close to 1 must not
    be printed as 1, which would be refused when pasted back)."""
    for digits in range(6, 18):
        text = f"{x:.{digits}g}"
        y = float(text)
        if y == x or abs(y - x) <= 1e-6 * abs(x) and abs(y - x) <= 1e-4 * abs(1 - x):
            return text
    return repr(x)


def rescale(setting: Setting, to_batch: int, *, noise_scale: float | None = None) -> Rescaled:
    """The setting for batch size ``to_batch`` = B' from ``setting`` at B, k = B'/B.

    SGD: lr' = lr x k; when k > 1, warmup_epochs' = max(warmup_epochs, 5), linear; momentum
    and L2 weight decay kept (Goyal et al. 2017). Adam/RMSprop: lr' = lr x sqrt(k),
    eps' = eps / sqrt(k) (Malladi et al. 2022), beta2' = beta2^k (Marek et al. 2025), beta1
    kept. AdamW also: wd' = wd x k x lr/lr' = wd x sqrt(k) (Bergsma et al. 2025). k < 1 uses
    the same formulas without warmup; k = 1 gives the same setting. ``noise_scale`` (a measured
    B_simple or B_noise) adds a note when B' exceeds it (Li et al. 2024; McCandlish et al. 2018).
    """
    setting = _checked(asdict(setting))
    if isinstance(to_batch, bool) or not isinstance(to_batch, int) or to_batch < 1:
        raise BatchlabError(f"the new batch size must be an integer >= 1, got {shown(to_batch)}")
    if noise_scale is not None:
        noise_scale = parse_float(noise_scale, "noise scale", positive=True)
    k = to_batch / setting.batch_size
    rules = [Rule("batch_size", setting.batch_size, to_batch, "k = B'/B", "given")]
    notes: list[str] = []
    rule = _sgd if setting.optimizer == "sgd" else _adaptive
    changes = rule(setting, k, rules, notes)
    if k == 1:
        notes.append("B' = B (k = 1): nothing changes")
    if noise_scale is not None and to_batch > noise_scale:
        notes.append(_beyond_noise_scale(setting.optimizer, to_batch, noise_scale))
    return Rescaled(replace(setting, batch_size=to_batch, **changes), rules, notes)


def _sgd(s: Setting, k: float, rules: list[Rule], notes: list[str]) -> dict[str, Any]:
    """Goyal et al. 2017, linear scaling: lr' = lr x k, warmup' = max(warmup, 5) epochs when
    k > 1; momentum and L2 weight decay unchanged."""
    lr = s.lr * k
    rules.append(Rule("lr", s.lr, lr, "lr' = lr x k", GOYAL))
    changes: dict[str, Any] = {"lr": lr}
    if k > 1:  # a large lr from the first step diverges early; Goyal et al. ramp it up
        warmup = max(s.warmup_epochs, GOYAL_WARMUP_EPOCHS)
        rules.append(Rule("warmup_epochs", s.warmup_epochs, warmup, "warmup' = max(warmup, 5) epochs", GOYAL))
        notes.append(f"linear warmup over 5 epochs, as Goyal et al. used for k up to {GOYAL_MAX_K}")
        changes["warmup_epochs"] = warmup
    rules.append(Rule("momentum", s.momentum, s.momentum, "momentum' = momentum", GOYAL))
    if s.weight_decay is not None:
        rules.append(Rule("weight_decay", s.weight_decay, s.weight_decay, "wd' = wd (L2)", GOYAL))
    if k > GOYAL_MAX_K:
        notes.append(f"k = {k:g} is beyond what linear scaling was validated for: k up to {GOYAL_MAX_K} "
                     "(8k images per batch on ImageNet, Goyal et al. 2017); measure")
    return changes


def _adaptive(s: Setting, k: float, rules: list[Rule], notes: list[str]) -> dict[str, Any]:
    """Adam, AdamW, RMSprop: Malladi et al.'s square-root rule for lr and eps, beta2's half-life
    in samples kept (Marek et al.), beta1 kept, and for AdamW Bergsma et al.'s weight decay."""
    root = math.sqrt(k)
    changes = {"lr": s.lr * root, "eps": s.eps / root, "beta2": s.beta2 ** k}
    rules += [Rule("lr", s.lr, changes["lr"], "lr' = lr x sqrt(k)", MALLADI),
              Rule("eps", s.eps, changes["eps"], "eps' = eps / sqrt(k)", MALLADI),
              Rule("beta2", s.beta2, changes["beta2"],
                   "beta2' = beta2^k; 1st order: 1-beta2' = k(1-beta2) (Malladi)", MAREK)]
    if k * (1 - s.beta2) >= 1:  # 1 - k(1 - beta2) <= 0: no average at all
        notes.append(f"k(1-beta2) = {k * (1 - s.beta2):.4g} >= 1: Malladi's form 1-beta2' = k(1-beta2) is "
                     f"meaningless here; the power form beta2^k = {changes['beta2']:.6g} stays in (0, 1)")
    if s.optimizer != "rmsprop":  # RMSprop has no first moment
        rules.append(Rule("beta1", s.beta1, s.beta1, "beta1' = beta1 (kept)", MAREK))
        malladi_beta1 = 1 - k * (1 - s.beta1)
        if 0 <= malladi_beta1 < 1 and k != 1:
            notes.append(f"Malladi et al. also scale beta1: 1-beta1' = k(1-beta1) gives beta1' = "
                         f"{malladi_beta1:.6g}; Marek et al. keep beta1, as here")
    if s.weight_decay is None:
        if s.optimizer == "adamw":
            notes.append("weight_decay not given: AdamW's rule is wd' = wd x k x lr/lr' = wd x sqrt(k) "
                         "(Bergsma et al. 2025); give wd=... to rescale it")
    elif s.optimizer == "adamw":
        changes["weight_decay"] = _adamw_decay(s, k, changes["lr"], rules, notes)
    else:  # decay added to the gradient goes through Adam's normalisation: no published rule
        rules.append(Rule("weight_decay", s.weight_decay, s.weight_decay, "wd' = wd (kept)", "no rule"))
        notes.append(f"{s.optimizer}'s weight decay (L2, in the gradient) is kept: these sources give no rule "
                     "for it; decoupled decay (optimizer=adamw) has one")
    return changes


def _adamw_decay(s: Setting, k: float, lr: float, rules: list[Rule], notes: list[str]) -> float:
    """Bergsma et al. 2025: keep AdamW's timescale tau = B / (lr x wd x N) (in epochs; N the
    training samples), so wd' = wd x (B'/B) x (lr/lr'), wd x sqrt(k) under the sqrt lr rule."""
    wd = s.weight_decay * k * s.lr / lr
    rules.append(Rule("weight_decay", s.weight_decay, wd, "wd' = wd x k x lr/lr' (keeps tau = B/(lr wd N))",
                      BERGSMA))
    notes.append("tau = B/(lr x wd x N) is kept; N (training samples) cancels, so the rule needs no data size")
    return wd


def _beyond_noise_scale(optimizer: str, to_batch: int, noise_scale: float) -> str:
    """Why a B' above the measured noise scale needs a measurement, for the optimizer's family."""
    above = f"B' = {to_batch} is above the measured noise scale {noise_scale:g}: "
    if optimizer in ADAPTIVE:
        return above + ("Adam's best lr rises with B up to about the noise scale and then falls (Li et al., "
                        "NeurIPS 2024, the surge phenomenon), so the sqrt rule over-shoots beyond it; measure")
    return above + ("beyond the noise scale larger batches buy few steps (McCandlish et al. 2018) and linear "
                    "scaling stops holding; measure")
