"""fastbp.sklearn against scikit-learn's own MLP: the same hyperparameters, the same splits.

    python bench/sklearn_compare.py [--processes 3] [--datasets digits breast_cancer ...]
                                    [--settings defaults demo] [--markdown]

Each (dataset, settings, contender) runs in fresh processes of its own (``--processes`` of
them; medians with min-max): the process loads the data, splits it (``train_test_split``,
``random_state=0``, stratified for classification), standardises X (and y for regression) on
the training part, then times ``fit`` (the first fit of the process: fastbp loads its compiled
kernels from the on-disk cache, so run the script once first to fill it) and ``predict`` on the
test part, then both again in the same process (the steady state), and reports test accuracy
(R² for regression).  Both contenders get the same estimator arguments and ``random_state``; X
is float64 for "defaults" and float32 for "demo".

Settings: ``defaults`` is scikit-learn's defaults (100 hidden units, Adam, batch 200, up to
200 epochs with its ``tol`` rule); ``demo`` is the digits demo's (128 and 64 hidden units,
Adam 1e-3, batch 32, 30 epochs, float32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

from fastbp.benchmark import in_fresh_process

DATASETS = ["digits", "breast_cancer", "diabetes", "classification_20000x50", "regression_20000x50"]
SETTINGS = {
    "defaults": dict(kw=dict(random_state=0), dtype="float64"),
    "demo": dict(kw=dict(hidden_layer_sizes=(128, 64), batch_size=32, max_iter=30, random_state=0),
                 dtype="float32"),
}
CONTENDERS = ["sklearn", "fastbp"]


def load(name):
    from sklearn import datasets

    if name == "digits":
        return (*datasets.load_digits(return_X_y=True), True)
    if name == "breast_cancer":
        return (*datasets.load_breast_cancer(return_X_y=True), True)
    if name == "diabetes":
        return (*datasets.load_diabetes(return_X_y=True), False)
    if name == "classification_20000x50":
        x, y = datasets.make_classification(n_samples=20000, n_features=50, n_informative=20, n_classes=3,
                                            random_state=0)
        return x, y, True
    if name == "regression_20000x50":
        x, y = datasets.make_regression(n_samples=20000, n_features=50, n_informative=20, noise=10.0,
                                        random_state=0)
        return x, y, False
    raise ValueError(f"dataset: expected one of {DATASETS}, got {name!r}")


def worker(dataset, setting, contender):
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if contender == "fastbp":
        from fastbp import sklearn as mod
    else:
        from sklearn import neural_network as mod
    x, y, classify = load(dataset)
    conf = SETTINGS[setting]
    dt = np.dtype(conf["dtype"])
    xtr, xte, ytr, yte = train_test_split(x, y, random_state=0, stratify=y if classify else None)
    sx = StandardScaler().fit(xtr)
    xtr, xte = sx.transform(xtr).astype(dt), sx.transform(xte).astype(dt)
    if not classify:
        sy = StandardScaler().fit(ytr.reshape(-1, 1))
        ytr = sy.transform(ytr.reshape(-1, 1)).ravel().astype(dt)
        yte = sy.transform(yte.reshape(-1, 1)).ravel()
    est = (mod.MLPClassifier if classify else mod.MLPRegressor)(**conf["kw"])
    times = []
    for _ in range(2):  # the second round, in the same process, is the steady state without its first calls
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            est.fit(xtr, ytr)
            t1 = time.perf_counter()
        pred = est.predict(xte)
        times.append((t1 - t0, time.perf_counter() - t1))
    (t_fit, t_pred), (t_refit, t_repredict) = times
    if classify:
        score = float(np.mean(pred == yte))
    else:
        score = float(1 - np.sum((pred - yte) ** 2) / np.sum((yte - yte.mean()) ** 2))
    return dict(fit=t_fit, predict=t_pred, score=score, epochs=int(est.n_iter_), refit=t_refit, repredict=t_repredict)


def run(dataset, setting, contender):
    return in_fresh_process([sys.executable, __file__, "--worker", dataset, setting, contender])


def med(rows, key):
    vals = [r[key] for r in rows]
    return statistics.median(vals), min(vals), max(vals)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    print("| dataset | settings | score sklearn / fastbp | epochs | fit s sklearn | fit s fastbp | fit speed-up "
          "| repeat fit speed-up | predict ms sklearn / fastbp (repeat) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        for setting in args.settings:
            res = {c: [] for c in CONTENDERS}
            for _ in range(args.processes):  # interleaved: drift hits both contenders alike
                for c in CONTENDERS:
                    res[c].append(run(dataset, setting, c))
            s, f = res["sklearn"], res["fastbp"]
            fs, ff = med(s, "fit"), med(f, "fit")
            ratios = sorted(a["fit"] / b["fit"] for a, b in zip(s, f, strict=True))
            rr = sorted(a["refit"] / b["refit"] for a, b in zip(s, f, strict=True))
            print(f"| {dataset} | {setting} | {med(s, 'score')[0]:.3f} / {med(f, 'score')[0]:.3f} "
                  f"| {med(s, 'epochs')[0]:.0f} / {med(f, 'epochs')[0]:.0f} "
                  f"| {fs[0]:.3f} ({fs[1]:.3f}-{fs[2]:.3f}) | {ff[0]:.3f} ({ff[1]:.3f}-{ff[2]:.3f}) "
                  f"| {statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}) "
                  f"| {statistics.median(rr):.2f}x ({rr[0]:.2f}-{rr[-1]:.2f}) "
                  f"| {1e3 * med(s, 'predict')[0]:.1f} / {1e3 * med(f, 'predict')[0]:.1f} "
                  f"({1e3 * med(s, 'repredict')[0]:.1f} / {1e3 * med(f, 'repredict')[0]:.1f}) |", flush=True)

if __name__ == "__main__":
    main()
