"""Messages/second one process pushes to the sandbox over loopback, by worker count and HTTP client.

    python benchmarks/provider_push.py [--messages 20000] [--workers 8,16,32,64]

The sandbox runs as its own process (`smsched sandbox serve`), as a provider would; the pushing
process uses the product's provider (Twilio request shape, outcome classification) and transport.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import subprocess
import sys
import threading
import time

from smsched.http import Transport
from smsched.providers import OutMessage, Twilio
from smsched.sandbox import wait_for_port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "smsched", "sandbox", "serve", "--port", str(port)],
                            stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return proc


def push(url: str, messages: int, workers: int, client: str) -> float:
    provider = Twilio({"account_sid": "AC" + "0" * 32, "auth_token": "t", "from": "+15005550006", "base_url": url})
    transport = Transport(pool_size=workers, client=client)
    work: queue.Queue = queue.Queue()
    for i in range(messages):
        work.put(OutMessage(i, f"+55119{i:08d}", "sms", "Olá! Promoção de hoje."))
    accepted = [0] * workers

    def worker(index: int) -> None:
        while True:
            try:
                message = work.get_nowait()
            except queue.Empty:
                return
            response = transport.send(provider.build(message))
            if provider.classify(response.status, response.headers, response.body).kind == "accepted":
                accepted[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert sum(accepted) == messages, (sum(accepted), messages)
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--workers", default="8,16,32,64")
    parser.add_argument("--clients", default="urllib3,requests")
    args = parser.parse_args()
    port = free_port()
    sandbox = start_sandbox(port)
    try:
        url = f"http://127.0.0.1:{port}"
        print(f"{'client':<9} {'workers':>7} {'msg/s':>8} {'msg/s pinned to 1 core':>24}")
        for client in args.clients.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                free = push(url, args.messages, workers, client)
                os.sched_setaffinity(0, {0})
                pinned = push(url, args.messages, workers, client)
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
                print(f"{client:<9} {workers:>7} {free:>8.0f} {pinned:>24.0f}", flush=True)
    finally:
        sandbox.terminate()
        sandbox.wait()


if __name__ == "__main__":
    main()
