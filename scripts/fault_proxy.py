#!/usr/bin/env python3
"""An S3 fault injector: an HTTP proxy in front of an S3 endpoint (the moto server in tests)
that answers a configured share of requests with what S3 does on a bad day.

Faults, in turn among those enabled (so a handful of faults covers every kind), on a random
share `--rate` of requests:
  503   503 SlowDown (S3's throttling answer), the request is not forwarded
  500   500 InternalError, not forwarded
  reset a GET's response cut mid-body by a TCP reset (other requests: reset before forwarding,
        so a write is never half applied behind the client's back)
  stall the request waits `--stall` seconds (2 s) before it is forwarded
  throttle  400 ProvisionedThroughputExceededException (Kinesis's throttling answer, JSON),
        not forwarded
`--target SUFFIX` limits faults to requests whose X-Amz-Target ends with it (e.g. GetRecords).

Prints `listening <port>` once ready. `GET /__faults` answers the counts as JSON;
`PUT /__faults?rate=R` changes the rate (0 turns faults off).
Usage: fault_proxy.py --upstream http://127.0.0.1:PORT [--port 0] [--rate 0.1] [--seed 1]
       [--faults 503,500,reset,stall,throttle] [--stall 2] [--target GetRecords]
"""

import argparse
import http.client
import json
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}
# Hop-by-hop headers are the proxy's own; the body is re-sent with its length.
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Faults:
    """The shared fault plan and counts (handlers run on many threads)."""

    def __init__(self, rate, kinds, seed, stall, target=""):
        self.rate, self.kinds, self.stall, self.target = rate, kinds, stall, target
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, **{k: 0 for k in kinds}}

    def pick(self, target):
        with self.lock:
            self.counts["requests"] += 1
            if not target.endswith(self.target) or self.rate <= 0 or self.random.random() >= self.rate:
                return None
            kind = self.kinds[sum(self.counts[k] for k in self.kinds) % len(self.kinds)]
            self.counts[kind] += 1
            return kind


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    faults = None
    upstream = None

    def log_message(self, *args):
        pass

    def body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def control(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        if "rate" in query:
            with self.faults.lock:
                self.faults.rate = float(query["rate"][0])
        with self.faults.lock:
            answer = json.dumps({"rate": self.faults.rate, **self.faults.counts}).encode()
        self.reply(200, [("Content-Type", "application/json")], answer)

    def send_head(self, status, headers, length=None):
        """Status and headers; `length` replaces the upstream Content-Length (HEAD keeps it)."""
        self.send_response(status)
        for name, value in headers:
            if length is None or name.lower() != "content-length":
                self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def reply(self, status, headers, body):
        self.send_head(status, headers, len(body))
        self.wfile.write(body)

    def reset(self):
        # SO_LINGER with a zero timeout: close() sends a RST, not a FIN.
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def forward(self, body):
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in HOP], data

    def handle_any(self):
        body = self.body()
        if urllib.parse.urlparse(self.path).path == "/__faults":
            return self.control()
        kind = self.faults.pick(self.headers.get("X-Amz-Target", ""))
        if kind == "throttle":
            answer = {"__type": "ProvisionedThroughputExceededException", "message": "Rate exceeded for shard"}
            return self.reply(400, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(answer).encode())
        if kind in ERRORS:
            status, code, message = ERRORS[kind]
            xml = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            return self.reply(status, [("Content-Type", "application/xml")], xml.encode())
        if kind == "reset" and self.command != "GET":
            return self.reset()
        if kind == "stall":
            time.sleep(self.faults.stall)
        status, headers, data = self.forward(body)
        if kind == "reset" and len(data) > 1 and status in (200, 206):
            self.send_head(status, headers, len(data))
            self.wfile.write(data[: len(data) // 2])
            return self.reset()
        if kind == "reset":
            return self.reset()
        if self.command == "HEAD":
            return self.send_head(status, headers)
        return self.reply(status, headers, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="503,500,reset,stall")
    parser.add_argument("--stall", type=float, default=2.0)
    parser.add_argument("--target", default="")
    args = parser.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    unknown = [k for k in kinds if k not in ("503", "500", "reset", "stall", "throttle")]
    if unknown:
        parser.error(f"unknown faults {unknown}: use 503, 500, reset, stall, throttle")
    Proxy.faults = Faults(args.rate, kinds, args.seed, args.stall, args.target)
    Proxy.upstream = urllib.parse.urlparse(args.upstream)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Proxy)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
