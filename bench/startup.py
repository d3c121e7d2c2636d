"""Start-up cost: wall time of fresh processes with an empty and with a warm kernel cache.

    python bench/startup.py [--processes 3] [--dtypes float32 float64] [--sizes 64,128,10] [--digits] [--events]

Cases, each in fresh processes (medians over ``--processes``, min-max in brackets):

- ``script``: the script of issue #10 -- import fastbp, build ``MLP([64, 128, 10], relu/softmax,
  cross_entropy)`` or the ``--sizes`` given, one ``loss_and_grad`` of 64 samples, one ``predict`` --
  timed phase by phase
  (import, first ``loss_and_grad``, first ``predict``, a short ``fit``: 2 epochs of 256 samples)
  and as a whole process (interpreter start included);
- ``digits`` (``--digits``, needs scikit-learn): load digits, build [64, 128, 10], train 20
  epochs (Adam, batch 32), predict -- the whole process, against the same script with
  ``sklearn.neural_network.MLPClassifier``.

"cold" runs in a fresh, empty ``NUMBA_CACHE_DIR`` each time; "warm" reuses the one a cold run
filled.  The children run as a user's script does, with Python's bytecode cache on:
``PYTHONDONTWRITEBYTECODE`` is dropped from their environment (where it is set, every fastbp
module is compiled from source in every process, some 0.1 s, while installed packages such as
scikit-learn still load the ``.pyc`` files written at install).  ``--events`` lists which Numba
functions compiled in one cold and one warm run, and for how long (from Numba's
``numba:compile`` events).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from fastbp.benchmark import in_fresh_process

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent

SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import fastbp
t_import = time.perf_counter() - t0
dtype = np.dtype(sys.argv[1])
events = []
if sys.argv[2] == "1":
    from numba.core import event as ev
    recorder = ev.install_recorder("numba:compile")  # keep a reference: collected, it uninstalls
    rec = recorder.__enter__()
sizes = [int(v) for v in sys.argv[3].split(",")]
net = fastbp.MLP(sizes, ["relu"] * (len(sizes) - 2) + ["softmax"], "cross_entropy", dtype=dtype, seed=0)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, sizes[0])).astype(dtype)
y = rng.integers(0, sizes[-1], 64)
t = time.perf_counter(); net.loss_and_grad(x, y); t_grad = time.perf_counter() - t
t = time.perf_counter(); net.predict(x); t_pred = time.perf_counter() - t
xf = rng.standard_normal((256, sizes[0])).astype(dtype); yf = rng.integers(0, sizes[-1], 256)
t = time.perf_counter(); net.fit(xf, yf, epochs=2, batch_size=32, verbose=False); t_fit = time.perf_counter() - t
if sys.argv[2] == "1":
    stack = []
    for ts, e in rec.buffer:
        if e.is_start:
            stack.append(ts)
            continue
        start = stack.pop()
        if not stack:
            f = getattr((e.data or {}).get("dispatcher"), "py_func", None)
            events.append([f"{f.__module__}.{f.__qualname__}" if f else "?", ts - start])
print(json.dumps({"import": t_import, "grad": t_grad, "predict": t_pred, "fit": t_fit, "events": events}))
"""

DIGITS = """
import sys
import numpy as np
from sklearn.datasets import load_digits
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
if sys.argv[1] == "fastbp":
    import fastbp
    net = fastbp.MLP([64, 128, 10], ["relu", "softmax"], "cross_entropy", dtype=np.float32, seed=0)
    net.fit(x, y, epochs=20, batch_size=32, lr=1e-3, verbose=False)
    acc = float(np.mean(net.predict(x).argmax(1) == y))
else:
    import warnings
    from sklearn.neural_network import MLPClassifier
    warnings.simplefilter("ignore")
    clf = MLPClassifier(hidden_layer_sizes=(128,), batch_size=32, max_iter=20, random_state=0).fit(x, y)
    acc = float(np.mean(clf.predict(x) == y))
print(acc)
"""


def _env(cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONDONTWRITEBYTECODE")}
    env["NUMBA_CACHE_DIR"] = cache
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _script(cache: str, dtype: str, events: bool, sizes: str = "64,128,10") -> dict:
    t = time.perf_counter()
    r = in_fresh_process([sys.executable, "-c", SCRIPT, dtype, "1" if events else "0", sizes], env=_env(cache),
                         cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t
    r["wall"] = wall
    return r


def _digits(cache: str, which: str) -> tuple[float, float]:
    t = time.perf_counter()
    accuracy = in_fresh_process([sys.executable, "-c", DIGITS, which], env=_env(cache), cwd=tempfile.gettempdir())
    return time.perf_counter() - t, float(accuracy)


def _fmt(values, unit="s") -> str:
    v = np.array(values)
    if unit == "s":
        return f"{np.median(v):.2f} ({v.min():.2f}-{v.max():.2f})"
    return f"{np.median(v):.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"], help="none: the digits case only")
    ap.add_argument("--digits", action="store_true")
    ap.add_argument("--events", action="store_true")
    ap.add_argument("--sizes", default="64,128,10", help="the script's network (relu, then softmax), e.g. 8,64,3")
    args = ap.parse_args()

    import numba

    print(f"numba {numba.__version__}, {os.cpu_count()} CPUs, NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}, "
          f"{args.processes} fresh processes per cell, seconds")
    print()
    with tempfile.TemporaryDirectory() as tmp:
        if args.dtypes:
            print("| script | cache | import | first loss_and_grad | first predict | fit 2 epochs | whole process |")
            print("|---|---|---|---|---|---|---|")
        for dtype in args.dtypes:
            cold, warm_dirs = [], []
            for i in range(args.processes):
                cache = os.path.join(tmp, f"{dtype}-{i}")
                cold.append(_script(cache, dtype, False, args.sizes))
                warm_dirs.append(cache)
            warm = [_script(warm_dirs[i % len(warm_dirs)], dtype, False, args.sizes) for i in range(args.processes)]
            for name, runs in (("empty", cold), ("warm", warm)):
                cells = [_fmt([r[k] for r in runs]) for k in ("import", "grad", "predict", "fit", "wall")]
                what = "issue #10" if args.sizes == "64,128,10" else f"[{args.sizes.replace(',', ', ')}]"
                print(f"| {what}, {dtype} | {name} | " + " | ".join(cells) + " |", flush=True)
        if args.digits:
            print()
            print("| digits, 20 epochs, whole process | cache | fastbp | scikit-learn MLPClassifier "
                  "| fastbp / sklearn |")
            print("|---|---|---|---|---|")
            cache = os.path.join(tmp, "digits")
            cold = [_digits(os.path.join(tmp, f"digits-cold-{i}"), "fastbp") for i in range(args.processes)]
            _digits(cache, "fastbp")
            warm, sk = [], []
            for _ in range(args.processes):  # interleaved: the machine's speed drifts
                warm.append(_digits(cache, "fastbp"))
                sk.append(_digits(cache, "sklearn"))
            sk_med = float(np.median([t for t, _ in sk]))
            for name, runs in (("empty", cold), ("warm", warm)):
                med = float(np.median([t for t, _ in runs]))
                print(f"| accuracy {np.median([a for _, a in runs]):.3f} vs {np.median([a for _, a in sk]):.3f} "
                      f"| {name} | {_fmt([t for t, _ in runs])} | {_fmt([t for t, _ in sk])} | {med / sk_med:.2f} |")
        if args.events and args.dtypes:
            cache = os.path.join(tmp, "events")
            for name in ("empty", "warm"):
                r = _script(cache, args.dtypes[0], True, args.sizes)
                total = sum(t for _, t in r["events"])
                print(f"\n{name} cache, {args.dtypes[0]}: {len(r['events'])} top-level compiles, {total:.2f} s")
                for fn, t in sorted(r["events"], key=lambda e: -e[1])[:12]:
                    print(f"  {t:6.2f} s  {fn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
