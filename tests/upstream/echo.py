#!/usr/bin/env python3
"""Echo upstream for the integration tests and the demo.

    python3 tests/upstream/echo.py PORT

Answers every method and path with 200 and a JSON document
{"method", "path", "headers" (lower-cased names), "body"} describing the
request it received.  Prints "UPSTREAM READY" once listening on 127.0.0.1.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        payload = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": raw.decode("utf-8", "replace"),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle

    def log_message(self, fmt, *args):  # quiet
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9080
    server = ThreadingHTTPServer(("127.0.0.1", port), Echo)
    server.daemon_threads = True
    print("UPSTREAM READY", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
