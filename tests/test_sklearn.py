"""fastbp.sklearn: scikit-learn's conformance checks, and equality with scikit-learn's own MLP.

scikit-learn's ``MLPClassifier``/``MLPRegressor`` are the oracle: with the same ``random_state``
fastbp's estimators draw the same initial weights, shuffles and validation split, so after a few
epochs in float64 every coefficient agrees to rounding, for every solver and option.  The
data are small and the epochs few: the same compiled kernels serve every test.
"""

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import joblib  # noqa: E402  (scikit-learn's dependency)
from sklearn import neural_network as sk  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastbp  # noqa: E402
from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

RNG = np.random.default_rng(0)
N, D = 67, 5
X = RNG.standard_normal((N, D))
Y_MULTI = RNG.integers(0, 3, N)
Y_BIN = np.where(X[:, 0] + 0.3 * RNG.standard_normal(N) > 0, "yes", "no")
Y_LABELS = (RNG.random((N, 3)) < 0.4).astype(int)
Y_REG = X @ RNG.standard_normal((D, 2)) + 0.1 * RNG.standard_normal((N, 2))

quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _serial_twins(monkeypatch):
    """The estimators' logic is under test here, not the kernels' parallel twins (the kernel and
    model tests check those): keep tiered compilation's default, so that these small fits run the
    serial twins and the suite does not compile parallel training twins for them."""
    monkeypatch.setattr(fastbp.config, "PARALLEL_COMPILE_AFTER", 10.0)


@quiet
@parametrize_with_checks([MLPClassifier(max_iter=30), MLPRegressor(max_iter=30)])
def test_sklearn_conformance(estimator, check):
    check(estimator)


def max_coef_diff(a, b):
    assert len(a.coefs_) == len(b.coefs_)
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_,
                                                            strict=True))


SOLVERS = [
    dict(solver="adam"),
    dict(solver="sgd", shuffle=False, learning_rate_init=0.05),
    dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.1, momentum=0.8),
    dict(solver="sgd", learning_rate="adaptive", nesterovs_momentum=False, n_iter_no_change=1, tol=10.0),
    dict(solver="lbfgs"),
    dict(solver="adam", early_stopping=True, validation_fraction=0.2, alpha=0.1, batch_size=13),
    dict(solver="sgd", momentum=0.0, activation="logistic", alpha=0.0),
    dict(solver="adam", activation="tanh", batch_size=1, alpha=1e-2),
]


@quiet
@pytest.mark.parametrize("kw", SOLVERS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("target", ["multiclass", "binary", "multilabel", "regression"])
def test_equals_scikit_learn(kw, target):
    y = {"multiclass": Y_MULTI, "binary": Y_BIN, "multilabel": Y_LABELS, "regression": Y_REG}[target]
    ours, theirs = (MLPRegressor, sk.MLPRegressor) if target == "regression" else (MLPClassifier, sk.MLPClassifier)
    args = dict(hidden_layer_sizes=(7, 3), max_iter=4, random_state=1, **kw)
    a, b = theirs(**args).fit(X, y), ours(**args).fit(X, y)
    assert max_coef_diff(a, b) < 1e-12
    assert b.n_iter_ == a.n_iter_ and b.out_activation_ == a.out_activation_
    assert b.loss_ == pytest.approx(a.loss_, rel=1e-10)
    for name in ("loss_curve_", "validation_scores_"):
        if getattr(a, name, None) is not None:
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-10)
    if target == "regression":
        np.testing.assert_allclose(b.predict(X), a.predict(X), rtol=1e-10, atol=1e-13)
    else:
        np.testing.assert_array_equal(b.predict(X), a.predict(X))
        np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=1e-10, atol=1e-14)


@quiet
@pytest.mark.parametrize("target", ["multiclass", "regression"])
def test_sample_weight_partial_fit_and_warm_start_equal_scikit_learn(target):
    y = Y_MULTI if target == "multiclass" else Y_REG
    ours, theirs = (MLPRegressor, sk.MLPRegressor) if target == "regression" else (MLPClassifier, sk.MLPClassifier)
    sw = RNG.random(N) * 2
    args = dict(hidden_layer_sizes=(6,), max_iter=3, random_state=2, solver="sgd", learning_rate="invscaling")
    a, b = theirs(**args).fit(X, y, sample_weight=sw), ours(**args).fit(X, y, sample_weight=sw)
    assert max_coef_diff(a, b) < 1e-12
    a, b = theirs(warm_start=True, **args), ours(warm_start=True, **args)
    for est in (a, b):
        est.fit(X, y).fit(X[:40], y[:40])
    assert max_coef_diff(a, b) < 1e-12
    extra = {"classes": np.unique(y)} if target == "multiclass" else {}
    a, b = theirs(**args), ours(**args)
    for est in (a, b):
        for part in (slice(0, 30), slice(30, N), slice(0, N)):
            est.partial_fit(X[part], y[part], **extra)
    assert max_coef_diff(a, b) < 1e-12 and a.t_ == b.t_ and a.n_iter_ == b.n_iter_


def test_float32_in_float32_through_and_out():
    x32 = X.astype(np.float32)
    for est, y in ((MLPClassifier(max_iter=3), Y_MULTI), (MLPRegressor(max_iter=3), Y_REG)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(x32, y)
        assert est.model_.dtype == np.float32 and all(c.dtype == np.float32 for c in est.coefs_)
        out = est.predict_proba(x32) if hasattr(est, "predict_proba") else est.predict(x32)
        assert out.dtype == np.float32
    est = MLPRegressor(max_iter=2, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, Y_REG)  # float64 data, float32 asked for
    assert est.model_.dtype == np.float32 and est.predict(X).dtype == np.float32


@quiet
def test_class_weight_is_a_sample_weight_per_class():
    cw = {0: 3.0, 1: 0.5}  # class 2 keeps weight 1
    args = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, solver="sgd")
    a = MLPClassifier(class_weight=cw, **args).fit(X, Y_MULTI)
    b = MLPClassifier(**args).fit(X, Y_MULTI, sample_weight=np.array([3.0, 0.5, 1.0])[Y_MULTI])
    assert max_coef_diff(a, b) == 0.0
    counts = np.bincount(Y_MULTI)
    a = MLPClassifier(class_weight="balanced", **args).fit(X, Y_MULTI)
    b = MLPClassifier(**args).fit(X, Y_MULTI, sample_weight=(N / (3 * counts))[Y_MULTI])
    assert max_coef_diff(a, b) < 1e-15
    with pytest.raises(ValueError, match="class_weight"):
        MLPClassifier(class_weight="balanced", **args).partial_fit(X, Y_MULTI, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="class_weight"):
        MLPClassifier(class_weight=cw, **args).fit(X, Y_LABELS)


@quiet
def test_multilabel_partial_fit_without_classes():
    est = MLPClassifier(hidden_layer_sizes=(4,), random_state=0)
    for part in (slice(0, 20), slice(20, N)):
        est.partial_fit(X[part], Y_LABELS[part])
    assert est.predict(X).shape == Y_LABELS.shape and list(est.classes_) == [0, 1, 2]
    assert est.n_iter_ == 1 and est.t_ == N


@quiet
def test_validation_loss_curve_and_callback():
    seen = []

    def callback(est):
        seen.append(len(est.loss_curve_))
        return len(est.loss_curve_) == 3  # stop after the third epoch

    est = MLPClassifier(hidden_layer_sizes=(5,), early_stopping=True, max_iter=10, random_state=0,
                        callback=callback).fit(X, Y_MULTI)
    assert seen == [1, 2, 3] and est.n_iter_ == 3
    assert len(est.validation_loss_curve_) == 3 == len(est.validation_scores_)
    assert all(np.isfinite(est.validation_loss_curve_))
    assert MLPClassifier(max_iter=2).fit(X, Y_MULTI).validation_loss_curve_ is None


@quiet
def test_clone_pickle_joblib_pipeline(tmp_path):
    est = MLPClassifier(hidden_layer_sizes=(6,), max_iter=5, random_state=0, alpha=1e-3).fit(X, Y_BIN)
    p = est.predict_proba(X)
    assert clone(est).get_params() == est.get_params() and "model_" not in vars(clone(est))
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X), p)
    again.coefs_[0][0, 0] += 1.0  # views into the unpickled model's own θ
    assert again.model_.params[0] == est.model_.params[0] + 1.0
    joblib.dump(est, tmp_path / "est.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "est.joblib").predict_proba(X), p)
    pipe = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0))
    assert pipe.fit(X, Y_REG).predict(X).shape == Y_REG.shape


@quiet
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the workers' start-up
def test_grid_search_in_two_processes():
    grid = GridSearchCV(MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0),
                        {"alpha": [1e-4, 1e-1]}, cv=2, n_jobs=2).fit(X, Y_MULTI)
    serial = GridSearchCV(MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0),
                          {"alpha": [1e-4, 1e-1]}, cv=2, n_jobs=1).fit(X, Y_MULTI)
    np.testing.assert_array_equal(grid.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])


@quiet
@pytest.mark.parametrize("backend", ["numpy", "cuda"])
def test_other_backends_train_the_same_network(backend):
    if backend == "cuda":
        from fastbp.cuda import unavailable_reason

        if unavailable_reason() is not None:
            pytest.skip(unavailable_reason())
    y = Y_MULTI[:20]
    args = dict(hidden_layer_sizes=(3,), max_iter=2, random_state=0, alpha=0.5, batch_size=7)
    a = MLPClassifier(**args).fit(X[:20], y)
    b = MLPClassifier(backend=backend, **args).fit(X[:20], y)
    assert max_coef_diff(a, b) < 1e-12 and b.loss_ == pytest.approx(a.loss_, rel=1e-12)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="dtype"):
        MLPClassifier(dtype=np.int32).fit(X, Y_MULTI)
    with pytest.raises(ValueError, match="backend"):
        MLPClassifier(backend="tpu").fit(X, Y_MULTI)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="poisson").fit(X, Y_REG[:, 0])
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(3, 0)).fit(X, Y_MULTI)
    with pytest.raises(ValueError, match="classes"):
        MLPClassifier().partial_fit(X, Y_MULTI)
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPClassifier(solver="lbfgs").partial_fit  # noqa: B018
    with pytest.raises(ValueError, match="NaN"):
        MLPClassifier().fit(np.where(X > 2, np.nan, X), Y_MULTI)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the grid search's worker start-up
def test_example_runs(tmp_path):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "examples" / "sklearn_pipeline.py"
    spec = importlib.util.spec_from_file_location("sklearn_pipeline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = mod.main(quick=True, plot=str(tmp_path / "loss.png"))
    assert r["digits accuracy"] > 0.8 and r["grid test accuracy"] > 0.8 and np.isfinite(r["final validation loss"])
    assert r["epochs"] == 10
