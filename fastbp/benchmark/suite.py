"""The benchmark suite's runner, report and comparison (``python -m fastbp bench``).

How a run measures:

- Each contender runs in its own processes (Numba's and OpenBLAS's thread pools both spin, and
  two of them in one process slow each other down).  One process times every configuration of
  the run for one contender and one dtype.
- ``processes`` rounds; each round runs every contender once, in an order rotated from round
  to round, so that drift of the machine hits every contender alike.
- A process reports, for each configuration, the median of ``repeats`` timed batches of steps
  after a warm-up step, and separately the first step's time with the set-up before it
  (compilation, or loading the compiled kernels from the disk cache).
- A cell of the table is the median over the processes, with their min-max.  A speed-up is the
  median of the per-round ratios, with their min-max.
- The peak is a large matrix product through NumPy's BLAS, in each round.

The run is headed by the machine's fingerprint: CPU model, instruction set, cores, versions,
the peak, the commit and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

from .configs import CONFIGS, SWEEP, problem, spec_of, step_flops
from .contenders import CONTENDERS, NotInstalled, make_step, median_time, peak_flops

__all__ = ["compare", "fingerprint", "in_fresh_process", "main", "markdown", "run", "write_chart",
           "write_results_section"]

DTYPES = ("float32", "float64")
#: The contenders of a run unless told otherwise: every one but the oracle.
DEFAULT_CONTENDERS = ("lean", "fastbp", "njit", "torch", "jax")
#: ``--quick``: the named configurations but the large one, float32, two rounds, short timings.
QUICK = {"configs": ["tiny", "small", "medium"], "dtypes": ["float32"], "processes": 2, "repeats": 10,
         "min_time": 0.05}
#: Environment variables that change what a contender runs, recorded with the run.
ENV = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS",
       "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "XLA_FLAGS")
LABELS = {"lean": "lean NumPy", "fastbp": "fastbp `MLP`", "njit": "fastbp in `@njit` loop",
          "reference": "`fastbp.reference`", "torch": "PyTorch eager", "jax": "`jax.jit`"}


# -- one process -------------------------------------------------------------------------------

def worker(kind: str, dtype_name: str, configs: list[str], repeats: int, min_time: float) -> dict:
    """Time one contender on ``configs`` in this process (run by :func:`run` in a fresh one)."""
    dtype = np.dtype(dtype_name).type
    if kind == "peak":
        return {"peak": peak_flops(dtype)}
    if kind in ("fastbp", "njit"):
        import fastbp

        fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # the steady state: parallel code where it pays, at once
    out: dict = {"times": {}, "first": {}, "version": None}
    for config in configs:
        t = time.perf_counter()
        try:
            step, out["version"] = make_step(kind, config, dtype)
        except NotInstalled as e:
            return {"missing": str(e)}
        step()
        out["first"][config] = time.perf_counter() - t
        out["times"][config] = median_time(step, repeats, min_time) / getattr(step, "steps", 1)
    out["threads"] = _threads(kind)
    return out


def _threads(kind: str) -> int:
    """Threads the contender computes with in this process."""
    if kind in ("fastbp", "njit"):
        import numba

        return numba.get_num_threads()
    if kind == "torch":
        import torch

        return torch.get_num_threads()
    if kind in ("lean", "reference"):
        try:
            from threadpoolctl import threadpool_info
        except ImportError:
            return os.cpu_count() or 1
        return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)
    return os.cpu_count() or 1


def in_fresh_process(args: list[str], env: dict | None = None, cwd=None, timeout: float | None = None):
    """Run ``args`` (a command line) in a fresh process and return what its last line of output
    holds as JSON; a failure raises a RuntimeError with the end of its error output.

    The one harness of the suite and of the scripts in ``bench/``: a contender measured in a
    process of its own, where no other thread pool spins.
    """
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:4]))} ... failed (exit status {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{' '.join(map(str, args[:4]))} ... printed nothing:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _spawn(kind: str, dtype_name: str, configs: list[str], repeats: int, min_time: float) -> dict:
    args = json.dumps({"kind": kind, "dtype_name": dtype_name, "configs": configs, "repeats": repeats,
                       "min_time": min_time})
    return in_fresh_process([sys.executable, "-m", "fastbp.benchmark.suite", args])


# -- a run -------------------------------------------------------------------------------------

def run(configs, dtypes=("float32",), contenders=DEFAULT_CONTENDERS, processes: int = 3, repeats: int = 30,
        min_time: float = 0.2, progress=None) -> dict:
    """Run the suite and return its results (the JSON document ``python -m fastbp bench`` writes).

    Parameters
    ----------
    configs : list of str
        Names of ``fastbp.benchmark.CONFIGS`` or ``fastbp.benchmark.SWEEP``,
        or networks spelled ``widths:batch:activations:loss``.
    dtypes : list of str
        "float32", "float64" or both.
    contenders : list of str
        Of ``fastbp.benchmark.CONTENDERS``; those not installed are left out.
    processes : int
        Rounds: fresh processes per contender and dtype, interleaved.
    repeats : int
        Timed batches of steps per configuration in each process.
    min_time : float
        Seconds the ``repeats`` batches take at least.
    progress : callable, optional
        Called with one line of text per process.
    """
    import fastbp

    for c in configs:
        kw = problem(c, np.float32)[0]
        fastbp.MLP(**dict(kw, backend="numpy"))  # a bad network fails here, before anything runs
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"dtypes: expected some of {DTYPES}, got {d!r}")
    for k in contenders:
        if k not in CONTENDERS:
            raise ValueError(f"contenders: expected some of {CONTENDERS}, got {k!r}")
    progress = progress or (lambda line: None)
    kinds = list(contenders)
    times = {(d, k): [] for d in dtypes for k in kinds}
    peaks = {d: [] for d in dtypes}
    missing, versions, threads = {}, {}, {}
    total = processes * len(dtypes) * (len(kinds) + 1)
    done = 0
    t_run = time.perf_counter()
    for r in range(processes):
        order = kinds[r % len(kinds):] + kinds[: r % len(kinds)]
        for d in dtypes:
            for k in ["peak", *order]:
                if k in missing:
                    done += 1
                    continue
                t = time.perf_counter()
                res = _spawn(k, d, list(configs), repeats, min_time)
                done += 1
                if k == "peak":
                    peaks[d].append(res["peak"])
                    what = f"peak {res['peak'] / 1e9:.0f} GFLOP/s"
                elif "missing" in res:
                    missing[k] = res["missing"]
                    what = "not installed"
                else:
                    times[(d, k)].append(res)
                    versions[k], threads[k] = res["version"], res["threads"]
                    what = f"{len(configs)} configurations, {res['threads']} threads"
                progress(f"[{done:>3}/{total}] round {r + 1}/{processes}  {d}  {k:<9} {what}  "
                         f"({time.perf_counter() - t:.1f} s; {time.perf_counter() - t_run:.0f} s in all)")
    rows = []
    for d in dtypes:
        for c in configs:
            sizes, batch, acts, loss = spec_of(c)
            row = {"config": c, "label": label(c), "dtype": d, "sizes": list(sizes), "batch": batch,
                   "activations": list(acts), "loss": loss, "flops": step_flops(c), "times": {}, "first": {}}
            for k in kinds:
                if times[(d, k)]:
                    row["times"][k] = [p["times"][c] for p in times[(d, k)]]
                    row["first"][k] = [p["first"][c] for p in times[(d, k)]]
            rows.append(row)
    return {
        "schema": 1,
        "fingerprint": fingerprint({k: v for k, v in versions.items() if v}),
        "settings": {"configs": list(configs), "dtypes": list(dtypes), "contenders": kinds, "processes": processes,
                     "repeats": repeats, "min_time": min_time, "missing": missing, "threads": threads},
        "peak": peaks,
        "rows": rows,
    }


def label(config: str) -> str:
    """The configuration's name in tables: the named ones with their sizes and batch."""
    if config in SWEEP:
        return config
    sizes, batch = spec_of(config)[:2]
    return f"{config} {list(sizes)} b{batch}" if config in CONFIGS else f"{list(sizes)} b{batch}"


# -- the machine --------------------------------------------------------------------------------

def fingerprint(extra_versions: dict | None = None) -> dict:
    """What the figures depend on: CPU, instruction set, cores, versions, commit and date."""
    import llvmlite.binding as llvm
    import numba

    import fastbp

    vb = fastbp.config.VECTOR_BYTES
    isa = {64: "AVX-512", 32: "AVX2"}.get(vb, "SSE")
    versions = {"python": platform.python_version(), "fastbp": fastbp.__version__, "numba": numba.__version__,
                "numpy": np.__version__, "blas": _blas()}
    versions.update(extra_versions or {})
    return {
        "cpu": _cpu_model(),
        "host_cpu_name": llvm.get_host_cpu_name(),
        "numba_cpu_name": os.environ.get("NUMBA_CPU_NAME", ""),
        "isa": isa,
        "vector_bits": vb * 8,
        "cores": os.cpu_count(),
        "env": {k: os.environ[k] for k in ENV if k in os.environ},
        "versions": versions,
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - older NumPy, or a build that does not say
        return "unknown"


def _commit() -> str:
    here = pathlib.Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here)
        if head.returncode != 0:
            return "not a git checkout"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except FileNotFoundError:
        return "unknown (no git)"


# -- the report ----------------------------------------------------------------------------------

def _cell(values) -> str:
    v = [x * 1e6 for x in values]
    return f"{np.median(v):.1f} ({min(v):.1f}–{max(v):.1f})"


def _seconds(values) -> str:
    return f"{np.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def _ratios(num, den) -> list[float]:
    return [a / b for a, b in zip(num, den)]  # noqa: B905 - a contender may have fewer rounds


def _ratio_cell(num, den) -> str:
    r = _ratios(num, den)
    return f"{np.median(r):.2f}x ({min(r):.2f}–{max(r):.2f})" if r else "–"


def header(doc: dict) -> str:
    """The fingerprint and the settings of a run, as Markdown lines."""
    fp, st = doc["fingerprint"], doc["settings"]
    cpu_name = fp["host_cpu_name"] + (f", compiled for NUMBA_CPU_NAME={fp['numba_cpu_name']}"
                                      if fp["numba_cpu_name"] else "")
    versions = ", ".join(f"{k} {v}" for k, v in fp["versions"].items())
    env = " ".join(f"{k}={v!r}" if v == "" else f"{k}={v}" for k, v in fp.get("env", {}).items())
    peaks = "; ".join(f"{d} {np.median(p) / 1e9:.0f} GFLOP/s" for d, p in doc["peak"].items() if p)
    threads = ", ".join(f"{k} {n}" for k, n in st["threads"].items())
    missing = "; ".join(f"{k} not installed" for k in st["missing"])
    firsts = []
    for k in st["contenders"]:
        rows = [r for r in doc["rows"] if k in r["first"]]
        if rows:  # the first configuration of a process: set-up, compilation or the cache load
            firsts.append(f"{LABELS[k]} {_seconds(rows[0]['first'][k])}")
    return "\n".join([
        f"- Machine: {fp['cpu']} ({cpu_name}), {fp['cores']} cores; instruction set {fp['isa']} "
        f"({fp['vector_bits']}-bit vectors).",
        f"- Versions: {versions}." + (f" Environment: `{env}`." if env else ""),
        f"- Peak (NumPy matmul 2048², same run): {peaks}. Threads: {threads}." + (f" {missing}." if missing else ""),
        f"- First step of a fresh process, with the set-up and the compilation or the load from the disk cache "
        f"(the first round may compile, later ones load): {'; '.join(firsts)}.",
        f"- Commit {fp['commit']}, {fp['date']}; {st['processes']} processes per contender, {st['repeats']} "
        f"timed batches of at least {st['min_time']} s in all per configuration.",
    ])


def markdown(doc: dict) -> str:
    """The run as a Markdown table: times in µs (median, min–max over processes); speed-ups are
    the other contender's time over fastbp's, per round (higher is better for fastbp)."""
    kinds = [k for k in doc["settings"]["contenders"] if k not in doc["settings"]["missing"]]
    cols = ["config", "dtype"]
    for k in kinds:
        cols.append(f"{LABELS[k]} µs")
        if k == "fastbp" and "lean" in kinds:
            cols.append("`MLP` vs lean")
        elif k == "njit" and "lean" in kinds:
            cols.append("`@njit` loop vs lean")
        elif k not in ("lean", "fastbp", "njit") and "fastbp" in kinds:
            cols.append(f"`MLP` vs {LABELS[k]}")
    if "fastbp" in kinds:
        cols.append("`MLP` % of peak")
    lines = [header(doc), "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in doc["rows"]:
        t = row["times"]
        cells = [row["label"], row["dtype"]]
        for k in kinds:
            cells.append(_cell(t[k]) if k in t else "–")
            if k in ("fastbp", "njit") and "lean" in kinds:
                cells.append(_ratio_cell(t.get("lean", []), t.get(k, [])))
            elif k not in ("lean", "fastbp", "njit") and "fastbp" in kinds:
                cells.append(_ratio_cell(t.get(k, []), t.get("fastbp", [])))
        if "fastbp" in kinds:
            peak = doc["peak"].get(row["dtype"])
            fb = t.get("fastbp")
            cells.append(f"{100 * row['flops'] / np.median(fb) / np.median(peak):.0f}%" if fb and peak else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_chart(doc: dict, path, dtype: str = "float32") -> bool:
    """Bars of each contender's speed relative to the lean NumPy step (its time over theirs), per
    configuration.  Returns False where matplotlib is not installed or the run has no lean step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in doc["rows"] if r["dtype"] == dtype and "lean" in r["times"]]
    kinds = [k for k in ("fastbp", "njit", "torch", "jax") if any(k in r["times"] for r in rows)]
    if not rows or not kinds:
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 3.8))
    width = 0.8 / len(kinds)
    for i, k in enumerate(kinds):
        vals = [np.median(_ratios(r["times"]["lean"], r["times"][k])) if k in r["times"] else 0.0 for r in rows]
        ax.bar([j + (i - (len(kinds) - 1) / 2) * width for j in range(len(rows))], vals, width,
               label=LABELS[k].replace("`", ""))
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), [r["config"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("lean NumPy time / its time")
    fp = doc["fingerprint"]
    ax.set_title(f"Training step, {dtype}, {fp['cores']} cores, {fp['isa']} (higher is better)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_results_section(doc: dict, path, command: str) -> None:
    """Put the run's table in ``path`` (bench/RESULTS.md) as the current one of its instruction set.

    The table goes between ``<!-- suite:ISA -->`` and ``<!-- /suite:ISA -->``, replacing what was
    there; a new instruction set's block goes before ``<!-- suite:end -->``.
    """
    path = pathlib.Path(path)
    text = path.read_text()
    isa = doc["fingerprint"]["isa"]
    if doc["fingerprint"]["numba_cpu_name"]:
        isa += f" code ({doc['fingerprint']['numba_cpu_name']}) on {doc['fingerprint']['host_cpu_name']}"
    start, end = f"<!-- suite:{isa} -->", f"<!-- /suite:{isa} -->"
    block = f"{start}\n### {isa}\n\n`{command}`\n\n{markdown(doc)}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    elif "<!-- suite:end -->" in text:
        text = text.replace("<!-- suite:end -->", f"{block}\n\n<!-- suite:end -->")
    else:
        raise ValueError(f"{path}: no <!-- suite:end --> marker to put the {isa} table before")
    path.write_text(text)


# -- A/B ------------------------------------------------------------------------------------------

def compare(old: dict, new: dict) -> str:
    """Per configuration, dtype and contender: NEW's speed relative to OLD's (old time / new time;
    above 1 is faster), the median of all pairs of their processes, with the min–max."""
    lines = []
    for name, doc in (("old", old), ("new", new)):
        fp = doc["fingerprint"]
        lines.append(f"- {name}: commit {fp['commit']}, {fp['date']}, {fp['cpu']}, {fp['isa']}")
    if (old["fingerprint"]["cpu"], old["fingerprint"]["isa"]) != (new["fingerprint"]["cpu"], new["fingerprint"]["isa"]):
        lines.append("- the two runs come from different machines or instruction sets")
    lines += ["", "| config | dtype | contender | old µs | new µs | old / new |", "|---|---|---|---|---|---|"]
    index = {(r["config"], r["dtype"]): r for r in old["rows"]}
    for r in new["rows"]:
        o = index.get((r["config"], r["dtype"]))
        if o is None:
            continue
        for k, tn in r["times"].items():
            to = o["times"].get(k)
            if not to:
                continue
            pairs = [a / b for a in to for b in tn]
            lines.append(f"| {r['label']} | {r['dtype']} | {LABELS[k]} | {_cell(to)} | {_cell(tn)} | "
                         f"{np.median(pairs):.2f}x ({min(pairs):.2f}–{max(pairs):.2f}) |")
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------------

def main(argv=None) -> int:
    """``python -m fastbp bench``: run the suite, or compare two runs."""
    ap = argparse.ArgumentParser(prog="python -m fastbp bench",
                                 description="Time one training step of fastbp against NumPy, PyTorch and JAX.")
    ap.add_argument("configs", nargs="*",
                    help="configurations: names (tiny small medium large, or of the sweep) or "
                         "widths:batch:activations:loss; default: the named ones and the sweep")
    ap.add_argument("--quick", action="store_true", help="tiny, small and medium in float32, 2 rounds (~1 minute)")
    ap.add_argument("--dtypes", nargs="+", choices=DTYPES, default=None)
    ap.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=None)
    ap.add_argument("--processes", type=int, default=None, help="rounds of fresh processes (default 3)")
    ap.add_argument("--repeats", type=int, default=None, help="timed batches per configuration (default 30)")
    ap.add_argument("--out", default="fastbp-bench", help="folder for the table, the JSON and the chart")
    ap.add_argument("--results", metavar="RESULTS.md",
                    help="also put the table in this file as the current one of the machine's instruction set")
    ap.add_argument("--compare", nargs=2, metavar=("OLD.json", "NEW.json"), help="compare two runs and exit")
    a = ap.parse_args(argv)
    if a.compare:
        docs = []
        for path in a.compare:
            try:
                doc = json.loads(pathlib.Path(path).read_text())
                if not isinstance(doc, dict) or {"fingerprint", "rows"} - set(doc):
                    raise ValueError("not a JSON file of python -m fastbp bench")
            except (OSError, ValueError) as e:
                ap.error(f"--compare: {path}: {e}")
            docs.append(doc)
        print(compare(*docs))
        return 0
    if a.results:  # before the run, not after it
        try:
            text = pathlib.Path(a.results).read_text()
        except OSError as e:
            ap.error(f"--results: {e}")
        if "<!-- suite:end -->" not in text:
            ap.error(f"--results: {a.results} has no <!-- suite:end --> marker to put the table before")
    settings = dict(QUICK) if a.quick else {"configs": [*CONFIGS, *SWEEP], "dtypes": list(DTYPES), "processes": 3,
                                             "repeats": 30, "min_time": 0.2}
    if a.configs:
        settings["configs"] = a.configs
    for key in ("dtypes", "processes", "repeats"):
        if getattr(a, key) is not None:
            settings[key] = getattr(a, key)
    if settings["processes"] < 1 or settings["repeats"] < 1:
        ap.error("--processes and --repeats take a positive count")
    contenders = a.contenders or DEFAULT_CONTENDERS
    try:
        for c in settings["configs"]:
            spec_of(c)
    except ValueError as e:
        ap.error(str(e))

    def progress(line):
        print(line, file=sys.stderr, flush=True)

    import fastbp

    vb = fastbp.config.VECTOR_BYTES
    progress(f"fastbp bench: {len(settings['configs'])} configurations × {settings['dtypes']} × "
             f"{len(contenders)} contenders, {settings['processes']} rounds; "
             f"{ {64: 'AVX-512', 32: 'AVX2'}.get(vb, 'SSE')} code, {os.cpu_count()} cores")
    doc = run(settings.pop("configs"), contenders=contenders, progress=progress, **settings)
    env = " ".join(f"{k}={v}" if v else f"{k}=''" for k, v in doc["fingerprint"]["env"].items())
    command = "python -m fastbp bench " + " ".join(argv if argv is not None else sys.argv[2:])
    doc["command"] = f"{env} {command.strip()}".strip()
    table = markdown(doc)
    print(table)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{doc['fingerprint']['date'][:10]}-{doc['fingerprint']['isa'].lower()}{'-quick' if a.quick else ''}"
    (out / f"{stem}.md").write_text(f"`{doc['command']}`\n\n{table}\n")
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    charted = write_chart(doc, out / f"{stem}.png", doc["settings"]["dtypes"][0])
    progress(f"wrote {out / stem}.md, .json" + (", .png" if charted else " (no chart: matplotlib is not installed)"))
    if a.results:
        write_results_section(doc, a.results, doc["command"])
        progress(f"updated {a.results}")
    return 0


if __name__ == "__main__":
    print(json.dumps(worker(**json.loads(sys.argv[1]))))
