"""The built-in models by name, with what each is (imports nothing, so the command line can
list them without loading JAX; ``models/__init__.py`` builds them)."""

MODELS = {
    "mlp": "multi-layer perceptron (--hidden, --activation, --init, --dropout, --norm)",
    "logreg": "softmax (or linear) regression: one dense layer",
    "cnn": "small convolutional network for image data (--activation, --init, --dropout, --norm)",
}
