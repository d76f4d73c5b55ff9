"""A minimal, fast HTTP/1.1 keep-alive load generator on raw asyncio streams (uvloop).

Each of `concurrency` connections sends one request at a time: it writes pre-built request
bytes, reads the status line and headers in one `readuntil`, then the `Content-Length` body
(chunked bodies are read too, for robustness). Requests are taken in order from one shared
list, so the N requests are spread over the connections as fast as the server answers.

Per request it records the send time (seconds since the first send of the run, on the
generator's monotonic clock), the latency and the status code (0 for a transport error), and
whether a 409 carried the `sold-out` problem code.

`run_in_process` runs the generator in a separate process pinned to its own CPU(s), so the
server under test does not share a core with it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import traceback
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

import uvloop

SOLD_OUT_MARK = b'"sold-out"'


@dataclass(slots=True)
class LoadResult:
    """Per-request measurements, indexed like the requests that were sent."""

    sent: array[float]  # seconds since the run started (the first send)
    latency: array[float]  # seconds
    status: array[int]  # HTTP status, 0 for a transport error
    sold_out: bytearray  # 1 where a 409 answer carried code "sold-out"
    wall_s: float  # from the first send to the last answer
    cpu_s: float  # CPU time the generator used during the run


def build_request(
    host: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    """Serialise one HTTP/1.1 request (keep-alive is the HTTP/1.1 default)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ProtocolError(Exception):
    """The server answered something this client does not understand."""


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of one header in a raw (lower-cased) response head, or None."""
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Read one response: (status, body, the server wants to close the connection)."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if not head.startswith(b"http/1.") or len(head) < 12:
        raise ProtocolError(f"bad status line {head[:40]!r}")
    status = int(head[9:12])
    length = _header(head, b"content-length")
    if length is not None:
        body = await reader.readexactly(int(length)) if length != b"0" else b""
    elif _header(head, b"transfer-encoding") == b"chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected: the final CRLF
                break
            parts.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(parts)
    elif status in (204, 304) or 100 <= status < 200:
        body = b""
    else:
        raise ProtocolError("response without Content-Length or chunked encoding")
    closing = _header(head, b"connection") == b"close"
    return status, body, closing


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, limit=1 << 20)


async def _connection(
    host: str,
    port: int,
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    requests: Sequence[bytes],
    order: Iterator[int],
    origin: float,
    result: LoadResult,
) -> None:
    reader, writer = stream
    perf = time.perf_counter
    try:
        for index in order:
            sent = perf()
            try:
                writer.write(requests[index])
                status, body, closing = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
                status, body, closing = 0, b"", True
            done = perf()
            result.sent[index] = sent - origin
            result.latency[index] = done - sent
            result.status[index] = status
            if status == 409 and SOLD_OUT_MARK in body:
                result.sold_out[index] = 1
            if closing:
                writer.close()
                reader, writer = await _connect(host, port)
    finally:
        writer.close()


async def run_load(host: str, port: int, requests: Sequence[bytes], concurrency: int) -> LoadResult:
    """Send every request over `concurrency` keep-alive connections; return the timings."""
    n = len(requests)
    result = LoadResult(
        sent=array("d", bytes(8 * n)),
        latency=array("d", bytes(8 * n)),
        status=array("H", bytes(2 * n)),
        sold_out=bytearray(n),
        wall_s=0.0,
        cpu_s=0.0,
    )
    # Every connection is open before the clock starts: connecting is not part of the run.
    streams = await asyncio.gather(*(_connect(host, port) for _ in range(min(concurrency, n))))
    order = iter(range(n))
    cpu = time.process_time()
    origin = time.perf_counter()
    await asyncio.gather(
        *(_connection(host, port, s, requests, order, origin, result) for s in streams)
    )
    result.wall_s = time.perf_counter() - origin
    result.cpu_s = time.process_time() - cpu
    return result


def _child(
    pipe: Connection,
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    cpus: set[int] | None,
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        result: LoadResult | str = uvloop.run(run_load(host, port, requests, concurrency))
    except BaseException:
        result = traceback.format_exc()  # a string always pickles; some exceptions do not
    pipe.send(result)
    pipe.close()


def run_in_process(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    *,
    cpus: set[int] | None = None,
    timeout: float = 600.0,
) -> LoadResult:
    """Run the load from a fresh process (pinned to `cpus` when given) and return its result."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child,
        args=(sender, host, port, list(requests), concurrency, cpus),
        name="loadgen",
    )
    process.start()
    sender.close()
    answer: LoadResult | str | None = None
    try:
        if not receiver.poll(timeout):
            raise TimeoutError(f"the load generator did not finish within {timeout:.0f} s")
        answer = receiver.recv()
    except EOFError:
        answer = "the generator process died before answering"
    finally:
        # Once it answered it exits at once; otherwise (timeout, interrupt) it is stopped.
        process.join(timeout=10 if answer is not None else 0)
        if process.is_alive():
            process.terminate()
            process.join()
        receiver.close()
    if isinstance(answer, str):
        raise RuntimeError(f"the load generator failed:\n{answer}")
    assert isinstance(answer, LoadResult)
    return answer
