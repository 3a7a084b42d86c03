"""aiohttp requests made in the test, as if from a given peer address (no socket needed)."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from aiohttp.web import Request


def request_from(peer: str, method: str, path: str) -> Request:
    """A request to `path` whose transport says it came from `peer`."""

    class Transport:
        def get_extra_info(self, name: str, default: object = None) -> object:
            return (peer, 5555) if name == "peername" else default

    return make_mocked_request(method, path, transport=Transport())
