"""
scikit-learn estimators: a pipeline, a grid search and class weights
=====================================================================

fastbp's scikit-learn estimators: the one-line switch, a pipeline, a grid search, class weights
and the validation-loss curve.

    python examples/sklearn_pipeline.py [--quick] [--plot loss.png]

``--quick`` runs ten epochs only (what the test suite does); ``--plot`` saves the training and
validation loss curves when matplotlib is installed.
"""

import argparse
import os
import sys
import warnings

import numpy as np
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# from sklearn.neural_network import MLPClassifier   <- the only line that changes
from fastbp.sklearn import MLPClassifier


def main(quick: bool = False, plot: str | None = None) -> dict:
    max_iter = 10 if quick else 200
    if quick:
        warnings.simplefilter("ignore", ConvergenceWarning)
    results = {}

    # 1. A pipeline with a scaler, on the digits.
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=max_iter, random_state=0))
    results["digits accuracy"] = pipe.fit(X_train, y_train).score(X_test, y_test)

    # 2. A grid search over the L2 penalty and the width, in two processes (one in the quick run).
    grid = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(max_iter=max_iter, random_state=0)),
                        {"mlpclassifier__alpha": [1e-4, 1e-2], "mlpclassifier__hidden_layer_sizes": [(32,), (64,)]},
                        cv=3, n_jobs=1 if quick else 2)
    grid.fit(X_train, y_train)
    results["grid best params"] = grid.best_params_
    results["grid test accuracy"] = grid.score(X_test, y_test)

    # 3. class_weight="balanced" on a 95:5 problem.
    Xi, yi = make_classification(n_samples=4000, n_features=20, weights=[0.95], random_state=0)
    Xi_train, Xi_test, yi_train, yi_test = train_test_split(Xi, yi, stratify=yi, random_state=0)
    for cw in (None, "balanced"):
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=max_iter, random_state=0, class_weight=cw)
        clf.fit(Xi_train, yi_train)
        results[f"balanced accuracy, class_weight={cw}"] = balanced_accuracy_score(yi_test, clf.predict(Xi_test))

    # 4. The validation-loss curve that early stopping records.
    clf = MLPClassifier(max_iter=max_iter, early_stopping=True, random_state=0)
    clf.fit(StandardScaler().fit_transform(X_train), y_train)
    results["epochs"] = clf.n_iter_
    results["final validation loss"] = clf.validation_loss_curve_[-1]
    if plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot")
        else:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            ax.plot(np.arange(1, clf.n_iter_ + 1), clf.loss_curve_, label="training loss (with penalty)")
            ax.plot(np.arange(1, clf.n_iter_ + 1), clf.validation_loss_curve_, label="validation loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel("log-loss")
            ax.legend()
            fig.tight_layout()
            fig.savefig(plot)
            print(f"saved {plot}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="fastbp's scikit-learn estimators in a pipeline and a grid search")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plot", metavar="PNG")
    # the documentation's build runs this script with the quick settings
    args = parser.parse_args(["--quick"] if os.environ.get("FASTBP_DOCS_BUILD") else sys.argv[1:])
    for key, value in main(args.quick, args.plot).items():
        print(f"{key}: {value}")
