"""An interrupted ``fit`` leaves θ and the optimizer state of a completed step, and trains on.

Two ways: an exception raised by a ``callback`` (in-process), and a real SIGINT sent to a
training subprocess mid-epoch.  In both, the interrupted model is compared bitwise with a model
that ran exactly the completed steps without interruption, and then trained further.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastbp

SIZES = [6, 9, 3]


def _problem(n, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, SIZES[0])).astype(dtype), rng.integers(0, SIZES[-1], n)


def _model(backend="cpu", dtype=np.float32):
    return fastbp.MLP(SIZES, ["tanh", "softmax"], "cross_entropy", dtype=dtype, seed=0, backend=backend)


class Stop(Exception):
    pass


def _state(net):
    return net.params.copy(), net._opt_state.buffer.copy(), net._opt_state.t


@pytest.mark.parametrize(  # on the (slow) simulator, Adam alone: its state has both moments
    "backend,optimizer", [("cpu", "adam"), ("cpu", "momentum"), ("cuda", "adam")])
def test_callback_exception_leaves_the_state_of_its_epoch(backend, optimizer):
    x, y = _problem(8)  # 2 steps an epoch, the last one partial (the simulator is slow)
    kw = dict(batch_size=5, optimizer=optimizer, lr=0.05, seed=0, verbose=False)

    def raise_at_epoch_1(epoch, logs, net):
        if epoch == 1:
            raise Stop

    net = _model(backend)
    with pytest.raises(Stop):
        net.fit(x, y, epochs=5, callback=raise_at_epoch_1, **kw)
    ref = _model(backend)
    ref.fit(x, y, epochs=2, **kw)
    p, s, t = _state(net)
    assert t == ref._opt_state.t == 2 * 2
    np.testing.assert_array_equal(p, ref.params)
    np.testing.assert_array_equal(s, ref._opt_state.buffer)
    # it trains on from there exactly as the uninterrupted model does
    net.fit(x, y, epochs=1, **kw)
    ref.fit(x, y, epochs=1, **kw)
    np.testing.assert_array_equal(net.params, ref.params)
    assert net._opt_state.t == ref._opt_state.t == 3 * 2


def test_keyboard_interrupt_from_a_callback_leaves_a_consistent_model():
    x, y = _problem(24)

    def interrupt(epoch, logs, net):
        raise KeyboardInterrupt

    net = _model()
    with pytest.raises(KeyboardInterrupt):
        net.fit(x, y, epochs=3, batch_size=8, seed=0, verbose=False, callback=interrupt)
    ref = _model()
    ref.fit(x, y, epochs=1, batch_size=8, seed=0, verbose=False)
    np.testing.assert_array_equal(net.params, ref.params)
    assert net._opt_state.t == 3


CHILD = textwrap.dedent(
    """
    import signal
    import sys
    import numpy as np
    import fastbp

    # A parent that ignores SIGINT (a pytest-xdist worker) passes SIG_IGN on to its children, and
    # Python then installs no KeyboardInterrupt handler: restore the one a program started from a
    # shell has.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fastbp.config.INTERRUPT_WORK = 1  # one minibatch per call of the compiled loop
    rng = np.random.default_rng(0)
    n, B = 20000, 10
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = rng.integers(0, 3, n)

    def model():
        return fastbp.MLP([6, 9, 3], ["tanh", "softmax"], "cross_entropy", seed=0)

    def ready(epoch, logs, net):
        if epoch == 0:
            print("ready", flush=True)

    net = model()
    kw = dict(batch_size=B, shuffle=False, verbose=False, lr=0.01)
    try:
        net.fit(x, y, epochs=100000, callback=ready, **kw)
        print("finished without interruption", flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
    t = net._opt_state.t
    done, rem = divmod(t, n // B)
    ref = model()  # replay exactly the completed steps, through the public API
    if done:
        ref.fit(x, y, epochs=done, **kw)
    if rem:
        ref.fit(x[: rem * B], y[: rem * B], epochs=1, **kw)
    same = (ref._opt_state.t == t and np.array_equal(ref.params, net.params)
            and np.array_equal(ref._opt_state.buffer, net._opt_state.buffer))
    h = net.fit(x, y, epochs=1, **kw)
    print("result", t, rem, int(same), int(np.isfinite(h["loss"][0]) and np.isfinite(net.params).all()), flush=True)
    """
)


def test_sigint_mid_epoch_leaves_a_completed_step_and_trains_on(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    _, t, rem, same, trains = out.split()
    assert int(t) > 0
    assert same == "1", f"interrupted after {t} steps ({rem} into an epoch): state differs from the replay"
    assert trains == "1"
