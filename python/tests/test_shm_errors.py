"""Every error of the library becomes its class of throttle.errors, with the library's message
(thr_strerror) and its errno; bad Python arguments are refused before the library, named."""
from __future__ import annotations

import errno

import pytest

import throttle
from throttle import _lib

LIMS = ("[g]\nrate = 10/s\nburst = 3\ncapacity = 64\n"
        "[s]\nkind = semaphore\nmax = 2\ncapacity = 64\n"
        "[b]\nkind = budget\ninitial = 10\ncapacity = 64\n")


@pytest.fixture
def arena(daemon_factory):
    return daemon_factory(LIMS).arena()


def expect(cls, err, call, *args, **kw):
    with pytest.raises(cls) as ei:
        call(*args, **kw)
    e = ei.value
    assert isinstance(e, throttle.ThrottleError)
    assert e.errno == err, (e.errno, err)
    assert e.message == _lib.strerror(-err) == str(e), "not the library's message"
    return e


def test_cost_above_burst_is_erange(arena):
    e = expect(throttle.CostTooHigh, errno.ERANGE, arena.limiter("g").try_acquire, "k", 4)
    assert "burst" in e.message
    assert arena.limiter("g").try_acquire("k", 3).admitted, "the refused call took nothing"
    expect(throttle.CostTooHigh, errno.ERANGE, arena.limiter("s").lease, "k", 3)


def test_key_too_long_is_enametoolong(arena):
    g = arena.limiter("g")
    assert g.try_acquire("x" * 104).admitted, "104 bytes is the largest key"
    expect(throttle.KeyTooLong, errno.ENAMETOOLONG, g.try_acquire, "x" * 105)
    expect(throttle.KeyTooLong, errno.ENAMETOOLONG, g.try_acquire, "é" * 53)  # 106 bytes
    assert g.try_acquire("é" * 52).admitted and g.try_acquire(b"\xff\x00k").admitted


def test_empty_key_is_einval(arena):
    expect(throttle.InvalidArgument, errno.EINVAL, arena.limiter("g").try_acquire, "")
    expect(throttle.InvalidArgument, errno.EINVAL, arena.limiter("b").spend, b"", 1)


def test_unknown_limiter_is_enoent(arena):
    expect(throttle.NotFound, errno.ENOENT, arena.limiter, "nope")
    with pytest.raises(throttle.NotFound):
        throttle.Arena("/dev/shm/no-such-throttle-arena")


def test_wrong_kind_is_eopnotsupp(arena):
    expect(throttle.NotSupported, errno.EOPNOTSUPP, arena.limiter("g").lease, "k")
    expect(throttle.NotSupported, errno.EOPNOTSUPP, arena.limiter("g").spend, "k", 1)
    expect(throttle.NotSupported, errno.EOPNOTSUPP, arena.limiter("s").budget_stat, "k")
    expect(throttle.NotSupported, errno.EOPNOTSUPP, arena.limiter("b").sem_stat, "k")


def test_python_side_arguments_are_named(arena):
    g = arena.limiter("g")
    for bad, word in ((-1, "cost"), (1.5, "cost"), (True, "cost"), (1 << 64, "cost")):
        with pytest.raises(throttle.InvalidArgument, match=word):
            g.try_acquire("k", bad)
    with pytest.raises(throttle.InvalidArgument, match="key must be str or bytes"):
        g.try_acquire(5)
    with pytest.raises(throttle.InvalidArgument, match="timeout"):
        g.acquire("k", 1, timeout=-1)
    with pytest.raises(throttle.InvalidArgument, match="amount"):
        arena.limiter("s").lease("k", amount=1 << 32)
    assert g.try_acquire("k", 0).remaining == 3, "nothing reached the limiter"


def test_closed_arena_refuses_calls(daemon_factory):
    a = daemon_factory(LIMS).arena()
    g = a.limiter("g")
    a.close()
    a.close()
    with pytest.raises(throttle.InvalidArgument, match="closed"):
        g.try_acquire("k")
    with pytest.raises(throttle.InvalidArgument, match="closed"):
        a.limiter("g")


def test_missing_library_is_a_clear_import_error():
    import os
    import subprocess
    import sys
    code = ("import throttle\n"  # works without the library (the HTTP client needs none)
            "try:\n    throttle.Arena\nexcept ImportError as e:\n    print(e)\n")
    env = dict(os.environ, THROTTLE_LIBRARY="/nonexistent/libthrottle-client.so.0",
               PYTHONPATH=os.path.dirname(os.path.dirname(throttle.__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "THROTTLE_LIBRARY" in out.stdout and "/nonexistent/libthrottle" in out.stdout, out.stdout
