"""Property tests of the parsers a user's text reaches: whatever the string, they return a
value or raise BatchlabError, never another exception (which the CLI would show as a traceback)."""

import math
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchlab.targets import parse_target
from batchlab.parsing import SEED_LIMIT, parse_batch_sizes, parse_floats, parse_ints, parse_seeds, parse_widths
from batchlab.errors import BatchlabError
from batchlab.sweep.spec import read_spec

# Text that looks like what users type: digits, separators, signs, exponents, words, huge numbers.
PIECES = st.sampled_from(["1", "32", "0", "-4", "2.5", "1e3", "1e400", "nan", "inf", "full", "FULL", ":", ",",
                          " ", "", "_", "18446744073709551617", "9" * 30, "0x10", "1:1024", ">=", "<=",
                          "test_acc", "test_loss", "\x00", "é"])
SPEC_TEXT = st.one_of(st.text(max_size=40), st.lists(PIECES, max_size=8).map("".join))
EVERYWHERE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def returns_or_refuses(parse, text):
    """Call ``parse(text)``; a BatchlabError is a fine answer, anything else fails the test."""
    try:
        return parse(text)
    except BatchlabError:
        return None


@EVERYWHERE
@given(SPEC_TEXT)
@example("1:" + "9" * 5000)
def test_batch_sizes(text):
    sizes = returns_or_refuses(parse_batch_sizes, text)
    if sizes is not None:
        assert sizes and all(b == "full" or (isinstance(b, int) and b >= 1) for b in sizes)


@EVERYWHERE
@given(SPEC_TEXT)
def test_floats(text):
    values = returns_or_refuses(lambda t: parse_floats(t, "learning rate", positive=True), text)
    if values is not None:
        assert values and all(math.isfinite(v) and v > 0 for v in values)


@EVERYWHERE
@given(SPEC_TEXT)
@example("3,18446744073709551617")
@example("1e18")
def test_seeds(text):
    seeds = returns_or_refuses(parse_seeds, text)
    if seeds is not None:
        assert seeds and all(isinstance(s, int) and 0 <= s < SEED_LIMIT for s in seeds)


@EVERYWHERE
@given(SPEC_TEXT)
def test_ints(text):
    values = returns_or_refuses(lambda t: parse_ints(t, "epoch", low=1), text)
    if values is not None:
        assert values and all(isinstance(v, int) and v >= 1 for v in values)


@EVERYWHERE
@given(st.one_of(SPEC_TEXT, st.lists(st.one_of(st.integers(), st.text(max_size=5), st.floats()), max_size=4)))
def test_widths(spec):
    widths = returns_or_refuses(parse_widths, spec)
    if widths is not None:
        assert all(isinstance(w, int) and w >= 1 for w in widths)


@EVERYWHERE
@given(SPEC_TEXT)
@example("test_acc>=1e999")
@example("test_acc>=1.2.3")
def test_target(text):
    target = returns_or_refuses(parse_target, text)
    if target is not None:
        assert target.op in (">=", "<=") and math.isfinite(target.value)


KEYS = ["name", "data", "model", "hidden", "batch_sizes", "lr", "momentum", "seeds", "budget", "epochs", "target",
        "lr_scaling", "base_lr", "base_batch", "warmup_epochs", "optimizer", "colour"]
VALUES = st.one_of(st.integers(-10 ** 30, 10 ** 30), st.floats(), st.booleans(), st.text(string.printable, max_size=8),
                   st.lists(st.one_of(st.integers(-5, 5000), st.just("full"), st.text(max_size=3)), max_size=3))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


@EVERYWHERE
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_sweep_config_from_random_settings(tmp_path, values):
    path = tmp_path / "sweep.toml"
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()))
    returns_or_refuses(read_spec, path)


@EVERYWHERE
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))))
def test_sweep_config_from_random_text(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    returns_or_refuses(read_spec, path)


def test_the_properties_can_fail():
    """The checks above are not vacuous: a parser that raised something else would be caught."""
    def broken(text):
        raise OverflowError(text)

    with pytest.raises(OverflowError):
        returns_or_refuses(broken, "1")
