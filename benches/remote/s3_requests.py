#!/usr/bin/env python3
"""Request economy on S3: snap against restic on the same S3 server.

Starts a moto S3 server on loopback behind a small counting proxy, runs the
same steps with each tool (open, first backup, unchanged re-backups, restore
of one file) and prints, per step, the number of requests by method and the
bytes up and down, as a markdown table. Counts, not times: they do not
depend on how busy the machine is.

    python3 benches/remote/s3_requests.py [--snap target/release/snap] [--restic restic] [--files 5000] [--big-mib 100]
"""
import argparse
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, "lock", threading.Lock()):
            self.methods = Counter()
            self.up = 0
            self.down = 0

    def add(self, method, up, down):
        with self.lock:
            self.methods[method] += 1
            self.up += up
            self.down += down


def make_proxy(upstream_port, counts):
    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                body = b"".join(chunks)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding",)}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=300)
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "content-length", "connection", "date", "server"):
                    self.send_header(k, v)
            # A HEAD answer has no body but tells the object's length.
            length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
            self.send_header("Content-Length", length or "0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()
            counts.add(self.command, len(body), len(data))

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    return Proxy


def make_data(root, files, big_mib):
    random.seed(7)
    for i in range(files):
        d = os.path.join(root, f"d{i % 100}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(os.urandom(random.randint(1024, 6144)))
    with open(os.path.join(root, "big"), "wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--snap", default="target/release/snap")
    ap.add_argument("--restic", default=shutil.which("restic"))
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--big-mib", type=int, default=100)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="snap-s3-requests.")
    moto_port, proxy_port = free_port(), free_port()
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counts = Counts()
    proxy = ThreadingHTTPServer(("127.0.0.1", proxy_port), make_proxy(moto_port, counts))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", moto_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", moto_port)
        conn.request("PUT", "/bench")
        conn.getresponse().read()

        data = os.path.join(work, "data")
        make_data(data, args.files, args.big_mib)
        one_file = os.path.join(data, "d7", "f7")
        with open(os.path.join(work, "pw"), "w") as f:
            f.write("bench-password\n")
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_DEFAULT_REGION="us-east-1", RESTIC_PASSWORD_FILE=os.path.join(work, "pw"),
                   SNAP_PASSWORD_FILE=os.path.join(work, "pw"))
        endpoint = f"http://127.0.0.1:{proxy_port}/bench"

        tools = {}
        if args.snap:
            snap = [os.path.abspath(args.snap), "-r", f"s3:{endpoint}/snap", "--cache-dir", os.path.join(work, "snap-cache")]
            tools["snap"] = [
                ("init", snap + ["init"]),
                ("open (list snapshots)", snap + ["snapshots"]),
                ("first backup", snap + ["create", data]),
                ("unchanged re-backup", snap + ["create", data]),
                ("unchanged re-backup, again", snap + ["create", data]),
                ("restore one file", snap + ["restore", "latest", "--target", os.path.join(work, "r-snap"), "--path", one_file]),
            ]
        if args.restic:
            restic = [args.restic, "-r", f"s3:{endpoint}/restic", "--cache-dir", os.path.join(work, "restic-cache")]
            tools["restic"] = [
                ("init", restic + ["init"]),
                ("open (list snapshots)", restic + ["snapshots"]),
                ("first backup", restic + ["backup", data]),
                ("unchanged re-backup", restic + ["backup", data]),
                ("unchanged re-backup, again", restic + ["backup", data]),
                ("restore one file", restic + ["restore", "latest", "--target", os.path.join(work, "r-restic"), "--include", one_file]),
            ]
        results = {}
        for tool, steps in tools.items():
            for step, cmd in steps:
                counts.reset()
                p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                if p.returncode != 0:
                    sys.exit(f"{tool} {step} failed: {p.stderr.decode()[-2000:]}")
                results[(tool, step)] = (sum(counts.methods.values()), dict(counts.methods), counts.up, counts.down)

        print(f"data: {args.files} files of 1-6 KiB and one {args.big_mib} MiB file; moto {subprocess.run([sys.executable, '-c', 'import moto; print(moto.__version__)'], capture_output=True, text=True).stdout.strip()}")
        print()
        print("| step | tool | requests | by method | MiB up | MiB down |")
        print("|---|---|---|---|---|---|")
        steps = [s for s, _ in next(iter(tools.values()))]
        for step in steps:
            for tool in tools:
                n, methods, up, down = results[(tool, step)]
                by = ", ".join(f"{m} {c}" for m, c in sorted(methods.items()))
                print(f"| {step} | {tool} | {n} | {by} | {up / 2**20:.2f} | {down / 2**20:.2f} |")
        print()
        print(json.dumps({f"{t}/{s}": r[0] for (t, s), r in results.items()}))
    finally:
        proxy.shutdown()
        moto.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
