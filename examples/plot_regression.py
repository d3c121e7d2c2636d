"""
Regression: fitting a curve
===========================

A network with one input and one output learns y = sin(3x) + x/2 from noisy samples, in
float32, with Adam and a cosine learning-rate schedule; the plot shows the data, the curve and
the network's prediction.

    python examples/plot_regression.py
"""

import os

import numpy as np

import fastbp

small = bool(os.environ.get("FASTBP_DOCS_BUILD"))  # the documentation's build: fewer epochs
rng = np.random.default_rng(0)
x = rng.uniform(-2, 2, (512, 1)).astype(np.float32)
y = (np.sin(3 * x) + 0.5 * x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)

net = fastbp.MLP([1, 64, 64, 1], ["tanh", "tanh", "identity"], "mse", dtype=np.float32, seed=0)
history = net.fit(x, y, epochs=60 if small else 300, batch_size=32, lr=1e-2, schedule="cosine", seed=0,
                  verbose=False)
print(f"loss: first epoch {history['loss'][0]:.4f}, last epoch {history['loss'][-1]:.4f}")

# %%
# The prediction on a grid, against the curve the data came from.

grid = np.linspace(-2, 2, 400, dtype=np.float32)[:, None]
pred = net.predict(grid)
try:
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot")
else:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(x[:, 0], y[:, 0], s=4, alpha=0.4, label="noisy samples")
    ax.plot(grid[:, 0], np.sin(3 * grid[:, 0]) + 0.5 * grid[:, 0], "k--", lw=1, label="sin(3x) + x/2")
    ax.plot(grid[:, 0], pred[:, 0], lw=2, label="fastbp.MLP")
    ax.set_xlabel("x")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
