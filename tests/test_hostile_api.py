"""A hostile API on 127.0.0.1 (issue 22, case 6): every answer past a limit that no real Plannr
answer comes near ends as the project's own ResponseLimitError naming the endpoint, quickly, with
no retries spending the budget, never a hang, a RecursionError or a full memory."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import uuid

import pytest

from plannr_pipeline.api import PlannrClient, PlannrSettings, limits
from plannr_pipeline.api.budget import RequestBudget
from plannr_pipeline.api.errors import ResponseLimitError
from tests.broken_http import BrokenHttpServer, answer

ENDPOINT = "/api/v1/account"
RECORD = {"uuid": "2b8f1c52-0000-4000-8000-000000000001", "type": "client"}


def _client(url: str, tmp_path, **options: object) -> PlannrClient:
    settings = PlannrSettings(base_url=url, token="secret-token", rate_limit_per_minute=100_000)
    budget = RequestBudget(uuid.uuid4().hex, 100_000, directory=tmp_path, follow_server_limit=False)
    return PlannrClient(settings, budget=budget, backoff_initial=0.01, backoff_max=0.05, **options)  # type: ignore[arg-type]


def _list(client: PlannrClient) -> list:
    async def main() -> list:
        async with client:
            return await client.list_all(ENDPOINT)

    return asyncio.run(main())


def _json_answer(body: bytes, *headers: bytes) -> bytes:
    return answer(b"HTTP/1.1 200 OK", body, b"Content-Type: application/json", *headers)


def _refused(server_script: list[bytes], tmp_path, says: str) -> BrokenHttpServer:
    server = BrokenHttpServer(server_script * 10)
    try:
        client = _client(server.url, tmp_path)
        started = time.monotonic()
        with pytest.raises(ResponseLimitError) as caught:
            _list(client)
        assert time.monotonic() - started < 30
    finally:
        server.close()
    message = str(caught.value)
    assert message.startswith(f"GET {ENDPOINT}:") and says in message, message
    assert "secret-token" not in message
    assert server.requests == 1, "a hostile answer is not asked for again"
    return server


def test_a_listing_claiming_a_hundred_million_pages_is_refused_after_one_request(tmp_path):
    page = {"data": [RECORD], "meta": {"total": 50_000_000_000, "last_page": 100_000_000, "current_page": 1}}
    _refused([_json_answer(json.dumps(page).encode())], tmp_path, "claims 100,000,000 pages")


def test_an_answer_announcing_a_huge_body_is_refused_before_it_is_read(tmp_path):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40000000000\r\n\r\n"
    _refused([head + b'{"data": ['], tmp_path, "announces 40,000,000,000 bytes")


def test_a_body_without_length_that_never_ends_is_cut_at_the_limit(tmp_path):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    endless = head + b'{"data": [' + b"1," * (limits.MAX_BODY_BYTES // 2 + 10)
    _refused([endless], tmp_path, "is over 33,554,432 bytes")


def test_a_gzip_bomb_is_refused_at_the_decompressed_limit(tmp_path):
    bomb = gzip.compress(b'{"data": [' + b" " * (limits.MAX_DECODED_BYTES + 1024) + b"]}", compresslevel=9)
    assert len(bomb) < 1_000_000  # small on the wire: only decompressing shows what it is
    _refused([_json_answer(bomb, b"Content-Encoding: gzip")], tmp_path, "decompresses to over")


@pytest.mark.parametrize("depth", [5_000, 100])
def test_json_nested_deeply_is_refused_not_a_recursion_error(tmp_path, depth):
    body = b'{"data": ' + b"[" * depth + b"]" * depth + b', "meta": {"last_page": 1}}'
    _refused([_json_answer(body)], tmp_path, f"nested deeper than {limits.MAX_DEPTH} levels")


def test_numbers_too_big_for_64_bits_are_read_exactly_and_odd_json_still_parses(tmp_path):
    """The fast reader (orjson) would turn a 30-digit number into a float, losing its digits, and
    refuses NaN, which the standard library reads: both reach the record as they were sent."""
    huge = {**RECORD, "wild": 123456789012345678901234567890}
    meta = '"meta": {"total": 1, "last_page": 1, "current_page": 1}'
    for record, extra in ((huge, ""), (RECORD, '"odd": NaN, ')):
        server = BrokenHttpServer(
            [_json_answer(f'{{{extra}"data": [{json.dumps(record)}], {meta}}}'.encode())]
        )
        try:
            (listed,) = _list(_client(server.url, tmp_path, max_attempts=1))
            assert listed == record and type(listed.get("wild", 0)) is int
        finally:
            server.close()


def test_real_answers_pass_every_limit(tmp_path):
    page = {"data": [RECORD], "meta": {"total": 1, "last_page": 1, "current_page": 1}}
    body = gzip.compress(json.dumps(page).encode())
    server = BrokenHttpServer([_json_answer(body, b"Content-Encoding: gzip")])
    try:
        assert _list(_client(server.url, tmp_path)) == [RECORD]
    finally:
        server.close()


class TricklingServer:
    """Answers with headers at once, then one byte of body every `every` seconds: each read is
    quick, so only a deadline over the whole request stops it."""

    def __init__(self, every: float = 0.2) -> None:
        self.requests = 0
        self._every = every
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        self.requests += 1
        with connection:
            connection.recv(65536)
            try:
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                )
                while not self._stop.wait(self._every):
                    connection.sendall(b" ")
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._socket.close()


def test_a_server_that_trickles_is_stopped_by_the_request_deadline(tmp_path):
    server = TricklingServer()
    try:
        client = _client(server.url, tmp_path, timeout_seconds=5, deadline_seconds=2)
        started = time.monotonic()
        with pytest.raises(ResponseLimitError) as caught:
            _list(client)
        took = time.monotonic() - started
    finally:
        server.close()
    assert str(caught.value).startswith(f"GET {ENDPOINT}: the answer took over 2 s")
    assert took < 10 and server.requests == 1
