"""Misbehaving servers for faults a real IdP cannot produce on demand."""
from __future__ import annotations

import socket
import threading


class BlackHole:
    """Accepts TCP connections and never answers (not even a TLS handshake)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.conns.append(conn)

    def close(self) -> None:
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()


def closed_port() -> int:
    """A port nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class StandIn:
    """A misbehaving IdP: HTTPS with the test IdP's server certificate, answering each path
    from `routes` (path -> (status, body bytes or dict, content-type)), everything else 404.

    `discovery()` gives a well-formed document for this issuer to start from; tests replace
    routes at any time (`standin.routes["/token"] = (500, b"oops", "text/plain")`), slow a
    path down (`standin.delays["/jwks"] = 1.5`, seconds) and read `hits` (path -> count) and
    `seen` (path -> the requests: `{"query", "headers", "body"}`, headers with lowercase names)."""

    def __init__(self, pki, *, jwks: dict | None = None) -> None:
        import http.server
        import json
        import ssl

        self.routes: dict[str, tuple[int, object, str]] = {}
        self.delays: dict[str, float] = {}
        self.hits: dict[str, int] = {}
        self.seen: dict[str, list[dict]] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request_body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                outer.hits[path] = outer.hits.get(path, 0) + 1
                outer.seen.setdefault(path, []).append({
                    "query": query, "body": request_body,
                    "headers": {k.lower(): v for k, v in self.headers.items()}})
                if path in outer.delays:
                    import time
                    time.sleep(outer.delays[path])
                status, body, ctype = outer.routes.get(path, (404, b"not found", "text/plain"))
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:  # quiet
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki.path("idp.crt")), str(pki.path("idp.key")))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.issuer = f"https://localhost:{self.port}"
        self.base_url = self.issuer
        self.mtls_port = None
        self.pki = pki
        self.routes["/.well-known/openid-configuration"] = (200, self.discovery(), "application/json")
        self.routes["/jwks"] = (200, jwks or {"keys": []}, "application/json")
        self.routes["/token"] = (200, {"access_token": "opaque-from-stand-in", "token_type": "Bearer",
                                       "expires_in": 300}, "application/json")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def discovery(self, **override) -> dict:
        doc = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/auth",
            "token_endpoint": f"{self.issuer}/token",
            "introspection_endpoint": f"{self.issuer}/token/introspection",
            "revocation_endpoint": f"{self.issuer}/token/revocation",
            "userinfo_endpoint": f"{self.issuer}/me",
            "jwks_uri": f"{self.issuer}/jwks",
        }
        doc.update(override)
        return {k: v for k, v in doc.items() if v is not None}

    def log(self, *a, **kw) -> str:
        return ""

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wrong_idp_ca(pki, cluster: str = "idp-mtls"):
    """Envoy config mutation: `cluster` trusts a CA that did not sign the IdP's certificate."""
    def mutate(cfg):
        for c in cfg["static_resources"]["clusters"]:
            if c["name"] == cluster:
                ctx = c["transport_socket"]["typed_config"]["common_tls_context"]
                ctx["validation_context"]["trusted_ca"] = {"filename": str(pki.path("selfsigned.crt"))}
    return mutate
