"""The mutation check as a test, for machines with the time: ``FASTBP_MUTANTS=1 python -m pytest
tests/test_mutants.py -n 0`` (about 20 minutes on 2 cores: each mutant recompiles the kernels
it touches before four test files run against it).  Skipped otherwise, so that ``.ci/run``
stays within its budget; ``tests/mutants.py`` is the same check as a script, with a table of
results.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("FASTBP_MUTANTS") != "1",
                                reason="the mutation check recompiles per mutant: set FASTBP_MUTANTS=1")


def test_every_mutation_is_caught():
    script = pathlib.Path(__file__).with_name("mutants.py")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mutations caught" in r.stdout and "missed" not in r.stdout
