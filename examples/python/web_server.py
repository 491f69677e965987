"""A web server's workers sharing one model: a pre-forking HTTP server (the way gunicorn and
uWSGI run Python apps) whose 4 worker processes each acquire the model after the fork.

    python examples/python/web_server.py              # serves on http://127.0.0.1:8080/?x=1.5
    python examples/python/web_server.py --demo       # starts, asks 20 times, stops
"""
import json
import os
import signal
import socket
import sys
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np

import modelshare


def load_model():
    w = np.linspace(0, 1, 8, dtype=np.float32).reshape(8, 1)
    return lambda x: x @ w


SHARED = modelshare.Shared(load_model, tag="example-web")
MODEL = None  # this worker's lease, taken after the fork


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        x = np.full((1, 8), float(query.get("x", ["1"])[0]), dtype=np.float32)
        body = json.dumps({"y": float(MODEL(x)[0, 0]), "worker": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(sock):
    global MODEL
    MODEL = SHARED.acquire()
    server = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.serve_forever()


def main(demo):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0 if demo else 8080))
    sock.listen(64)
    port = sock.getsockname()[1]
    workers = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                serve(sock)
            finally:
                os._exit(0)
        workers.append(pid)
    print(f"serving on http://127.0.0.1:{port}/?x=1.5 with workers {workers}", flush=True)
    try:
        if not demo:
            signal.pause()
        seen = set()
        for i in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?x={i}", timeout=60) as r:
                answer = json.load(r)
            assert abs(answer["y"] - i * 4.0) < 1e-4, answer
            seen.add(answer["worker"])
        print(f"20 answers from {len(seen)} worker(s)")
        model = next(m for m in modelshare.status()["models"] if m["tag"] == "example-web")
        print(f"loads: {model['loads']}")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        for pid in workers:
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main("--demo" in sys.argv[1:])
