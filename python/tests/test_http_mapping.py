"""throttle.http's mapping of answers to results and exceptions, against a scripted local HTTP
server (no daemon): what the daemon should never send must still give a clear error."""
from __future__ import annotations

import http.server
import json
import threading

import pytest

import throttle.errors as te
from throttle.http import Client


class _Scripted(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answers: list = []
    seen: list = []

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        status, raw = self.answers.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Scripted.answers, _Scripted.seen = [], []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _json(obj):
    return json.dumps(obj).encode()


def test_unparseable_answers_are_server_errors_with_the_status(server):
    _, url = server
    _Scripted.answers = [(502, b"<html>bad gateway</html>"), (200, b"not json"),
                         (200, _json({"admitted": True})), (500, _json({"no": "error"}))]
    lim_path = []
    with Client(url, token="tok") as c:
        from throttle.http import Limiter
        lim = Limiter(c, "x y")
        for status in (502, 200, 0, 500):
            with pytest.raises(te.ServerError) as ei:
                lim.try_acquire("k")
            assert ei.value.errno == status
            lim_path.append(_Scripted.seen[-1][1])
    assert lim_path[0] == "/v1/limiters/x%20y/try"  # names are quoted into the path
    assert _Scripted.seen[0][2] == "Bearer tok"
    assert json.loads(_Scripted.seen[0][3]) == {"key": "k", "cost": 1}


def test_error_bodies_map_by_name_and_keep_the_message(server):
    _, url = server
    _Scripted.answers = [
        (422, _json({"error": "ERANGE", "errno": 34, "message": "cost 9 above burst 3"})),
        (401, _json({"error": "EACCES", "errno": 13, "message": "bad token"})),
        (401, b""),
        (429, _json({"error": "EAGAIN", "errno": 11, "message": "no budget", "balance": 2,
                     "shortfall": 5, "waiters": 0, "waited_ns": 0})),
        (500, _json({"error": "EWHATEVER", "message": "odd"})),
    ]
    from throttle.http import Limiter
    with Client(url) as c:
        lim = Limiter(c, "l")
        with pytest.raises(te.CostTooHigh, match="cost 9 above burst 3"):
            lim.try_acquire("k", 9)
        with pytest.raises(te.Unauthorized, match="bad token"):
            lim.try_acquire("k")
        with pytest.raises(te.Unauthorized):
            lim.try_acquire("k")
        with pytest.raises(te.WouldBlock) as ei:
            lim.spend("k", 7)
        assert (ei.value.result.balance, ei.value.result.shortfall) == (2, 5)
        with pytest.raises(te.ServerError, match="odd"):
            lim.try_acquire("k")


def test_bad_arguments_are_refused_before_sending(server):
    _, url = server
    from throttle.http import Limiter
    with Client(url) as c:
        lim = Limiter(c, "l")
        for bad in (lambda: lim.try_acquire(b"\xff"), lambda: lim.try_acquire(3),
                    lambda: lim.try_acquire("k", -1), lambda: lim.try_acquire("k", True),
                    lambda: lim.acquire("k", 1, timeout=float("nan")),
                    lambda: lim.lease("k", 1, ttl=0), lambda: c.compose_try([("l", "k")])):
            with pytest.raises(te.InvalidArgument):
                bad()
    assert _Scripted.seen == []
    with pytest.raises(te.InvalidArgument, match="url"):
        Client("ftp://x")


def test_timeouts_go_as_whole_ms_rounded_up_and_none_as_the_servers_cap(server):
    _, url = server
    lease = _json({"lease": "ab", "amount": 1, "expires_in_ms": 500, "waited_ns": 0})
    _Scripted.answers = [(201, lease), (201, lease),
                         (200, _json({"balance": 1, "shortfall": 0, "waiters": 0,
                                      "waited_ns": 0}))]
    from throttle.http import Limiter
    with Client(url) as c:
        lim = Limiter(c, "s")
        l1 = lim.lease("k", 1, ttl=0.5, timeout=None)
        lim.lease("k", 1, ttl=0.0001, timeout=0.0015)
        lim.spend("k", 1)
    sent = [json.loads(s[3]) for s in _Scripted.seen]
    assert sent[0]["timeout_ms"] >= 60_000 and sent[0]["ttl_ms"] == 500
    assert sent[1]["timeout_ms"] == 2 and sent[1]["ttl_ms"] == 1  # never 0: a try
    assert sent[2]["timeout_ms"] == 0  # spend's default is a try
    assert l1.id == "ab" and l1.amount == 1
