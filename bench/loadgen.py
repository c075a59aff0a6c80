"""A lean HTTP/1.1 load generator for the benchmarks: keep-alive connections on raw asyncio
streams, requests prepared (and signed) before the clock starts, every connection opened and
warmed before it is timed. httpx spends more time in the client than the servers under test
spend answering, and its pool adds its own tail; this measures the servers.

    latencies = await run_load("127.0.0.1", port, "/slack/events", make_request, total=1000, concurrency=8)

`make_request(i)` returns `(body_bytes, headers_dict)`; every answer must be 200 (else
LoadError names the status and the start of the body).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class LoadError(RuntimeError):
    pass


def _request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    length = None
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
            raise LoadError("chunked responses are not supported by the load generator")
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run_load(host: str, port: int, path: str, make_request: Callable[[int], tuple[bytes, dict[str, str]]],
                   *, total: int, concurrency: int, warmup_per_connection: int = 5) -> list[float]:
    """Send `total` timed requests over `concurrency` connections; returns each latency (seconds)."""
    warm = [_request_bytes(host, port, path, *make_request(-1 - i))
            for i in range(concurrency * warmup_per_connection)]
    timed = [_request_bytes(host, port, path, *make_request(i)) for i in range(total)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for raw in timed:
        queue.put_nowait(raw)
    latencies: list[float] = []
    ready = 0
    go = asyncio.Event()

    async def one(reader, writer, raw: bytes) -> float:
        started = time.perf_counter()
        writer.write(raw)
        status, body = await _read_response(reader)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise LoadError(f"HTTP {status}: {body[:200]!r}")
        return elapsed

    async def worker(index: int) -> None:
        nonlocal ready
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for raw in warm[index * warmup_per_connection:(index + 1) * warmup_per_connection]:
                await one(reader, writer, raw)
            ready += 1
            if ready == concurrency:
                go.set()
            await go.wait()
            while True:
                try:
                    raw = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                latencies.append(await one(reader, writer, raw))
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies
