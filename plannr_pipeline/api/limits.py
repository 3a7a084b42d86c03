"""Limits on what a server may send: an answer past any of them is hostile or broken.

Each is far above what Plannr sends (measured on the sandbox, which copies Plannr's documented
answers: a page of 500 tasks, the biggest answer, is 1.2 MB of JSON nested 6 deep; a firm of
10,000 clients has 30 pages in its biggest listing), so only a server that means harm or has
gone wrong reaches one. Each ends as a
ResponseLimitError naming the endpoint, never a hung run, a RecursionError or a full memory.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from plannr_pipeline.api.errors import ResponseLimitError

# Pages in one listing: 10,000 pages of 500 is five million records.
MAX_PAGES = 10_000
# Bytes on the wire for one answer, and once decompressed (a gzip bomb is small on the wire).
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_DECODED_BYTES = 64 * 1024 * 1024
# Arrays and objects inside one another. Python's parser gives up near 1,000 with a
# RecursionError, and the raw JSON column (orjson) refuses past 255, so the limit sits well below.
MAX_DEPTH = 64
# Seconds for one request from the first byte sent to the last byte read, whatever the
# per-read timeout: a server that trickles a byte at a time would otherwise hold a run forever.
REQUEST_DEADLINE_SECONDS = 300.0
# Content-Encodings we ask for (Accept-Encoding) and so can decode within the limit.
ENCODINGS = "gzip, deflate"


def check_page_count(endpoint: str, last_page: int) -> None:
    if last_page > MAX_PAGES:
        raise ResponseLimitError(endpoint, f"the listing claims {last_page:,} pages (limit {MAX_PAGES:,})")


async def read_body(
    endpoint: str,
    chunks: AsyncIterator[bytes],
    content_encoding: str,
    content_length: int | None,
    max_body: int = MAX_BODY_BYTES,
    max_decoded: int = MAX_DECODED_BYTES,
) -> bytes:
    """The decoded body of an answer, read chunk by chunk from the wire and refused as soon as it
    passes a limit. zlib errors (bad gzip) propagate: the caller treats them as transport faults."""
    if content_length is not None and content_length > max_body:
        raise ResponseLimitError(
            endpoint, f"the answer announces {content_length:,} bytes (limit {max_body:,})"
        )
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    elif encoding in ("", "identity"):
        decoder = None
    else:
        raise ResponseLimitError(
            endpoint, f"the answer is encoded as {encoding[:40]!r}, which was not asked for"
        )
    received, body = 0, bytearray()
    async for chunk in chunks:
        received += len(chunk)
        if received > max_body:
            raise ResponseLimitError(endpoint, f"the answer is over {max_body:,} bytes")
        if decoder is None:
            body += chunk
            continue
        # Never more than one byte past the limit out of zlib, however small the chunk was.
        body += decoder.decompress(chunk, max_decoded - len(body) + 1)
        if len(body) > max_decoded or decoder.unconsumed_tail:
            raise ResponseLimitError(endpoint, f"the answer decompresses to over {max_decoded:,} bytes")
    if decoder is not None:
        body += decoder.flush()
        if len(body) > max_decoded:
            raise ResponseLimitError(endpoint, f"the answer decompresses to over {max_decoded:,} bytes")
    return bytes(body)


# orjson reads a page about twice as fast as the standard library, but a whole number too big for
# 64 bits becomes a float there (its last digits lost): a body with that many digits in a row
# anywhere is read by the standard library instead, as is anything orjson refuses (NaN, say).
_DIGITS_ONLY = bytes(ord("0") if ord("0") <= b <= ord("9") else ord(".") for b in range(256))
_LONG_NUMBER = b"0" * 19


def _loads(body: bytes) -> Any:
    if _LONG_NUMBER in body.translate(_DIGITS_ONLY):
        return json.loads(body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def parse_json(endpoint: str, body: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """JSON within the nesting limit. ValueError for a body that is not JSON at all."""
    try:
        value = _loads(body)
    except RecursionError:
        raise ResponseLimitError(endpoint, f"the JSON is nested deeper than {max_depth} levels") from None
    if _deeper_than(value, max_depth):
        raise ResponseLimitError(endpoint, f"the JSON is nested deeper than {max_depth} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep: level by level, no recursion to
    exhaust (a page of 500 sandbox tasks: ~6 ms, against ~17 ms to parse it)."""
    level, depth = [value], 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for node in level:
            if type(node) is dict:
                node = node.values()
            elif type(node) is not list:
                continue
            below += [child for child in node if type(child) is dict or type(child) is list]
        level, depth = below, depth + 1
    return False
