"""A loopback HTTP server that answers with broken HTTP: the transport faults a real network
path produces (bad status lines, oversized headers, bad gzip, bodies cut short, HTML pages).

Each connection reads one request and gets the next scripted answer (raw bytes); once the
script is used up, every answer is a valid JSON listing page.
"""

from __future__ import annotations

import json
import socket
import threading

GOOD_PAGE = json.dumps({"data": [], "meta": {"total": 0, "last_page": 1, "current_page": 1}}).encode()


def answer(status_line: bytes, body: bytes, *headers: bytes, length: int | None = None) -> bytes:
    head = [status_line, *headers, b"Content-Length: %d" % (len(body) if length is None else length)]
    return b"\r\n".join([*head, b"", b""]) + body


FAULTS = {
    "bad status line": b"HTTP/1.1 TWO-HUNDRED OK\r\n\r\n",
    "oversized header": answer(b"HTTP/1.1 200 OK", GOOD_PAGE, b"X-Padding: " + b"a" * 200_000),
    "bad gzip": answer(b"HTTP/1.1 200 OK", b"\x1f\x8b this is not gzip", b"Content-Encoding: gzip"),
    "body cut short": answer(
        b"HTTP/1.1 200 OK", GOOD_PAGE[:10], b"Content-Type: application/json", length=5000
    ),
    "html error page": answer(
        b"HTTP/1.1 200 OK", b"<html><body>Bad gateway</body></html>", b"Content-Type: text/html"
    ),
    "closed without answer": b"",
}
GOOD = answer(b"HTTP/1.1 200 OK", GOOD_PAGE, b"Content-Type: application/json")


class BrokenHttpServer:
    def __init__(self, script: list[bytes]) -> None:
        self.script = list(script)
        self.requests = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                self.requests += 1
                reply = self.script.pop(0) if self.script else GOOD
                try:
                    connection.sendall(reply)
                    connection.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def close(self) -> None:
        self._socket.close()
