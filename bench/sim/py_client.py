"""Python load client for the simulator benchmark (see README.md).

Starts `tokenswarm sim --no-latency` (TOKENSWARM_BIN or target/release/tokenswarm),
streams 64-token chat completions with the official openai SDK from N threads
for a few seconds, and prints streams/s and CPU-seconds per 1000 streams for
the sim process (/proc/<pid>/stat) and for this client process.

    /path/to/venv/bin/python bench/sim/py_client.py [--secs 5] [--threads 4] [--tokens 64]
"""

import argparse
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: str) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    f = stat[stat.rfind(")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / TICK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = os.environ.get("TOKENSWARM_BIN", str(ROOT / "target/release/tokenswarm"))
    sim = subprocess.Popen([binary, "sim", "--no-latency", "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        prompt = " ".join(chr(65 + (i * 7) % 26) for i in range(128))
        stop = threading.Event()
        done = [0] * a.threads

        def worker(i: int) -> None:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
            while not stop.is_set():
                n = 0
                for chunk in client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=a.tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                ):
                    if chunk.choices and chunk.choices[0].delta.content:
                        n += 1
                assert n == a.tokens
                done[i] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.threads)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        s0, c0, n0, t0 = cpu_s(str(sim.pid)), cpu_s("self"), sum(done), time.monotonic()
        time.sleep(a.secs)
        s1, c1, n1, el = cpu_s(str(sim.pid)), cpu_s("self"), sum(done), time.monotonic() - t0
        stop.set()
        for t in threads:
            t.join()
        n = n1 - n0
        print(
            f"client=openai-python threads={a.threads} tokens={a.tokens}: {n / el:.0f} streams/s; "
            f"CPU-s per 1000 streams: sim {(s1 - s0) / n * 1000:.3f}, client {(c1 - c0) / n * 1000:.3f} "
            f"(sim/client = {(s1 - s0) / (c1 - c0):.3f})"
        )
    finally:
        sim.terminate()
        sim.wait()


if __name__ == "__main__":
    main()
