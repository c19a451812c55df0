#!/usr/bin/python3
"""Loopback HTTP sink for odoo_sync tests.

Threaded HTTP/1.1 (keep-alive) server bound to 127.0.0.1 that records every
request (except /_control/...) and answers according to a script.

Usage: sink.py --port 0 --port-file PATH [--log PATH]

Control API (JSON):
  POST /_control/script   {"path": "/x" | omitted, "responses": [RESP, ...]}
                          appends RESP entries to the queue for that path
                          (omitted path = queue used by any path that has no
                          queue entry of its own).
  POST /_control/default  RESP                 default answer (when queue empty)
  GET  /_control/requests?since=SEQ&path=/x    {"requests": [...]}
  GET  /_control/count?path=/x                 {"count": N}
  POST /_control/reset                         clears recordings, scripts, default
  GET  /_control/health                        200 {"ok": true}

RESP = {"status": 200, "delay_ms": 0, "retry_after": "2", "body": "..." | {..},
        "headers": {"Name": "value"}, "drop": false, "repeat": 1}
  repeat: use this entry N times (-1 = forever).
  drop:   true / "close" = shutdown(SHUT_RDWR) and close without any response;
          "reset"  = close with SO_LINGER 0 (TCP RST);
          "partial" = send "200" headers with Content-Length 1000 but only a
                      few body bytes, then close (a truncated transfer). Use
                      this when the client reuses connections: libcurl
                      silently retries a request once on a fresh connection
                      if a *reused* connection dies before any response
                      byte (true for "close" and "reset"), which consumes
                      the next script entry.
  body:   string (sent as-is) or any other JSON value (sent JSON-encoded).
          Default content-type is application/json.

"path" matching ignores the query string of the request (a script/filter path
that itself contains '?' is compared against the full request target).
"""

import argparse
import base64
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

DEFAULT_RESPONSE = {"status": 200, "body": '{"ok":true}'}


def _path_only(target):
    return urlsplit(target).path if "?" in target else target


def _path_matches(filter_path, target):
    if filter_path is None:
        return True
    if "?" in filter_path:
        return filter_path == target
    return filter_path == _path_only(target)


class SinkState:
    def __init__(self, log_path=None):
        self.lock = threading.Lock()
        self.log_path = log_path
        self.log_fh = open(log_path, "a", encoding="utf-8") if log_path else None
        self.reset()

    def reset(self):
        with self.lock:
            self.seq = 0
            self.requests = []
            # path (or None) -> list of [resp, remaining]
            self.scripts = {}
            self.default = dict(DEFAULT_RESPONSE)

    def next_response(self, target):
        with self.lock:
            path = _path_only(target)
            queue = None
            for key in (target, path):
                q = self.scripts.get(key)
                if q:
                    queue = q
                    break
            if queue is None:
                queue = self.scripts.get(None)
            if queue:
                entry = queue[0]
                resp = entry[0]
                if entry[1] > 0:
                    entry[1] -= 1
                    if entry[1] == 0:
                        queue.pop(0)
                return resp
            return self.default

    def add_script(self, path, responses):
        with self.lock:
            q = self.scripts.setdefault(path, [])
            for r in responses:
                if not isinstance(r, dict):
                    raise ValueError("each response must be an object")
                rep = r.get("repeat", 1)
                rep = -1 if rep is None else int(rep)
                if rep == 0:
                    continue
                q.append([r, rep])
            return sum(len(v) for v in self.scripts.values())

    def record(self, rec):
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            self.requests.append(rec)
            if self.log_fh:
                self.log_fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                self.log_fh.flush()
            return self.seq

    def select(self, since=0, path=None):
        with self.lock:
            return [r for r in self.requests
                    if r["seq"] > since and _path_matches(path, r["path"])]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "odoo-sync-sink/1.0"
    sys_version = ""
    # Buffered writes: a response is assembled and flushed in one go.
    wbufsize = 65536

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._quickack()

    def log_message(self, format, *args):  # no per-request stderr noise
        pass

    # ---- low level helpers -------------------------------------------------

    def _quickack(self):
        # Clients that write headers and body separately without TCP_NODELAY
        # (e.g. Perl's HTTP::Tiny) would otherwise stall ~40ms per request on
        # Nagle vs. our delayed ACK. TCP_QUICKACK is not sticky: re-arm it.
        if _TCP_QUICKACK is not None:
            try:
                self.connection.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            except OSError:
                pass

    def _read_body(self):
        self._quickack()
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers
                    while True:
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length:
            n = int(length)
            return self.rfile.read(n) if n > 0 else b""
        return b""

    def _send(self, status, body=b"", headers=None, head_only=False):
        if isinstance(body, str):
            body = body.encode("utf-8")
        hdrs = {"Content-Type": "application/json"}
        if headers:
            hdrs.update(headers)
        lower = {k.lower() for k in hdrs}
        try:
            reason = self.responses[status][0]
        except KeyError:
            reason = "Status"
        out = ["HTTP/1.1 %d %s" % (status, reason),
               "Server: %s" % self.server_version,
               "Date: %s" % self.date_time_string()]
        for k, v in hdrs.items():
            out.append("%s: %s" % (k, v))
        if "content-length" not in lower:
            out.append("Content-Length: %d" % len(body))
        if self.close_connection and "connection" not in lower:
            out.append("Connection: close")
        if "connection" in lower and hdrs_get(hdrs, "connection").lower() == "close":
            self.close_connection = True
        data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
        if not head_only:
            data += body
        self.wfile.write(data)
        self.wfile.flush()

    def _json(self, status, obj):
        self._send(status, json.dumps(obj, ensure_ascii=False))

    def _drop(self, mode):
        sock = self.connection
        try:
            if mode == "partial":
                # a complete header block (so a client cannot treat this as a
                # dead reused connection and silently retry), then EOF in the
                # middle of the announced body
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 1000\r\n\r\n{\"ok\":")
                self.wfile.flush()
            elif mode == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if mode == "partial":
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.close_connection = True
        if mode == "reset":
            try:
                sock.close()
            except OSError:
                pass

    # ---- dispatch ----------------------------------------------------------

    def _handle(self):
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if self.path.startswith("/_control/"):
            self._control(body)
        else:
            self._sink(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def do_HEAD(self):
        self._handle()

    def _sink(self, body):
        now = time.time()
        mono = time.monotonic()
        resp = self.server.state.next_response(self.path)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        drop = resp.get("drop") or False
        if drop is True:
            drop = "close"
        rec = {
            "method": self.command,
            "path": self.path,
            "http_version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": text,
            "body_b64": base64.b64encode(body).decode("ascii"),
            "received_at": now,
            "monotonic": mono,
            "client_addr": self.client_address[0],
            "client_port": self.client_address[1],
            "response": {
                "status": None if drop else int(resp.get("status", 200)),
                "delay_ms": resp.get("delay_ms", 0) or 0,
                "drop": drop,
            },
        }
        self.server.state.record(rec)
        delay = resp.get("delay_ms") or 0
        if delay:
            time.sleep(float(delay) / 1000.0)
        if drop:
            self._drop(drop)
            return
        headers = dict(resp.get("headers") or {})
        if resp.get("retry_after") is not None:
            headers["Retry-After"] = str(resp["retry_after"])
        rbody = resp.get("body", "")
        if rbody is None:
            rbody = ""
        if not isinstance(rbody, str):
            rbody = json.dumps(rbody)
        self._send(int(resp.get("status", 200)), rbody, headers,
                   head_only=(self.command == "HEAD"))

    def _control(self, body):
        state = self.server.state
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        name = u.path[len("/_control/"):]

        def qget(k, default=None):
            v = q.get(k)
            return v[0] if v else default

        try:
            payload = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as e:
            return self._json(400, {"error": "bad json: %s" % e})
        try:
            if name == "health":
                return self._json(200, {"ok": True})
            if name == "requests":
                since = int(qget("since", "0"))
                return self._json(200, {"requests": state.select(since, qget("path"))})
            if name == "count":
                return self._json(200, {"count": len(state.select(0, qget("path")))})
            if name == "script" and self.command == "POST":
                if not isinstance(payload, dict) or not isinstance(payload.get("responses"), list):
                    return self._json(400, {"error": "need {responses: [...]}"})
                n = state.add_script(payload.get("path"), payload["responses"])
                return self._json(200, {"ok": True, "queued_entries": n})
            if name == "default" and self.command == "POST":
                if not isinstance(payload, dict):
                    return self._json(400, {"error": "need an object"})
                with state.lock:
                    state.default = payload
                return self._json(200, {"ok": True})
            if name == "reset" and self.command == "POST":
                state.reset()
                return self._json(200, {"ok": True})
        except (ValueError, TypeError) as e:
            return self._json(400, {"error": str(e)})
        return self._json(404, {"error": "unknown control endpoint", "path": self.path})


def hdrs_get(d, name):
    for k, v in d.items():
        if k.lower() == name:
            return str(v)
    return ""


class SinkServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # client went away etc.: not interesting in tests
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, BrokenPipeError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    args = ap.parse_args(argv)

    server = SinkServer(("127.0.0.1", args.port), Handler)
    server.state = SinkState(args.log)
    port = server.server_address[1]

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True)
    t.start()

    tmp = "%s.tmp.%d" % (args.port_file, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, args.port_file)

    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    if server.state.log_fh:
        server.state.log_fh.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
