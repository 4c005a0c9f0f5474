"""Streams: event streams share one poller per job and are capped per key; a chunked upload
is cut at its limit while it streams (a real uvicorn: the client sees how much was read)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gan_platform.records import Records
from service.events import EventHub
from service.problems import Problem
from tests.conftest import FAST_SPEC, LiveStack


class CountingRecords(Records):
    """Real records that count the polls of the event streams."""

    polls = 0

    def get_job(self, job_id: str):  # type: ignore[no-untyped-def]
        CountingRecords.polls += 1
        return super().get_job(job_id)


def test_streams_of_one_job_share_one_poller_and_are_capped_per_key(tmp_path: Path) -> None:
    records = CountingRecords(f"sqlite:///{tmp_path}/ev.db")
    job, _ = records.create_job(FAST_SPEC, "h", owner="alice")
    token = "w"
    records.claim(job["id"], token, 60, 3)
    for step in (10, 20):
        records.record_progress(job["id"], token, attempt=1, step=step, total_steps=60,
                                losses={"critic": 1.0}, metrics={}, lease_seconds=60)

    async def scenario() -> None:
        hub = EventHub(records, per_key=3, poll=0.05)

        async def never() -> bool:
            return False

        streams = [hub.open(job["id"], 0, "alice", never, lambda j: j["status"])
                   for _ in range(3)]
        with pytest.raises(Problem) as capped:
            hub.open(job["id"], 0, "alice", never, lambda j: j["status"])
        assert capped.value.status == 429
        hub.open(job["id"], 0, "bob", never, lambda j: j["status"])  # another key: its own cap
        seen: list[list[str]] = [[] for _ in streams]

        async def read(i: int) -> None:
            async for text in streams[i]:
                seen[i].append(text)
                if sum("event: progress" in t for t in seen[i]) == 2:
                    return

        await asyncio.gather(*(read(i) for i in range(3)))
        assert hub.feeds == 1  # three streams, one poller
        CountingRecords.polls = 0
        await asyncio.sleep(0.5)
        assert CountingRecords.polls <= 0.5 / 0.05 + 2  # one poller's reads, not three
        records.finish(job["id"], token, "failed", "stop")
        ends = await asyncio.gather(*(_rest(s) for s in streams))
        assert all("event: end" in "".join(e) for e in ends)
        for s in streams:
            await s.aclose()  # type: ignore[attr-defined]
        assert hub.streams_of("alice") == 0
        hub.open(job["id"], 0, "alice", never, lambda j: j["status"])  # slots came back

    asyncio.run(scenario())
    records.dispose()


async def _rest(stream) -> list[str]:  # type: ignore[no-untyped-def]
    return [text async for text in stream]


def test_a_chunked_upload_is_cut_at_its_limit(tmp_path: Path) -> None:
    stack = LiveStack(tmp_path, f"sqlite:///{tmp_path}/u.db", broker=False,
                      MAX_UPLOAD_BYTES=str(1024 * 1024))
    try:
        stack.start_api()
        sent, answer = _chunked_upload(stack.port, total=64 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # The server stopped reading near the limit (socket buffers hold a few MB more),
        # instead of spooling the whole 64 MB body first.
        assert sent < 16 * 1024 * 1024, sent
    finally:
        stack.close()


def _chunked_upload(port: int, total: int) -> tuple[int, bytes]:
    """POST a multipart upload of `total` bytes with chunked transfer encoding; stop sending
    when the server answers or closes. (bytes sent, the answer's first bytes)"""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode()
    chunk = b"1,2\n" * 16384  # 64 KB
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall((f"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n").encode())
        s.settimeout(0.0)
        sent = 0
        pieces = [head] + [chunk] * (total // len(chunk))
        answer = b""
        for piece in pieces:
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if answer:
                break
            try:
                s.settimeout(5.0)
                s.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                s.settimeout(0.0)
            except OSError:  # the server closed the connection: it stopped reading
                break
            sent += len(piece)
        s.settimeout(10.0)
        try:
            while b"\r\n\r\n" not in answer:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    return sent, answer
