"""The HTTP edge (server.py and api/middleware/body_limit.py) against a real uvicorn on
loopback, spoken to with raw sockets: oversized heads, slow clients, too many
connections and oversized bodies, chunked ones included; pipelined and kept-alive
requests against a small paced ASGI app, so that a response can be made to last."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessiongate.app import create_app
from sessiongate.server import MAX_HEADER_BYTES, EdgeHttpToolsProtocol, server_options

from .conftest import SECRET, make_settings
from .fakes.servers import ServerThread

# Socket timeouts bound a broken test; no assertion depends on how long anything took.
BOUND = 15.0


@pytest.fixture
def edge(sqlite_url: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """A gateway under uvicorn with the edge options; yields (port, settings values)."""
    values: dict[str, Any] = {"request_read_timeout": 0.5, "max_connections": 3}
    settings = make_settings(sqlite_url, **values)
    with ServerThread(create_app(settings), **server_options(settings)) as server:
        yield server.port, values


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
    sock.settimeout(BOUND)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, closed): reads until the server closes or the body ends."""
    data = b""
    closed = False
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            closed = True
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length and not closed:
        chunk = sock.recv(65536)
        if not chunk:
            closed = True
            break
        body += chunk
    return status, headers, body, closed


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` pipelined responses (status, headers, body) off ``sock``, each cut at its
    Content-Length; fewer if the server closes first."""
    data, responses = b"", []
    while len(responses) < count:
        head, found, rest = data.partition(b"\r\n\r\n")
        if found:
            lines = head.decode("latin-1").split("\r\n")
            fields = (line.partition(":") for line in lines[1:])
            headers = {k.strip().lower(): v.strip() for k, _, v in fields}
            length = int(headers.get("content-length", "0"))
            if len(rest) >= length:
                responses.append((int(lines[0].split()[1]), headers, rest[:length]))
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return responses


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (reads to EOF, bounded by BOUND)."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def error_code(body: bytes) -> str:
    return json.loads(body)["error"]["code"]


def test_headers_over_16_kib_get_431_and_the_connection_closes(
    edge: tuple[int, dict[str, Any]],
) -> None:
    port, _ = edge
    with connect(port) as sock:
        # An unfinished head larger than the cap: the server must not wait for the rest.
        sock.sendall(
            b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 1024)
        )
        status, headers, body, _ = read_response(sock)
        assert status == 431
        assert headers["connection"] == "close"
        assert error_code(body) == "headers_too_large"
        assert closed_by_server(sock)


def test_a_whole_head_over_16_kib_sent_at_once_gets_431(edge: tuple[int, dict[str, Any]]) -> None:
    port, _ = edge
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 90) for i in range(200))  # ~20 KiB
    with connect(port) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        status, headers_back, body, _ = read_response(sock)
        assert status == 431
        assert headers_back["connection"] == "close"
        assert error_code(body) == "headers_too_large"
        assert closed_by_server(sock)


def test_headers_under_the_cap_are_served(edge: tuple[int, dict[str, Any]]) -> None:
    port, _ = edge
    with connect(port) as sock:
        sock.sendall(
            b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: "
            + b"a" * (MAX_HEADER_BYTES - 1024)
            + b"\r\n\r\n"
        )
        status, _, _, _ = read_response(sock)
    assert status == 200


def test_a_head_that_never_completes_gets_408_and_is_closed(
    edge: tuple[int, dict[str, Any]],
) -> None:
    port, _ = edge
    with connect(port) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        status, headers, body, _ = read_response(sock)
        assert status == 408
        assert error_code(body) == "request_timeout"
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_client_trickling_header_lines_is_cut_at_the_read_deadline(
    edge: tuple[int, dict[str, Any]],
) -> None:
    """Each byte arriving in time does not extend the deadline: the whole head must."""
    port, _ = edge
    with connect(port) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        answered = False
        for _ in range(int(BOUND / 0.05)):
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                answered = True
                break
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                answered = True
                break
        assert answered, "the server kept reading a head that never ends"
        status, _, body, _ = read_response(sock)
        assert status == 408 and error_code(body) == "request_timeout"


def test_an_unfinished_body_is_closed_at_the_read_deadline(
    edge: tuple[int, dict[str, Any]],
) -> None:
    port, _ = edge
    with connect(port) as sock:
        sock.sendall(
            b"POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        assert closed_by_server(sock)


def test_an_idle_connection_is_closed_at_the_read_deadline(
    edge: tuple[int, dict[str, Any]],
) -> None:
    port, _ = edge
    with connect(port) as sock:
        status, _, body, _ = read_response(sock)
        assert status == 408 and error_code(body) == "request_timeout"
        assert closed_by_server(sock)


def test_connections_past_the_cap_get_503_at_once(edge: tuple[int, dict[str, Any]]) -> None:
    port, values = edge
    held = []
    try:
        for _ in range(values["max_connections"]):
            sock = connect(port)
            held.append(sock)
            # A served request proves the server has taken the connection in.
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
        with connect(port) as extra:
            status, headers, body, _ = read_response(extra)
            assert status == 503
            assert headers["retry-after"] == "1"
            assert error_code(body) == "too_many_connections"
            assert closed_by_server(extra)
    finally:
        for sock in held:
            sock.close()


# ------------------------------------------------- pipelined and kept-alive requests

SLOW_ANSWER = 1.3  # seconds /slow takes: 2.6 read deadlines of the paced server
PACED_READ_TIMEOUT = 0.5


async def paced_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/slow`` answers "a", then "b" ``SLOW_ANSWER`` seconds later (Content-Length 2),
    listening for a disconnect meanwhile as Starlette's streaming responses do (which
    makes uvicorn read on); any other path reads the whole body and answers
    ``echo:<body>``."""
    if scope["path"] == "/slow":
        listener = asyncio.ensure_future(receive())
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await asyncio.sleep(SLOW_ANSWER)
        await send({"type": "http.response.body", "body": b"b"})
        listener.cancel()
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b"echo:" + body
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
def paced() -> Iterator[int]:
    """The edge protocol in front of ``paced_app``; yields the port."""
    protocol = functools.partial(
        EdgeHttpToolsProtocol, read_timeout=PACED_READ_TIMEOUT, max_connections=10
    )
    with ServerThread(paced_app, lifespan="off", http=protocol) as server:
        yield server.port


GET_ECHO = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
GET_SLOW = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
# A head of ~20 KiB without its closing blank line.
BIG_HEAD = b"GET /echo HTTP/1.1\r\nHost: x\r\n" + b"".join(
    b"X-H%d: %s\r\n" % (i, b"v" * 90) for i in range(200)
)


def test_a_pipelined_head_over_the_cap_in_the_same_read_gets_431_after_the_answer_before_it(
    paced: int,
) -> None:
    with connect(paced) as sock:
        sock.sendall(GET_ECHO + BIG_HEAD + b"\r\n")
        (status, _, body), refusal = read_responses(sock, 2)
        assert (status, body) == (200, b"echo:")
        assert refusal[0] == 431, refusal
        assert error_code(refusal[2]) == "headers_too_large"
        assert refusal[1]["connection"] == "close"
        assert closed_by_server(sock)


def test_a_pipelined_head_finished_in_a_later_read_is_measured_whole(paced: int) -> None:
    with connect(paced) as sock:
        sock.sendall(GET_ECHO + BIG_HEAD)
        ((status, _, body),) = read_responses(sock, 1)
        assert (status, body) == (200, b"echo:")
        sock.sendall(b"\r\n")
        ((status, _, body),) = read_responses(sock, 1)
        assert status == 431, body
        assert error_code(body) == "headers_too_large"
        assert closed_by_server(sock)


def test_an_oversized_head_on_a_kept_alive_connection_gets_431(paced: int) -> None:
    with connect(paced) as sock:
        for _ in range(2):
            sock.sendall(GET_ECHO)
            ((status, _, body),) = read_responses(sock, 1)
            assert (status, body) == (200, b"echo:")
        sock.sendall(BIG_HEAD)  # unfinished: refused as it grows, not when it ends
        ((status, _, body),) = read_responses(sock, 1)
        assert status == 431 and error_code(body) == "headers_too_large"
        assert closed_by_server(sock)


def test_a_408_for_a_pipelined_head_waits_for_the_answer_being_streamed(paced: int) -> None:
    """The pipelined head stalls past the read deadline while /slow is still being sent:
    the 408 must follow /slow's answer, not land inside it."""
    with connect(paced) as sock:
        sock.sendall(GET_SLOW)
        readable, _, _ = select.select([sock], [], [], BOUND)
        assert readable  # /slow has begun answering
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        (status, _, body), refusal = read_responses(sock, 2)
        assert (status, body) == (200, b"ab")
        assert refusal[0] == 408 and error_code(refusal[2]) == "request_timeout"
        assert refusal[1]["connection"] == "close"
        assert closed_by_server(sock)


def test_a_pipelined_request_queued_behind_a_slow_answer_is_not_timed_out(paced: int) -> None:
    """The server stops reading while a pipelined request waits its turn, so its body,
    sent at once, is read only after /slow's answer: past the read deadline, and the
    client's fault it is not."""
    with connect(paced) as sock:
        sock.sendall(GET_SLOW + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.1)
        sock.sendall(b"hello")
        answers = [(status, body) for status, _, body in read_responses(sock, 2)]
        assert answers == [(200, b"ab"), (200, b"echo:hello")]


def test_a_pipelined_body_that_stalls_does_not_cut_the_answer_before_it(paced: int) -> None:
    """The stalled request's own time starts when its turn comes; the answer being
    streamed before it is never cut for it."""
    with connect(paced) as sock:
        sock.sendall(GET_SLOW + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
        answers = [(status, body) for status, _, body in read_responses(sock, 2)]
        assert answers == [(200, b"ab")]  # then closed: the body never came
        assert closed_by_server(sock)


def test_a_pipelined_request_gets_its_whole_read_time_when_its_turn_comes(paced: int) -> None:
    with connect(paced) as sock:
        sock.sendall(GET_SLOW + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
        ((status, _, body),) = read_responses(sock, 1)
        assert (status, body) == (200, b"ab")
        time.sleep(PACED_READ_TIMEOUT / 2)  # within its own time, long after the first 0.5 s
        sock.sendall(b"llo")
        ((status, _, body),) = read_responses(sock, 1)
        assert (status, body) == (200, b"echo:hello")


def test_a_pipelined_oversized_websocket_handshake_gets_431_after_the_answer_before_it(
    paced: int,
) -> None:
    upgrade = BIG_HEAD + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    with connect(paced) as sock:
        sock.sendall(GET_ECHO + upgrade)
        (status, _, body), refusal = read_responses(sock, 2)
        assert (status, body) == (200, b"echo:")
        assert refusal[0] == 431 and error_code(refusal[2]) == "headers_too_large"
        assert closed_by_server(sock)


def test_a_request_that_is_not_http_gets_a_400_envelope_after_the_answer_before_it(
    paced: int,
) -> None:
    with connect(paced) as sock:
        sock.sendall(GET_SLOW)
        readable, _, _ = select.select([sock], [], [], BOUND)
        assert readable  # /slow has begun answering
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        (status, _, body), refusal = read_responses(sock, 2)
        assert (status, body) == (200, b"ab")
        assert refusal[0] == 400 and error_code(refusal[2]) == "bad_request"
        assert refusal[1]["connection"] == "close"
        assert closed_by_server(sock)


def test_a_head_padded_with_whitespace_is_counted_by_its_bytes(paced: int) -> None:
    """llhttp strips the spaces around a header value: the raw bytes decide."""
    with connect(paced) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad:" + b" " * 100_000 + b"v\r\n\r\n")
        ((status, _, body),) = read_responses(sock, 1)
        assert status == 431 and error_code(body) == "headers_too_large"


def _chat_head(extra: bytes) -> bytes:
    return (
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"\r\n"
    )


def test_a_chunked_body_past_the_cap_is_413_without_reading_the_rest(
    edge: tuple[int, dict[str, Any]],
) -> None:
    port, _ = edge
    chunk = b"a" * 16384
    with connect(port) as sock:
        prefix = b'{"message": "'
        sock.sendall(_chat_head(b"Transfer-Encoding: chunked\r\n") + b"d\r\n" + prefix + b"\r\n")
        sent = 0
        answered = False
        # Far more than the cap (~64 KiB) is offered; the answer must come long before.
        for _ in range(2000):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answered = True
                break
            try:
                sock.sendall(b"4000\r\n" + chunk + b"\r\n")
            except OSError:
                answered = True
                break
            sent += len(chunk)
        assert answered, f"the server read {sent} bytes of a chunked body"
        status, headers, body, _ = read_response(sock)
        assert status == 413
        assert error_code(body) == "body_too_large"
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_declared_length_past_the_cap_is_413_before_any_body(
    edge: tuple[int, dict[str, Any]],
) -> None:
    port, _ = edge
    with connect(port) as sock:
        sock.sendall(_chat_head(b"Content-Length: 200000000\r\n"))
        status, headers, body, _ = read_response(sock)
        assert status == 413
        assert error_code(body) == "body_too_large"
        assert headers["connection"] == "close"
        assert closed_by_server(sock)


def test_a_small_chunked_body_is_read_whole(edge: tuple[int, dict[str, Any]]) -> None:
    port, _ = edge
    payload = b'{"title": "chunked"}'
    with connect(port) as sock:
        sock.sendall(
            b"POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + f"{len(payload):x}".encode()
            + b"\r\n"
            + payload
            + b"\r\n0\r\n\r\n"
        )
        status, _, body, _ = read_response(sock)
    assert status == 201, body
    assert json.loads(body)["token"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sessiongate_serve_applies_the_edge_limits(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SESSIONGATE_PROVIDER": "openai",
        "SESSIONGATE_OPENAI_API_KEY": "sk-test",
        "SESSIONGATE_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "SESSIONGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/serve.db",
        "SESSIONGATE_SECRET_KEY": SECRET,
        "SESSIONGATE_REQUEST_READ_TIMEOUT": "0.5",
    }
    command = [sys.executable, "-m", "sessiongate.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                sock = connect(port)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 1))
            assert read_response(sock)[0] == 431
        with connect(port) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")
            assert read_response(sock)[0] == 408
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()
