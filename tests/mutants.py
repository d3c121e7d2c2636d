"""Mutation check: small, realistic errors injected into the kernels must make the tests fail.

    python tests/mutants.py [--tests tests/test_bounds.py] [--only NAME ...] [--list]

For each mutation, a temporary copy of the repository gets one source edit (each must match
exactly once), and the chosen tests run against that copy with a fresh Numba cache; a mutation
is *caught* when they fail.  The unmutated copy runs first and must pass.  Each mutant
recompiles the kernels it touches, about a minute each on 2 cores, so this runs by hand (or
on a CI machine with the time), not in ``.ci/run``; the README lists the last result.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = "fastbp/cpu/_layers.py"
TILE = "fastbp/cpu/_tile.py"

#: name -> (file, original text, mutated text): each a one-token slip a kernel author could make.
MUTATIONS = {
    # the micro-kernel that every product runs
    "tile-k-loop-stops-one-short": (
        TILE, "with cgutils.for_range(builder, K_) as loop:",
        "with cgutils.for_range(builder, builder.sub(K_, one)) as loop:"),
    "tile-row-clamp-reads-the-next-row": (
        TILE, "builder.mul(smin(const(i), last), ars_)", "builder.mul(smin(const(i + 1), last), ars_)"),
    "tile-masked-columns-off-by-one": (
        TILE, "masks = [builder.icmp_signed(\"<\", lanes[v], nr_splat)",
        "masks = [builder.icmp_signed(\"<=\", lanes[v], nr_splat)"),
    # the products' drivers
    "forward-bias-skips-the-last-column": (
        LAYERS, "            for j in range(n):\n                z[r, j] += b[j]",
        "            for j in range(n - 1):\n                z[r, j] += b[j]"),
    "forward-pack-one-entry-scaled": (
        LAYERS, "            P[base + k * w + c] = M[j0 + c, k]",
        "            P[base + k * w + c] = M[j0 + c, k] * (1.0005 if k == 1 else 1.0)"),
    "bp3-transposed-store-stride": (
        LAYERS, "rows, cols, A, B, ars, aks, cis, cjs = n_in, n_out, a_prev, delta, 1, n_in, 1, n_in",
        "rows, cols, A, B, ars, aks, cis, cjs = n_in, n_out, a_prev, delta, 1, n_in, 1, n_out"),
    "bp4-last-sample-dropped": (
        LAYERS, "    for r in range(delta.shape[0]):\n        for j in range(j0, j1):",
        "    for r in range(delta.shape[0] - 1):\n        for j in range(j0, j1):"),
    "bp2-dropped-sigma-prime": (
        "fastbp/activations.py", "                out[r, i] = g[r, i] * derivative(code, z[r, i])",
        "                out[r, i] = g[r, i]"),
    "stored-sigma-prime-dropped-in-bp1": (
        LAYERS, "                delta[r, i] = w * d * z[r, i]", "                delta[r, i] = w * d"),
    "tanh-polynomial-constant": (
        "fastbp/_math.py", "        p = p * x2 + T(2.06390887954e-2)", "        p = p * x2 + T(2.07390887954e-2)"),
    # other kernels, tried later as a new user would (σ' of the other activations, BP1 of the
    # other losses, the optimizer)
    "elu-derivative-scaled": (
        "fastbp/activations.py", "        return T(1.0) if z > 0 else np.exp(z)\n",
        "        return T(1.0) if z > 0 else np.exp(z) * T(1.001)\n"),
    "gelu-derivative-term-scaled": (
        "fastbp/activations.py", "+ z * phi\n", "+ T(0.999) * z * phi\n"),
    "leaky-relu-derivative-slope": (
        "fastbp/activations.py", "        return T(1.0) if z > 0 else T(LEAKY_SLOPE)\n",
        "        return T(1.0) if z > 0 else T(0.011)\n"),
    "bce-delta-target-scaled": (
        "fastbp/losses.py", "delta[r, i] = scale * (a[r, i] - yi)\n", "delta[r, i] = scale * (a[r, i] - yi * 1.001)\n"),
    "mse-softmax-jvp-sign": (
        "fastbp/losses.py", "((a[r, i] - yi) - ga)", "((a[r, i] - yi) + ga)"),
    "adam-bias-correction-off-by-one": (
        "fastbp/cpu/optim.py", "c2 = T(1.0 - beta2**t)", "c2 = T(1.0 - beta2 ** (t + 1))"),
}

#: The tests run against each mutant, unless ``--tests`` says otherwise: the kernels against the
#: rounding bounds, the activations and the gradients against their references and finite
#: differences, the optimizers and the training loop against the NumPy reference's.
TESTS = ["tests/test_bounds.py", "tests/test_activations.py", "tests/test_gradients.py", "tests/test_training.py"]


def _copy(dst: pathlib.Path) -> None:
    for name in ("fastbp", "tests", "examples", "conftest.py", "pyproject.toml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)


def _run(tree: pathlib.Path, tests: list[str]) -> tuple[bool, float, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_CACHE_DIR"] = str(tree / ".numba-cache")
    env["PYTHONPATH"] = str(tree)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                       cwd=tree, env=env, capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    return r.returncode == 0, time.perf_counter() - t0, lines[-1] if lines else r.stderr[-200:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", nargs="+", default=TESTS)
    ap.add_argument("--only", nargs="+", choices=sorted(MUTATIONS))
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        for name, (path, _, _) in MUTATIONS.items():
            print(f"{name}  ({path})")
        return 0
    names = args.only or list(MUTATIONS)
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp) / "base"
        _copy(base)
        ok, secs, last = _run(base, args.tests)
        print(f"| unmutated | {'pass' if ok else 'FAIL'} | {secs:.0f} s | {last} |", flush=True)
        if not ok:
            return 2
        missed = []
        for name in names:
            path, old, new = MUTATIONS[name]
            tree = pathlib.Path(tmp) / name
            _copy(tree)
            source = (tree / path).read_text()
            if source.count(old) != 1:
                print(f"| {name} | NOT APPLIED ({source.count(old)} matches) | | |", flush=True)
                missed.append(name)
                continue
            (tree / path).write_text(source.replace(old, new))
            passed, secs, last = _run(tree, args.tests)
            print(f"| {name} | {'MISSED' if passed else 'caught'} | {secs:.0f} s | {last} |", flush=True)
            if passed:
                missed.append(name)
            shutil.rmtree(tree, ignore_errors=True)
    print(f"{len(names) - len(missed)} of {len(names)} mutations caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
