"""A fast loopback provider for benchmarks: answers Twilio's Create Message with a 201 and a
Twilio-shaped body, over HTTP/1.1 keep-alive, on one asyncio event loop pinned to one core.

    python benchmarks/fast_provider.py --port 8799 [--cpu 1] [--ids FILE]

It exists so that the client, not the provider, is what a benchmark measures: the sandbox (a
thread per connection, full checks) tops out near the rate it is measured against. With --ids
it appends the X-Smsched-Message-Id of every request to FILE when it stops (SIGTERM), so a
benchmark can check that every message arrived exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal

BODY_TEMPLATE = (b'{"sid": "SM%s", "status": "queued", "num_segments": "1", "direction": "outbound-api",'
                 b' "api_version": "2010-04-01", "error_code": null, "error_message": null}')


class Provider(asyncio.Protocol):
    ids: list[bytes] = []
    count = 0

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            message_id = None
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                lowered = name.lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"x-smsched-message-id":
                    message_id = value.strip()
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            Provider.count += 1
            if message_id is not None:
                Provider.ids.append(message_id)
            body = BODY_TEMPLATE % secrets.token_hex(16).encode()
            self.transport.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))


async def serve(port: int, ids_path: str | None, host: str = "127.0.0.1") -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Provider, host, port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()
    if ids_path:
        with open(ids_path, "ab") as f:
            f.write(b"\n".join(Provider.ids) + (b"\n" if Provider.ids else b""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    parser.add_argument("--ids", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(serve(args.port, args.ids, args.host))


if __name__ == "__main__":
    main()
