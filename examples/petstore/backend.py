#!/usr/bin/env python3
"""The petstore backend of the mesh7 example: a tiny JSON API implementing openapi.yaml.

Standard library only. Pets live in memory.

    python3 examples/petstore/backend.py [--port 8081]

Port 0 picks a free port. The first line on stdout is
`petstore backend listening on http://127.0.0.1:<port>`.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PETS = {1: {"id": 1, "name": "Rex", "tag": "dog", "status": "available"},
        2: {"id": 2, "name": "Tom", "tag": "cat", "status": "available"}}
NEXT_ID = [3]
LOCK = threading.Lock()
MAX_BODY = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    server_version = "petstore/1.0"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        sys.stderr.write("petstore: " + (format % args) + "\n")

    def reply(self, status, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.reply(404, {"code": 404, "message": "pet not found"})

    def pet_id(self, path):
        parts = path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "pets":
            return None
        try:
            return int(parts[1])
        except ValueError:
            return None

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/pets":
            with LOCK:
                pets = sorted(PETS.values(), key=lambda p: p["id"])
            if "tag" in query:
                pets = [p for p in pets if p.get("tag") == query["tag"][0]]
            if "limit" in query:
                try:
                    pets = pets[: int(query["limit"][0])]
                except ValueError:
                    return self.reply(400, {"code": 400, "message": "limit must be an integer"})
            return self.reply(200, pets)
        pet_id = self.pet_id(url.path)
        with LOCK:
            pet = PETS.get(pet_id)
        if pet is None:
            return self.not_found()
        return self.reply(200, pet)

    def do_POST(self):
        if urlsplit(self.path).path != "/pets":
            return self.not_found()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.reply(413, {"code": 413, "message": "body too large"})
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return self.reply(400, {"code": 400, "message": "body is not JSON"})
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return self.reply(400, {"code": 400, "message": "name is required"})
        with LOCK:
            pet = {"id": NEXT_ID[0], "name": body["name"], "tag": body.get("tag"),
                   "status": body.get("status", "available")}
            PETS[pet["id"]] = pet
            NEXT_ID[0] += 1
        return self.reply(201, pet)

    def do_DELETE(self):
        pet_id = self.pet_id(urlsplit(self.path).path)
        with LOCK:
            found = PETS.pop(pet_id, None)
        if found is None:
            return self.not_found()
        return self.reply(204)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"petstore backend listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
