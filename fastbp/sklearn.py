"""scikit-learn estimators over :class:`fastbp.MLP`: a drop-in ``MLPClassifier`` and ``MLPRegressor``.

``from fastbp.sklearn import MLPClassifier`` in place of
``from sklearn.neural_network import MLPClassifier`` needs no other change: every constructor
parameter of scikit-learn's estimators has the same name, meaning and default, the fitted
attributes have scikit-learn's names, and training follows scikit-learn's algorithm step for
step (its initialisation, shuffling, minibatches, L2 penalty ``alpha``, learning-rate rules,
``tol``/``n_iter_no_change`` convergence and early stopping), drawing from ``random_state`` in
the same order.  The minibatch steps run in fastbp's compiled epoch loop
(:meth:`fastbp.backends.Backend.trainer`) instead of NumPy, one call per epoch.

Additions: ``dtype`` (None follows X, as scikit-learn does: float32 X trains in float32),
``backend`` ("cpu", "numpy" or "cuda"), ``callback`` (called after each epoch; a true return
value stops), the classifier's ``class_weight`` (a dict or "balanced"), the fitted
``validation_loss_curve_`` (with ``early_stopping``), ``model_`` (the :class:`fastbp.MLP`), and a
``partial_fit`` that takes multilabel targets without ``classes``.

With the same ``random_state`` the fitted coefficients equal scikit-learn's to rounding (in
float64; the tests check it for every solver).  Where the two differ:

- ``MLPRegressor(loss="poisson")`` (scikit-learn ≥ 1.7) is not available: fastbp has no
  exponential output layer; ``loss="squared_error"`` (the default) is.
- Sparse X is accepted and made dense: the kernels take dense arrays.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
except ImportError as e:  # pragma: no cover - the optional dependency
    raise ImportError("fastbp.sklearn needs scikit-learn: pip install 'fastbp[sklearn]'") from e
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _SkClassifier
from sklearn.neural_network import MLPRegressor as _SkRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data

from . import optim as _optim
from .backends import BACKENDS
from .model import MLP
from .training import deferred_interrupt

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC = ("sgd", "adam")
#: scikit-learn's activation names and fastbp's.
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_OUTPUT = {"softmax": ("softmax", "cross_entropy"), "logistic": ("sigmoid", "binary_cross_entropy"),
           "identity": ("identity", "mse")}

_OWN_CONSTRAINTS = {
    "dtype": "no_validation",  # checked in fit: None, float32 or float64
    "backend": [StrOptions(set(BACKENDS))],
    "callback": [callable, None],
}


def _check_dtype(dtype):
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype: expected None, numpy.float32 or numpy.float64, got {dtype!r}")
    return dt


def _sample_weights(sample_weight, X: np.ndarray) -> np.ndarray:
    """``sample_weight`` as a vector of X's dtype with one weight per row of X (a number stands for
    every row), as scikit-learn's estimators take it."""
    if isinstance(sample_weight, numbers.Number):
        return np.full(X.shape[0], sample_weight, dtype=X.dtype)
    sw = check_array(sample_weight, ensure_2d=False, dtype=X.dtype, input_name="sample_weight")
    if sw.ndim != 1 or sw.shape[0] != X.shape[0]:
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected {(X.shape[0],)}!")
    if sw.shape[0] and not np.any(sw):
        raise ValueError("sample_weight: every weight is zero; expected at least one non-zero weight")
    return sw


def _shuffle(idx: np.ndarray, random_state: np.random.RandomState) -> np.ndarray:
    """``sklearn.utils.shuffle(idx, random_state=random_state)`` with the same draw (``resample``
    without replacement shuffles ``arange(n)`` in place), without its per-call parameter
    validation, which is a large part of a small fit's time."""
    order = np.arange(idx.shape[0])
    random_state.shuffle(order)
    return idx[order]


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: scikit-learn's ``BaseMultilayerPerceptron``
    algorithm over a :class:`fastbp.MLP`."""

    # -- the fitted parameters, as views into model_.params (scikit-learn's shapes) --------------

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices, ``coefs_[i]`` of shape (n_units_i, n_units_{i+1}): views W^{i+1}.T of
        ``model_.params``."""
        if "model_" not in self.__dict__:
            raise AttributeError("coefs_: the estimator is not fitted")
        return [w.T for w in self.model_.weights]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors, views b^{i+1} of ``model_.params``."""
        if "model_" not in self.__dict__:
            raise AttributeError("intercepts_: the estimator is not fitted")
        return list(self.model_.biases)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _check_solver(self):
        if self.solver not in _STOCHASTIC:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. {self.solver} is not "
                                 "stochastic.")
        return True

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data (sparse is made dense).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets: class labels (classification) or real numbers (regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights.

        Returns
        -------
        self : object
            The trained estimator.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental):
        hidden = self.hidden_layer_sizes
        if not hasattr(hidden, "__iter__"):
            hidden = [hidden]
        hidden = list(hidden)
        if np.any(np.array(hidden) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        if any(not isinstance(h, numbers.Integral) for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be integers, got {hidden}.")
        dtype = _check_dtype(self.dtype)
        first_pass = "model_" not in self.__dict__ or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass, dtype=dtype)
        if not first_pass:
            X = X.astype(self.model_.dtype, copy=False)
        if sample_weight is not None:
            sample_weight = _sample_weights(sample_weight, X)
        sample_weight = self._weights_of_classes(y, sample_weight, incremental)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        self.n_outputs_ = Y.shape[1]
        layer_units = [X.shape[1], *hidden, self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(Y, layer_units, X.dtype)
        elif list(self.model_.sizes) != layer_units:
            raise ValueError(f"hidden_layer_sizes: the fitted network has layers {list(self.model_.sizes)}, "
                             f"the parameters and data give {layer_units}; fit without warm_start to start again")
        if self.solver in _STOCHASTIC:
            self._fit_stochastic(X, Y, sample_weight, incremental)
        else:
            self._fit_lbfgs(X, Y, sample_weight)
        if not np.all(np.isfinite(self.model_.params)):
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large values "
                             "and need to be preprocessed.")
        return self

    def _initialize(self, Y, layer_units, dtype):
        """scikit-learn's initialisation: Glorot uniform weights and biases, drawn layer by layer
        (coefficients, then intercepts) from ``random_state``."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        hidden_act = _ACTIVATIONS[self.activation]
        out_act, loss = _OUTPUT[self.out_activation_]
        net = MLP(layer_units, activations=[hidden_act] * (len(layer_units) - 2) + [out_act], loss=loss,
                  dtype=dtype, backend=self.backend, seed=0)
        factor = 2.0 if self.activation == "logistic" else 6.0
        for w, b, fan_in, fan_out in zip(net.weights, net.biases, layer_units[:-1], layer_units[1:], strict=True):
            bound = np.sqrt(factor / (fan_in + fan_out))
            w[...] = self._random_state.uniform(-bound, bound, (fan_in, fan_out)).T
            b[...] = self._random_state.uniform(-bound, bound, fan_out)
        self.model_ = net
        self._best_params = net.params.copy()
        self._opt_state = None
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.validation_loss_curve_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.validation_loss_curve_ = None
                self.best_validation_score_ = None

    def _penalty(self, n) -> float:
        """scikit-learn's L2 term (α/2) Σ‖W‖² / n at the current weights."""
        return 0.5 * self.alpha * sum(float(np.sum(w.astype(np.float64) ** 2)) for w in self.model_.weights) / n

    def _loss_scale(self) -> float:
        """What fastbp's data loss is divided by to give scikit-learn's (its squared error is a
        mean over the outputs too; the gradient is the same)."""
        return 1.0

    def _fit_lbfgs(self, X, Y, sample_weight):
        net = self.model_
        opt = _optim.LBFGS(gtol=self.tol, max_fun=self.max_fun)
        h = net.fit(X, self._targets(Y), epochs=self.max_iter, optimizer=opt, sample_weight=sample_weight,
                    alpha=self.alpha, verbose=bool(self.verbose))
        self.n_iter_ = len(h["loss"])
        if not h["converged"]:
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s): {h['message']}. Increase the "
                          f"number of iterations (max_iter={self.max_iter}) or scale the data.", ConvergenceWarning,
                          stacklevel=4)
        n = X.shape[0] if sample_weight is None else float(np.sum(sample_weight, dtype=np.float64))
        data = net.backend_object.evaluate(net.params, *self._checked(X, Y))[0] if sample_weight is None else \
            net.backend_object.loss_and_grad(net.params, *self._checked(X, Y), net.backend_object.check_sample_weight(
                sample_weight, X.shape[0]), np.empty_like(net.params))
        self.loss_ = data / self._loss_scale() + (self._penalty(n) if n > 0 else 0.0)

    def _checked(self, X, Y):
        b = self.model_._backend
        xa, _ = b.check_x(X)
        return xa, b.check_y(self._targets(Y), xa.shape[0])

    def _fit_stochastic(self, X, Y, sample_weight, incremental):
        net = self.model_
        backend = net.backend_object
        if not incremental or self._opt_state is None:
            if self.solver == "sgd":
                self._optimizer = _optim.SGD(momentum=self.momentum,
                                             nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
            else:
                self._optimizer = _optim.Adam(beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon, eps_hat=True)
            self._opt_state = _optim.OptimizerState.for_optimizer(self._optimizer, None, net.n_params, net.dtype)
            self._learning_rate = float(self.learning_rate_init)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        val = None
        if early_stopping:
            stratify = Y if is_classifier(self) and self.n_outputs_ == 1 else None
            parts = (X, Y) if sample_weight is None else (X, Y, sample_weight)
            split = train_test_split(*parts, random_state=self._random_state, test_size=self.validation_fraction,
                                     stratify=stratify)
            X, X_val, Y, Y_val = split[:4]
            sample_weight, sw_val = (None, None) if sample_weight is None else (split[4], split[5])
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of your "
                                 "dataset.")
            val = (X_val, Y_val, sw_val) + self._checked(X_val, Y_val)
        n_samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                              stacklevel=4)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        xa, ya = self._checked(X, Y)
        swa = backend.check_sample_weight(sample_weight, n_samples)
        sample_idx = np.arange(n_samples, dtype=np.int64)
        scale = self._loss_scale()
        try:
            self.n_iter_ = 0
            with net.lock, deferred_interrupt() as check_interrupt, backend.trainer(
                net.params, xa, ya, swa, self._optimizer, self._opt_state, batch_size, 0.0, self.alpha
            ) as trainer:
                try:
                    self._epochs(trainer, xa, sample_idx, val, scale, incremental, check_interrupt)
                finally:
                    if early_stopping:  # restore the best weights
                        self._restore_best(trainer)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)

    def _restore_best(self, trainer):
        """θ of the best epoch (early stopping), on the host and in the trainer."""
        trainer.pull()
        self.model_.params[...] = self._best_params
        trainer.push()

    def _epochs(self, trainer, xa, sample_idx, val, scale, incremental, check_interrupt):
        net = self.model_
        n_samples = sample_idx.shape[0]
        for _ in range(self.max_iter):
            if self.shuffle:
                sample_idx = _shuffle(sample_idx, self._random_state)
            lr = self._learning_rate
            st = trainer.run_epoch(sample_idx, lr, check_interrupt)
            if st.diverged:
                trainer.pull()
                net.params[...] = np.nan  # scikit-learn's outcome: fit raises below
                return
            self.n_iter_ += 1
            self.loss_ = (st.loss_sum / scale + st.penalty_sum) / st.n_seen
            self.t_ += n_samples
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            self._update_no_improvement_count(trainer, val, scale)
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._set_learning_rate(trainer, self.learning_rate_init / (self.t_ + 1) ** self.power_t)
            stop = False
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if self.early_stopping else "Training loss"
                msg = (f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} consecutive "
                       "epochs.")
                if self.solver == "sgd" and self.learning_rate == "adaptive" and self._learning_rate > 1e-6:
                    self._set_learning_rate(trainer, self._learning_rate / 5.0)
                    if self.verbose:
                        print(f"{msg} Setting learning rate to {self._learning_rate:f}")
                    self._no_improvement_count = 0
                else:
                    if self.verbose:
                        small = self.solver == "sgd" and self.learning_rate == "adaptive"
                        print(f"{msg} {'Learning rate too small. ' if small else ''}Stopping.")
                    stop = True
            if not stop and self.callback is not None:
                trainer.pull()
                stop = bool(self.callback(self))
                trainer.push()
            if stop or incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                              "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=5)

    def _set_learning_rate(self, trainer, lr):
        """A new learning rate; SGD's velocity is kept in units of θ, as scikit-learn keeps it
        (fastbp's velocity v' is scikit-learn's v / −η)."""
        if self.solver == "sgd" and lr != self._learning_rate and lr > 0 and self.momentum > 0:
            trainer.scale_velocity(self._learning_rate / lr)
        self._learning_rate = lr

    def _update_no_improvement_count(self, trainer, val, scale):
        if self.early_stopping:
            X_val, Y_val, sw_val, xv, yv = val
            trainer.pull()
            score = self._score_outputs(self.model_._backend.forward(self.model_.params, xv), Y_val, sw_val)
            self.validation_scores_.append(score)
            self.validation_loss_curve_.append(trainer.evaluate(xv, yv)[0] / scale)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self.model_.params.copy()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # -- prediction --------------------------------------------------------------------------

    def _forward(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=(np.float64, np.float32), reset=False)
        if sp.issparse(X):
            X = X.toarray()
        return self.model_.predict(np.ascontiguousarray(X, dtype=self.model_.dtype))

    def _validate_X_y(self, X, y, reset, dtype, **kw):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32) if dtype is None else dtype, reset=reset, **kw)
        if sp.issparse(X):
            X = X.toarray()
        X = np.ascontiguousarray(X)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _weights_of_classes(self, y, sample_weight, incremental):
        return sample_weight


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier`` on fastbp's kernels.

    Every parameter of :class:`sklearn.neural_network.MLPClassifier` has its name, meaning and
    default (see there), plus:

    Parameters
    ----------
    dtype : None, numpy.float32 or numpy.float64, default None
        Precision of the network; None follows X (float32 X trains in float32, anything else in
        float64).
    backend : {"cpu", "numpy", "cuda"}, default "cpu"
        The :class:`fastbp.MLP` backend.
    class_weight : dict, "balanced" or None, default None
        Weights of the classes, multiplying the sample weights: ``{label: weight}`` (others 1) or
        "balanced" (n_samples / (n_classes · count), over the data of the call).  Not with
        multilabel targets, and "balanced" not with ``partial_fit``.
    callback : callable, default None
        ``callback(estimator)`` after each epoch of the stochastic solvers, with ``loss_curve_``
        and ``coefs_`` up to date; a true return value stops training.

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_,
    coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_,
    out_activation_
        As scikit-learn's (``coefs_`` and ``intercepts_`` are views into ``model_.params``).
    validation_loss_curve_ : list of float or None
        With ``early_stopping``, the loss of the validation split after each epoch (no penalty).
    model_ : fastbp.MLP
        The network.
    """

    _parameter_constraints = {
        **_SkClassifier._parameter_constraints,
        **_OWN_CONSTRAINTS,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dtype=None,
        backend="cpu",
        class_weight=None,
        callback=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.backend = backend
        self.class_weight = class_weight
        self.callback = callback

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _targets(self, Y):
        """The binarised targets as the model takes them: class indices for a softmax output,
        0/1 columns for sigmoid ones."""
        if self.out_activation_ == "softmax":
            return np.argmax(Y, axis=1).astype(np.int64)
        return Y.astype(self.model_.dtype)

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = self._validate_X_y(X, y, reset, dtype)
        if "classes_" not in self.__dict__ or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                     f"call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. 'y' "
                                 f"has {classes}.")
        self._y_raw = y
        return X, self._label_binarizer.transform(y).astype(bool)

    def _weights_of_classes(self, y, sample_weight, incremental):
        raw, self._y_raw = self._y_raw, None
        if self.class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight: not available for multilabel targets; pass sample_weight instead")
        if incremental and self.class_weight == "balanced":
            raise ValueError("class_weight: 'balanced' is not available with partial_fit, whose calls see parts of "
                             "the data; pass a dict of the weights of the whole data set")
        classes = self.classes_
        if isinstance(self.class_weight, dict):
            cw = compute_class_weight(self.class_weight, classes=classes, y=raw)
        else:
            present = np.unique(raw)
            cw = np.ones(classes.shape[0])
            cw[np.searchsorted(classes, present)] = compute_class_weight("balanced", classes=present, y=raw)
        w = cw[np.searchsorted(classes, raw)]
        return w if sample_weight is None else w * sample_weight

    def predict(self, X):
        """Predict using the multi-layer perceptron classifier.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score_outputs(self, out, Y_val, sw_val):
        if self.n_outputs_ == 1:
            out = out.ravel()
        return accuracy_score(self._label_binarizer.inverse_transform(Y_val if Y_val.shape[1] > 1 else Y_val.ravel()),
                              self._label_binarizer.inverse_transform(out), sample_weight=sw_val)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single iteration over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            The target values (class labels, or a multilabel indicator matrix).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.
        classes : array of shape (n_classes,), default=None
            Classes across all calls to partial_fit: required on the first call, except for
            multilabel indicator targets (whose classes are their columns).

        Returns
        -------
        self : object
            The trained estimator.
        """
        self._validate_params()
        if "classes_" not in self.__dict__:
            multilabel = type_of_target(y).startswith("multilabel")
            if classes is None and not multilabel:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if multilabel else classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on the last call to partial_fit, was: "
                             f"{self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """Return the log of probability estimates, ``log(predict_proba(X))``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_y_prob : ndarray of shape (n_samples, n_classes)
        """
        y_prob = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Probability estimates.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
            The probability of each class, in the order of ``classes_``.
        """
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor`` on fastbp's kernels.

    Every parameter of :class:`sklearn.neural_network.MLPRegressor` has its name, meaning and
    default (see there; ``loss`` takes "squared_error" only), plus ``dtype``, ``backend`` and
    ``callback`` as for :class:`MLPClassifier`.  Fitted attributes as scikit-learn's, plus
    ``validation_loss_curve_`` and ``model_``.
    """

    _parameter_constraints = {
        **_SkRegressor._parameter_constraints,
        **_OWN_CONSTRAINTS,
        "loss": [StrOptions({"squared_error"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dtype=None,
        backend="cpu",
        callback=None,
    ):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.backend = backend
        self.callback = callback

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _output_activation(self):
        return "identity"

    def _loss_scale(self):
        return float(self.n_outputs_)

    def _targets(self, Y):
        return np.ascontiguousarray(Y, dtype=self.model_.dtype)

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = self._validate_X_y(X, y, reset, dtype, y_numeric=True)
        return X, y

    def predict(self, X):
        """Predict using the multi-layer perceptron model.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The predicted values.
        """
        y_pred = self._forward(X)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def _score_outputs(self, out, Y_val, sw_val):
        if out.shape[1] == 1:
            out, Y_val = out.ravel(), Y_val.ravel()
        return r2_score(Y_val, out, sample_weight=sw_val)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single iteration over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            The target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            The trained estimator.
        """
        self._validate_params()
        return self._fit(X, y, sample_weight, incremental=True)

