import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batchlab.config import ModelConfig
from batchlab.errors import BatchlabError
from batchlab.models import build_model


def test_mlp_init_follows_keras():
    model = build_model(ModelConfig("mlp", (50,), "relu", "he_uniform"), (2,), 3)
    params, state = model.init(jax.random.PRNGKey(0))
    hidden, out = params
    assert hidden["w"].shape == (2, 50) and out["w"].shape == (50, 3) and state == {}
    assert np.abs(hidden["w"]).max() <= math.sqrt(6 / 2) and np.abs(hidden["w"]).max() > 0.8 * math.sqrt(6 / 2)
    assert np.abs(out["w"]).max() <= math.sqrt(6 / 53)
    assert not np.any(hidden["b"]) and not np.any(out["b"])
    logits, _ = model.apply(params, state, jnp.ones((4, 2)))
    assert logits.shape == (4, 3)


def test_logreg_starts_at_zero_whatever_the_seed():
    model = build_model(ModelConfig("logreg"), (5,), 2)
    a, _ = model.init(jax.random.PRNGKey(0))
    b, _ = model.init(jax.random.PRNGKey(1))
    assert not np.any(a["w"]) and np.array_equal(a["w"], b["w"])


def test_dropout_only_in_training():
    model = build_model(ModelConfig("mlp", (64,), dropout=0.5), (3,), 2)
    params, state = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((8, 3))
    eval_a, _ = model.apply(params, state, x, train=False)
    eval_b, _ = model.apply(params, state, x, train=False, key=jax.random.PRNGKey(5))
    train_a, _ = model.apply(params, state, x, train=True, key=jax.random.PRNGKey(1))
    train_b, _ = model.apply(params, state, x, train=True, key=jax.random.PRNGKey(2))
    assert np.array_equal(eval_a, eval_b)
    assert not np.allclose(train_a, train_b)


def test_cnn_on_images_and_refused_on_vectors():
    model = build_model(ModelConfig("cnn"), (8, 8, 1), 10)
    params, state = model.init(jax.random.PRNGKey(0))
    logits, _ = model.apply(params, state, jnp.ones((5, 8, 8, 1)))
    assert logits.shape == (5, 10)
    with pytest.raises(BatchlabError, match="needs image samples"):
        build_model(ModelConfig("cnn"), (2,), 3)


@pytest.mark.parametrize("cfg, message", [(ModelConfig("resnet"), "unknown model"),
                                          (ModelConfig("mlp", activation="swishy"), "unknown activation"),
                                          (ModelConfig("mlp", dropout=1.0), "dropout")])
def test_bad_model_settings(cfg, message):
    with pytest.raises(BatchlabError, match=message):
        build_model(cfg, (2,), 3)


def test_cnn_convolution_equals_lax_conv():
    from batchlab.models.cnn import _conv3x3

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 5, 6, 3)), jnp.float32)
    layer = {"w": jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32), "b": jnp.arange(4.0)}
    expected = jax.lax.conv_general_dilated(x, layer["w"], (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer["b"]
    np.testing.assert_allclose(_conv3x3(x, layer), expected, rtol=1e-5, atol=1e-5)
