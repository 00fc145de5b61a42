"""A small local JSON API for the HTTP eval suite (stdlib only, loopback only).

    python api.py --port 8770
GET /health, GET /cities, GET /weather?city=NAME, POST /alerts {"city", "level"}.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

WEATHER = {
    "Oslo": {"temp_c": -3.5, "conditions": "light snow", "wind_kmh": 14},
    "Lisbon": {"temp_c": 16.0, "conditions": "sunny", "wind_kmh": 9},
    "Nairobi": {"temp_c": 22.5, "conditions": "scattered clouds", "wind_kmh": 11},
}
LEVELS = ("info", "warning", "severe")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/health":
            return self._send(200, {"ok": True})
        if url.path == "/cities":
            return self._send(200, {"cities": sorted(WEATHER)})
        if url.path == "/weather":
            city = parse_qs(url.query).get("city", [""])[0]
            if city not in WEATHER:
                return self._send(
                    404, {"error": f"unknown city {city!r}", "cities": sorted(WEATHER)}
                )
            return self._send(200, {"city": city, **WEATHER[city]})
        return self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/alerts":
            return self._send(404, {"error": "not found"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        except ValueError:
            return self._send(400, {"error": "body must be JSON"})
        if body.get("city") not in WEATHER or body.get("level") not in LEVELS:
            return self._send(422, {"error": "need city (known) and level", "levels": LEVELS})
        return self._send(201, {"created": True, **body})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8770)
    ThreadingHTTPServer(("127.0.0.1", parser.parse_args().port), Handler).serve_forever()
