"""The on-disk kernel cache: never stale, safe for parallel code, and where users expect it.

Every case runs in fresh processes (a cache is only read by a new process).  The children use a
copy of the package where the test edits files or makes the in-tree cache unwritable, and
report the answer and whether the kernel was loaded or compiled (``dispatcher.stats``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastbp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fastbp
    from fastbp import _cache
    from fastbp.cpu import kernels

    # Small functions, so that the cases below compile in a second: the parallel BP4 kernel (a
    # parallel region), or a function that the test put into a copy of the package and that
    # calls one of another file of it (see PROBE).
    if sys.argv[1] == "parallel":
        n = 4099  # an odd number of rows
        twin = kernels.bias_grad_parallel
        out = np.empty(3)
        twin(np.linspace(-2.0, 2.0, n * 3).reshape(n, 3), out)
    else:
        from fastbp._probe import probe as twin
        out = np.array([twin(1.5)])
    print(json.dumps({
        "out": [float(out.flat[0]), float(out.sum())],
        "hits": sum(twin.stats.cache_hits.values()),
        "misses": sum(twin.stats.cache_misses.values()),
        "cache_dir": _cache.cache_dir(),
        "layer": __import__("numba").threading_layer() if sys.argv[1] == "parallel" else None,
    }))
    """
)


def _run(pkg_root, twin="serial", **env_changes):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["PYTHONPATH"] = pkg_root
    env.update({k: v for k, v in env_changes.items() if v is not None})
    out = subprocess.run([sys.executable, "-c", CHILD, twin], capture_output=True, text=True, env=env, timeout=600,
                         cwd=pkg_root)  # python -c puts the working directory first on sys.path
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


#: Two files added to the package copy: a cached function and the function of another file that
#: it calls, as the kernels call the activations, losses and ``_math`` (cached by fastbp's locator).
PROBE = {
    "_probe.py": "from numba import njit\n\nfrom ._probe_callee import shift\n\n\n"
                 "@njit(cache=True)\ndef probe(x):\n    return 2.0 * shift(x)\n",
    "_probe_callee.py": "from numba import njit\n\n\n@njit(cache=True)\ndef shift(x):\n    return x + 1.0\n",
}


@pytest.fixture
def pkg_copy(tmp_path):
    """A copy of the fastbp package (sources only) under tmp_path/src, with the PROBE files."""
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "fastbp"), src / "fastbp", ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in PROBE.items():
        (src / "fastbp" / name).write_text(text)
    return src


def test_editing_an_inlined_callee_in_another_file_invalidates_the_cache(pkg_copy, tmp_path):
    cache = str(tmp_path / "cache")
    first = _run(str(pkg_copy), NUMBA_CACHE_DIR=cache)
    again = _run(str(pkg_copy), NUMBA_CACHE_DIR=cache)
    assert first["misses"] == 1 and again["hits"] == 1 and again["misses"] == 0  # the cache is in use
    assert again["out"] == first["out"]
    assert again["cache_dir"].startswith(cache)

    callee = pkg_copy / "fastbp" / "_probe_callee.py"
    callee.write_text(callee.read_text().replace("x + 1.0", "x + 2.0"))
    edited = _run(str(pkg_copy), NUMBA_CACHE_DIR=cache)
    assert edited["misses"] == 1, f"loaded from a cache compiled with the old callee: {first} {edited}"
    assert first["out"][0] == 5.0 and edited["out"][0] == 7.0  # 2 (1.5 + 1), then 2 (1.5 + 2)
    assert edited["out"] != first["out"]
    assert edited["cache_dir"] != first["cache_dir"]


def test_read_only_install_caches_per_user_and_numba_cache_dir_wins(pkg_copy, tmp_path):
    (pkg_copy / "fastbp" / "__pycache__").write_text("not a directory: the package dir is not writable")
    xdg = tmp_path / "xdg"
    first = _run(str(pkg_copy), XDG_CACHE_HOME=str(xdg))
    again = _run(str(pkg_copy), XDG_CACHE_HOME=str(xdg))
    assert first["cache_dir"].startswith(str(xdg / "fastbp"))
    assert again["hits"] == 1 and again["out"] == first["out"]
    user = _run(str(pkg_copy), XDG_CACHE_HOME=str(xdg), NUMBA_CACHE_DIR=str(tmp_path / "mine"))
    assert user["cache_dir"].startswith(str(tmp_path / "mine")) and user["misses"] == 1


def test_parallel_cache_loads_across_thread_counts_layers_and_concurrent_processes(tmp_path):
    """Written with 2 threads, loaded with 1 thread and under another threading layer; written by
    two processes at once.  Each either loads or recompiles, and answers the same."""
    cache = str(tmp_path / "cache")
    ref = _run(ROOT, "parallel", NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="2")
    assert ref["misses"] == 1
    one = _run(ROOT, "parallel", NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1")
    other = _run(ROOT, "parallel", NUMBA_CACHE_DIR=cache, NUMBA_THREADING_LAYER="workqueue")
    assert other["layer"] == "workqueue"
    for r in (one, other):
        assert r["out"] == ref["out"]
        assert r["hits"] + r["misses"] == 1
    assert one["hits"] == 1 and other["hits"] == 1

    fresh = str(tmp_path / "fresh")
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: _run(ROOT, "parallel", NUMBA_CACHE_DIR=fresh), range(3)))
    for r in results:
        assert r["out"] == ref["out"]
    assert _run(ROOT, "parallel", NUMBA_CACHE_DIR=fresh)["hits"] == 1


def test_serial_and_parallel_twins_have_separate_cache_entries():
    """Numba's cache index has no compile flags in its key: twins compiled from one function
    would load each other's machine code.  The parallel twin is a renamed copy."""
    from fastbp.cpu import _layers, network, optim

    for serial, parallel in (
        (_layers.linear_forward_serial, _layers.linear_forward_parallel),
        (_layers.backprop_delta_serial, _layers.backprop_delta_parallel),
        (_layers.weight_bias_grad_serial, _layers.weight_bias_grad_parallel),
        (_layers.bias_grad_serial, _layers.bias_grad_parallel),
        (optim.adam_step_serial, optim.adam_step_parallel),
    ):
        assert serial.py_func.__qualname__ + "_parallel" == parallel.py_func.__qualname__
        assert serial._cache._cache_file._index_name != parallel._cache._cache_file._index_name
        assert serial.targetoptions.get("parallel") is not True and parallel.targetoptions["parallel"] is True
    # The whole-network twins call the per-layer ones (the parallel twin the parallel ones).
    rebound = {"_linear_forward": "linear_forward", "_weight_bias_grad": "weight_bias_grad",
               "_backprop_delta": "backprop_delta"}
    for serial, parallel in ((network.forward_serial, network.forward_parallel),
                             (network.loss_and_grad_serial, network.loss_and_grad_parallel)):
        assert serial.py_func.__qualname__ + "_parallel" == parallel.py_func.__qualname__
        assert serial._cache._cache_file._index_name != parallel._cache._cache_file._index_name
    body = network.forward_serial.py_func.__globals__["_forward_body"]
    body_par = network.forward_parallel.py_func.__globals__["_forward_body"]
    assert network.loss_and_grad_parallel.py_func.__globals__["_forward_body"] is body_par is not body
    assert body_par.py_func.__globals__["_linear_forward"] is _layers.linear_forward_parallel
    assert body.py_func.__globals__["_linear_forward"] is _layers.linear_forward_serial
    for name, layer in rebound.items():
        assert network.loss_and_grad_serial.py_func.__globals__[name] is getattr(_layers, f"{layer}_serial")
        if name != "_linear_forward":
            assert network.loss_and_grad_parallel.py_func.__globals__[name] is getattr(_layers, f"{layer}_parallel")


def test_the_cache_is_keyed_by_the_whole_package():
    from fastbp import _cache
    from fastbp.cpu import network

    assert network.forward_serial._cache._impl.locator.get_source_stamp() == _cache.package_hash()
    assert np.all([c in "0123456789abcdef" for c in _cache.package_hash()])


ONLY_WHAT_RUNS = textwrap.dedent(
    """
    import json
    import numpy as np
    import fastbp
    from fastbp.cpu import network, train

    def compiled():
        return {name: len(getattr(mod, name).overloads) for mod, names in (
            (network, ["forward_serial", "forward_parallel", "loss_and_grad_serial", "loss_and_grad_parallel"]),
            (train, ["train_epoch", "train_epoch_serial", "train_epoch_parallel"])) for name in names}

    net = fastbp.MLP([5, 7, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    x = np.ones((6, 5), np.float32)
    y = np.zeros(6, np.int64)
    net.predict(x)
    net.evaluate(x, y)
    after_predict = compiled()
    net.fit(x, y, epochs=1, batch_size=4, verbose=False)  # a last batch of 2: the same (serial) twin
    print(json.dumps([after_predict, compiled()]))
    """
)


def test_a_process_compiles_only_what_it_runs():
    """predict and evaluate compile no training step; a small fit compiles no parallel twin."""
    out = subprocess.run([sys.executable, "-c", ONLY_WHAT_RUNS], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    after_predict, after_fit = json.loads(out.stdout.strip().splitlines()[-1])
    assert after_predict == {**dict.fromkeys(after_predict, 0), "forward_serial": 1}
    # train_epoch_serial links the serial step: compiled, it compiles the step too; loaded from a
    # warm cache, it needs nothing else.  No parallel twin either way.
    assert after_fit.pop("loss_and_grad_serial") in (0, 1)
    assert after_predict.pop("loss_and_grad_serial") == 0
    assert after_fit == {**after_predict, "train_epoch_serial": 1}


def test_every_compiled_function_is_cached():
    """A function without a disk cache recompiles in every process (train_epoch once did, 2.3 s)."""
    import importlib

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    from fastbp._cache import FastbpFunctionCache

    names = ["activations", "losses", "layout", "_math", "_validation", "cpu.kernels", "cpu.network", "cpu.optim",
             "cpu.train", "cpu._layers"]
    seen = 0
    for name in names:
        module = importlib.import_module(f"fastbp.{name}")
        for attr, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__.startswith("fastbp"):
                if obj.targetoptions.get("inline", "never") != "never":
                    continue  # inlined into its callers, never called on its own
                assert not isinstance(obj._cache, NullCache), f"fastbp.{name}.{attr} is not cached"
                # and loaded without Numba's registry refresh (fastbp._cache.cached_njit)
                assert isinstance(obj._cache, FastbpFunctionCache), f"fastbp.{name}.{attr}: {type(obj._cache)}"
                seen += 1
    assert seen > 30


USER_LOOP = textwrap.dedent(
    """
    import sys
    import numpy as np
    from numba import njit
    import fastbp
    from fastbp import cpu
    from fastbp.cpu.optim import sgd_step

    net = fastbp.MLP([13, 65, 7], ["tanh", "softmax"], "cross_entropy", dtype=np.float32, seed=0)
    n = 300  # N * P > PARALLEL_MIN_WORK: the parallel twin
    x = np.linspace(-1.0, 1.0, n * 13).reshape(n, 13).astype(np.float32)
    y = np.arange(n) % 7
    if sys.argv[1] == "model":
        print(net.loss_and_grad(x, y)[0])
        sys.exit(0)

    @njit
    def user_loop(params, sizes, acts, loss, x, y, grad, work, velocity, steps):
        c = 0.0
        for _ in range(steps):
            c = cpu.loss_and_grad(params, sizes, acts, loss, x, y, grad, work)
            sgd_step(params, grad, velocity, 0.0, 0.0, False, 0.0)
        return c

    grad = np.empty_like(net.params)
    work = np.empty(fastbp.workspace_size(net.sizes, n), np.float32)
    print(user_loop(net.params, net.spec.sizes, net.spec.activations, net.spec.loss, x, y, grad, work,
                    np.zeros_like(grad), 2))
    """
)


def test_a_user_njit_loop_links_cached_parallel_code(tmp_path):
    """A user's (uncached) @njit loop that loads a kernel whose parallel twin came from the disk cache.

    The order that aborted the process ("LLVM ERROR: Symbol not found: allocate_sched"): the model
    caches the parallel twin; a user loop compiles the public dispatcher around the *loaded* twin
    and caches it; the next process loads that dispatcher before any threading layer is launched.
    """
    # The suite's own cache (in-tree, or the caller's NUMBA_CACHE_DIR): the order that matters is
    # that the third process *loads* the parallel twin and the dispatcher, which holds whether the
    # first two compiled them or found them there (that saves compiling them once more here).
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_") or k == "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = ROOT
    outs = []
    for mode in ("model", "loop", "loop"):
        r = subprocess.run([sys.executable, "-c", USER_LOOP, mode], capture_output=True, text=True, env=env,
                           timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(float(r.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1] == outs[2]


WARM_LOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fastbp
    from numba.core.registry import cpu_target
    from fastbp.cpu import kernels, network

    net = fastbp.MLP([5, 7, 3], ["tanh", "softmax"], "cross_entropy", dtype=np.float32, seed=0)
    x = np.linspace(-1.0, 1.0, 9 * 5).reshape(9, 5).astype(np.float32)
    y = np.arange(9) % 3
    p = net.predict(x)
    loss, g = net.loss_and_grad(x, y)
    net.fit(x, y, epochs=1, batch_size=4, verbose=False)
    g4 = np.empty(3)
    kernels.bias_grad_parallel(np.linspace(-2.0, 2.0, 4099 * 3).reshape(4099, 3), g4)  # a parallel twin
    registries = len(cpu_target.typing_context._registries)
    misses = sum(sum(d.stats.cache_misses.values())
                 for d in (network.forward_serial, network.loss_and_grad_serial, kernels.bias_grad_parallel))
    user = None
    if sys.argv[1] == "compile":  # a compilation after light loads: Numba refreshes the registries itself
        from numba import njit
        user = float(njit(lambda a: np.linalg.norm(a) + len({1: a}))(p))
        registries = len(cpu_target.typing_context._registries)
    print(json.dumps({"out": [p.tolist(), float(loss), g.tolist(), net.params.tolist(), g4.tolist()],
                      "registries": registries, "misses": misses, "user": user}))
    """
)


def _suite_env():
    """The suite's own cache (in-tree, or the caller's NUMBA_CACHE_DIR), no other Numba setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_") or k == "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = ROOT
    return env


def test_a_warm_process_loads_kernels_without_numba_registries():
    """Loading cached kernels skips Numba's registry refresh (0.25 s of a warm start), gives the
    answers of the process that compiled them, and a later compilation in that process works."""
    runs = []
    for mode in ("fill", "load", "compile"):
        r = subprocess.run([sys.executable, "-c", WARM_LOAD, mode], capture_output=True, text=True, env=_suite_env(),
                           timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    fill, load, compiled = runs
    assert load["misses"] == 0 and load["registries"] == 0  # loaded, and nothing refreshed
    assert load["out"] == fill["out"] == compiled["out"]
    assert compiled["registries"] > 0  # the user's function compiled (registries loaded) and ran
    assert compiled["user"] == pytest.approx(float(np.linalg.norm(np.array(fill["out"][0]))) + 1)


def _undefined_symbols(elf: bytes) -> set[str]:
    """Names of the undefined symbols of a 64-bit little-endian ELF relocatable object."""
    import struct

    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    names = set()
    for _, sh_type, _, _, off, size, link, _, _, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        stroff = sections[link][4]
        for pos in range(off, off + size, entsize):
            st_name, _, _, st_shndx = struct.unpack_from("<IBBH", elf, pos)
            if st_shndx == 0 and st_name:
                names.add(elf[stroff + st_name:elf.index(b"\0", stroff + st_name)].decode())
    return names


RESOLVE = textwrap.dedent(
    """
    import json, sys
    import llvmlite.binding as ll
    import numpy as np
    import fastbp
    from numba.core.registry import cpu_target
    fastbp.MLP([5, 7, 3], ["tanh", "softmax"], "cross_entropy", dtype=np.float32).predict(np.ones((2, 5), np.float32))
    assert not cpu_target.typing_context._registries  # a process that has only loaded
    names = json.loads(sys.stdin.read())
    print(json.dumps([n for n in names if not ll.address_of_symbol(n)]))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="reads the cached object code as ELF")
def test_cached_machine_code_resolves_without_numba_registries():
    """Every symbol that a cached kernel's machine code imports exists in a process that only
    loads (an unresolved one aborts the process in LLVM, it is no Python error)."""
    import glob
    import pickle

    test_a_warm_process_loads_kernels_without_numba_registries()  # at least these kernels are cached
    r = subprocess.run([sys.executable, "-c", "from fastbp import _cache; print(_cache.cache_dir())"],
                       capture_output=True, text=True, env=_suite_env(), cwd=ROOT, check=True)
    objects = []

    def walk(o):  # a cached library is (name, "object", (object code, bitcode)) inside the pickle
        if isinstance(o, tuple) and len(o) == 3 and o[1] == "object" and isinstance(o[2], tuple):
            objects.append(o[2][0])
        elif isinstance(o, tuple | list):
            for v in o:
                walk(v)

    for path in glob.glob(os.path.join(r.stdout.strip(), "**", "*.nbc"), recursive=True):
        with open(path, "rb") as f:
            walk(pickle.loads(f.read()))
    names = set().union(*map(_undefined_symbols, objects))
    assert len(objects) >= 3 and "NRT_MemInfo_call_dtor" in names
    r = subprocess.run([sys.executable, "-c", RESOLVE], input=json.dumps(sorted(names)), capture_output=True,
                       text=True, env=_suite_env(), cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
