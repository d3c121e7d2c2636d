"""
Classification with a learning curve
====================================

A network classifies scikit-learn's handwritten digits (8 × 8 images, 10 classes). ``fit``
records the loss and the accuracy of every epoch, on the training data and on held-out
validation data, and stops early when the validation loss stops improving; the plot is the
learning curve.

    python examples/plot_classification.py
"""

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fastbp

small = bool(os.environ.get("FASTBP_DOCS_BUILD"))  # the documentation's build: fewer epochs
X, y = load_digits(return_X_y=True)
X = (X / 16.0).astype(np.float32)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
X_train, X_val, y_train, y_val = train_test_split(X_train, y_train, test_size=0.2, stratify=y_train,
                                                  random_state=0)

net = fastbp.MLP([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy", init="he", seed=0)
history = net.fit(X_train, y_train, epochs=15 if small else 60, batch_size=32, lr=1e-3,
                  validation_data=(X_val, y_val), patience=5, seed=0, verbose=False)
print(f"{len(history['loss'])} epochs; test accuracy {net.evaluate(X_test, y_test)['accuracy']:.3f}")

# %%
# The learning curve: the loss falls on both sets, and the validation loss tells when to stop.

try:
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot")
else:
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
    ax1.plot(epochs, history["loss"], label="training")
    ax1.plot(epochs, history["val_loss"], label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.legend(fontsize=8)
    ax2.plot(epochs, history["accuracy"], label="training")
    ax2.plot(epochs, history["val_accuracy"], label="validation")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
