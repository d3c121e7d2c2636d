"""Training benchmark: fastbp's fit against scikit-learn's MLPClassifier and the NumPy reference.

Digits (75/25 split, stratified), [64, 128, 64, 10] relu/relu/softmax, cross-entropy, Adam
lr 1e-3, batch 32, 30 epochs, no L2 penalty.  Each contender runs in its own process
(Numba's and OpenBLAS's thread pools spin against each other in one); medians over repeats;
fastbp's compile time is measured separately and excluded.

    python bench/training.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np

from fastbp.benchmark import in_fresh_process

EPOCHS, BATCH, LR = 30, 32, 1e-3


def _data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def run_fastbp(repeats: int) -> dict:
    import fastbp

    fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # steady state: parallel twins where they pay, from the warm-up on

    xtr, xte, ytr, yte = _data()
    t = time.perf_counter()
    fastbp.MLP([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy").fit(
        xtr[:40], ytr[:40], epochs=1, verbose=False)
    compile_s = time.perf_counter() - t
    times, accs = [], []
    for r in range(repeats):
        net = fastbp.MLP([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy", init="he", seed=r)
        t = time.perf_counter()
        net.fit(xtr, ytr, epochs=EPOCHS, batch_size=BATCH, lr=LR, seed=r, verbose=False)
        times.append(time.perf_counter() - t)
        accs.append(net.evaluate(xte, yte)["accuracy"])
    return {"time": float(np.median(times)), "accuracy": float(np.median(accs)), "compile": compile_s}


def run_sklearn(repeats: int) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    xtr, xte, ytr, yte = _data()
    times, accs = [], []
    for r in range(repeats):
        clf = MLPClassifier((128, 64), activation="relu", solver="adam", alpha=0.0, batch_size=BATCH,
                            learning_rate_init=LR, max_iter=EPOCHS, shuffle=True, random_state=r,
                            n_iter_no_change=EPOCHS + 1, tol=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t = time.perf_counter()
            clf.fit(xtr, ytr)
            times.append(time.perf_counter() - t)
        accs.append(clf.score(xte, yte))
    return {"time": float(np.median(times)), "accuracy": float(np.median(accs))}


def run_numpy(repeats: int) -> dict:
    import fastbp

    fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # steady state: parallel twins where they pay, from the warm-up on
    from fastbp.__main__ import numpy_adam_training

    xtr, xte, ytr, yte = _data()
    times, accs = [], []
    for r in range(repeats):
        net = fastbp.MLP([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy", init="he", seed=r,
                         backend="numpy")
        t = time.perf_counter()
        net.params[...] = numpy_adam_training(net.sizes, net.spec.activations, "cross_entropy", net.params, xtr, ytr,
                                              EPOCHS, BATCH, LR, r)
        times.append(time.perf_counter() - t)
        accs.append(net.evaluate(xte, yte)["accuracy"])
    return {"time": float(np.median(times)), "accuracy": float(np.median(accs))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--contender", choices=["fastbp", "sklearn", "numpy"])
    args = ap.parse_args()
    if args.contender:
        print(json.dumps(globals()[f"run_{args.contender}"](args.repeats)))
        return 0
    res = {}
    for name in ("fastbp", "sklearn", "numpy"):
        res[name] = in_fresh_process([sys.executable, __file__, "--contender", name, "--repeats", str(args.repeats)])
    print("| contender | fit time (median) | test accuracy (median) | fastbp speed-up |")
    print("|---|---|---|---|")
    for name, label in (("fastbp", "fastbp `MLP.fit`"), ("sklearn", "scikit-learn `MLPClassifier.fit`"),
                        ("numpy", "NumPy reference loop")):
        r = res[name]
        ratio = r["time"] / res["fastbp"]["time"]
        print(f"| {label} | {r['time'] * 1e3:.1f} ms | {r['accuracy']:.4f} | {ratio:.1f}x |")
    print(f"\nfastbp compile time (first fit in a fresh process, excluded above): {res['fastbp']['compile']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
