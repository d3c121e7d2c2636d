"""The benchmark suite (``python -m fastbp bench``): its baseline does the work it claims, its
report computes what it says, and the command writes its table, JSON and chart."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import reference as R
from fastbp.benchmark import problem, spec_of, suite
from fastbp.benchmark.contenders import LR, lean_numpy_step


def test_spec_of_spelled_out_network():
    assert spec_of("5-7-3:9:tanh,softmax:cross_entropy") == ([5, 7, 3], 9, ["tanh", "softmax"], "cross_entropy")
    assert spec_of("5-7-1:2:sigmoid:mse")[2] == ["sigmoid", "sigmoid"]
    with pytest.raises(ValueError, match="widths:batch:activations:loss"):
        spec_of("5-7-1:two:sigmoid:mse")


@pytest.mark.parametrize("config", ["tiny", "5-7-3:13:relu,softmax:cross_entropy", "3-1:1:identity:mse"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lean_numpy_step_is_one_sgd_step(config, dtype):
    """The baseline's update is lr times the reference gradient of the same weights."""
    kw, x, y = problem(config, dtype)
    step = lean_numpy_step(kw, x, y)
    W, b = step.params
    net = fastbp.MLP(**dict(kw, backend="numpy"))
    theta = np.empty(net.n_params, np.float64)
    Ws, bs = net.spec.split(theta)
    for w, w0, c, c0 in zip(Ws, W, bs, b, strict=True):
        w[...], c[...] = w0, c0
    before = theta.copy()
    yy = y if y.dtype.kind == "i" else y.astype(np.float64)
    _, g = R.loss_and_grad(theta, net.sizes, net.spec.activations, net.spec.loss, x.astype(np.float64), yy)
    step()
    for w, w0, c, c0 in zip(Ws, W, bs, b, strict=True):
        w[...], c[...] = w0, c0
    tol = 1e-3 if dtype == np.float32 else 1e-9
    assert np.linalg.norm((before - theta) / LR - g) <= tol * np.linalg.norm(g) + 1e-12


def _doc(times_fastbp, times_lean, commit="abc"):
    return {
        "fingerprint": {"cpu": "CPU", "host_cpu_name": "znver4", "numba_cpu_name": "", "isa": "AVX-512",
                        "vector_bits": 512, "cores": 2, "versions": {"numpy": "2"}, "commit": commit,
                        "date": "2026-12-07 00:00 UTC"},
        "settings": {"configs": ["tiny"], "dtypes": ["float32"], "contenders": ["lean", "fastbp"], "processes": 2,
                     "repeats": 3, "min_time": 0.1, "missing": {}, "threads": {"lean": 2, "fastbp": 2}},
        "peak": {"float32": [1e11, 1e11]},
        "rows": [{"config": "tiny", "label": "tiny", "dtype": "float32", "flops": 1e5,
                  "times": {"lean": times_lean, "fastbp": times_fastbp},
                  "first": {"lean": [0.0, 0.0], "fastbp": [5.0, 0.5]}}],
    }


def test_markdown_ratios_are_per_round():
    # round ratios 40/10 = 4 and 30/20 = 1.5: median 2.75, min 1.5, max 4
    table = suite.markdown(_doc([10e-6, 20e-6], [40e-6, 30e-6]))
    row = next(line for line in table.splitlines() if line.startswith("| tiny"))
    assert "2.75x (1.50–4.00)" in row
    assert "35.0 (30.0–40.0)" in row  # the lean step's µs: median (min–max)
    assert "7%" in row  # 1e5 flops / 15 µs / 1e11 flop/s
    assert "2.75 s (0.50–5.00)" in table  # fastbp's first step


def test_compare_old_over_new():
    text = suite.compare(_doc([20e-6, 20e-6], [1e-5, 1e-5], "old"), _doc([10e-6, 10e-6], [1e-5, 1e-5], "new"))
    row = next(line for line in text.splitlines() if "fastbp" in line and line.startswith("| tiny"))
    assert row.endswith("| 2.00x (2.00–2.00) |")
    assert "commit old" in text and "commit new" in text


def test_command_writes_table_json_and_compares(tmp_path):
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "fastbp", "bench", "5-9-3:7:tanh,softmax:cross_entropy", "--dtypes", "float32",
           "--contenders", "lean",
           "--processes", "2", "--repeats", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "round 2/2" in proc.stderr  # progress
    (js,) = out.glob("*.json")
    doc = json.loads(js.read_text())
    assert [len(v) for v in doc["rows"][0]["times"].values()] == [2]  # one time per round
    assert doc["fingerprint"]["isa"] in ("AVX-512", "AVX2", "SSE")
    assert (out / (js.stem + ".md")).read_text().count("| [5, 9, 3] b7 | float32 |") == 1
    cmp = subprocess.run([sys.executable, "-m", "fastbp", "bench", "--compare", str(js), str(js)],
                         capture_output=True, text=True, timeout=60)
    assert cmp.returncode == 0 and "| [5, 9, 3] b7 | float32 | lean NumPy |" in cmp.stdout


def test_command_names_a_bad_configuration():
    proc = subprocess.run([sys.executable, "-m", "fastbp", "bench", "5-x-3:7:tanh:mse"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "5-x-3:7:tanh:mse" in proc.stderr


def test_command_names_a_file_it_cannot_compare(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    proc = subprocess.run([sys.executable, "-m", "fastbp", "bench", "--compare", str(bad), str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--compare" in proc.stderr and "bad.json" in proc.stderr
