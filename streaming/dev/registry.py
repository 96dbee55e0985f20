"""A small Confluent-compatible Schema Registry for development and tests.

No registry server can be installed here, so this implements the REST subset that
confluent-kafka's ``SchemaRegistryClient`` and its serializers call: register a schema under a
subject, look a schema up in a subject, get a schema by id (and its subjects and versions),
versions of a subject (``latest`` too), the subjects list, schema types and the
compatibility config (always BACKWARD, never enforced). State is in memory; with a state file
it is written after every registration and read at start, so a restart keeps the ids.

Threads: the HTTP server's request threads share ``_State``; every read and write holds its
lock (the only shared state).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_TYPES = ("AVRO", "PROTOBUF", "JSON")


class RegistryError(Exception):
    """An error answer: HTTP status, Confluent error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _canonical(schema: str, schema_type: str) -> str:
    """Two registrations of the same schema get the same id (as in Confluent's registry)."""
    if schema_type in ("AVRO", "JSON"):
        try:
            return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))
        except ValueError:
            return schema
    return schema.strip()


@dataclass
class _State:
    """Schemas by id (ids from 1) and each subject's versions (schema ids, version = index + 1)."""

    schemas: list[dict[str, Any]] = field(default_factory=list)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    path: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        data = json.loads(self.path.read_text())
        self.schemas = data["schemas"]
        self.subjects = {k: list(v) for k, v in data["subjects"].items()}

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"schemas": self.schemas, "subjects": self.subjects}))
        os.replace(tmp, self.path)  # a crash mid-write never leaves half a file

    def register(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        schema = body.get("schema")
        if not isinstance(schema, str) or not schema:
            raise RegistryError(HTTPStatus.UNPROCESSABLE_ENTITY, 42201, "Invalid schema: empty")
        schema_type = body.get("schemaType") or "AVRO"
        if schema_type not in _TYPES:
            raise RegistryError(
                HTTPStatus.UNPROCESSABLE_ENTITY, 42201, f"Unknown schema type {schema_type}"
            )
        refs = body.get("references") or []
        canon = _canonical(schema, schema_type)
        with self.lock:
            found = self._find(canon, schema_type, refs)
            if found is None:
                found = {
                    "id": len(self.schemas) + 1,
                    "schema": schema,
                    "schemaType": schema_type,
                    "references": refs,
                    "canonical": canon,
                }
                self.schemas.append(found)
            versions = self.subjects.setdefault(subject, [])
            if found["id"] not in versions:
                versions.append(found["id"])
            self._save()
            return {"id": found["id"], "version": versions.index(found["id"]) + 1}

    def _find(self, canon: str, schema_type: str, refs: list[Any]) -> dict[str, Any] | None:
        for s in self.schemas:
            if (
                s["canonical"] == canon
                and s["schemaType"] == schema_type
                and s["references"] == refs
            ):
                return s
        return None

    def by_id(self, schema_id: int) -> dict[str, Any]:
        with self.lock:
            if not 1 <= schema_id <= len(self.schemas):
                raise RegistryError(HTTPStatus.NOT_FOUND, 40403, f"Schema {schema_id} not found")
            return self.schemas[schema_id - 1]

    def version(self, subject: str, version: str) -> dict[str, Any]:
        with self.lock:
            versions = self._versions(subject)
            if version in ("latest", "-1"):
                n = len(versions)
            elif version.isdigit() and 1 <= int(version) <= len(versions):
                n = int(version)
            else:
                raise RegistryError(
                    HTTPStatus.NOT_FOUND, 40402, f"Version {version} not found in {subject}"
                )
            return self._registered(subject, n, versions[n - 1])

    def lookup(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        schema_type = body.get("schemaType") or "AVRO"
        canon = _canonical(str(body.get("schema", "")), schema_type)
        with self.lock:
            versions = self._versions(subject)
            found = self._find(canon, schema_type, body.get("references") or [])
            if found is None or found["id"] not in versions:
                raise RegistryError(HTTPStatus.NOT_FOUND, 40403, "Schema not found")
            return self._registered(subject, versions.index(found["id"]) + 1, found["id"])

    def _versions(self, subject: str) -> list[int]:
        versions = self.subjects.get(subject)
        if not versions:
            raise RegistryError(HTTPStatus.NOT_FOUND, 40401, f"Subject '{subject}' not found")
        return versions

    def _registered(self, subject: str, version: int, schema_id: int) -> dict[str, Any]:
        s = self.schemas[schema_id - 1]
        out = {"subject": subject, "version": version, "id": schema_id, "schema": s["schema"]}
        if s["schemaType"] != "AVRO":
            out["schemaType"] = s["schemaType"]
        if s["references"]:
            out["references"] = s["references"]
        return out

    def subjects_of(self, schema_id: int) -> list[dict[str, Any]]:
        self.by_id(schema_id)
        with self.lock:
            return [
                {"subject": sub, "version": versions.index(schema_id) + 1}
                for sub, versions in self.subjects.items()
                if schema_id in versions
            ]


class _Handler(BaseHTTPRequestHandler):
    state: _State
    user_info: str | None = None
    """``user:password`` that every request must carry as HTTP Basic auth; None = open."""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the test logs

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def do_PUT(self) -> None:
        self._answer(self._put)

    def _answer(self, route: Any) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        try:
            length = int(self.headers.get("Content-Length") or 0)
            self._authorize()
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            status, result = HTTPStatus.OK, route(parts, parse_qs(url.query), body)
        except RegistryError as exc:
            status, result = exc.status, {"error_code": exc.code, "message": exc.message}
        except (ValueError, KeyError) as exc:
            status = HTTPStatus.UNPROCESSABLE_ENTITY
            result = {"error_code": 42201, "message": f"bad request: {exc}"}
        data = json.dumps(result).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorize(self) -> None:
        if self.user_info is None:
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        try:
            given = base64.b64decode(token, validate=True).decode() if scheme == "Basic" else ""
        except (binascii.Error, UnicodeDecodeError):
            given = ""
        if not hmac.compare_digest(given.encode(), self.user_info.encode()):
            raise RegistryError(HTTPStatus.UNAUTHORIZED, 40101, "Unauthorized")

    def _get(self, p: list[str], _q: dict[str, list[str]], _b: Any) -> Any:
        s = self.state
        if not p:
            return {}
        if p == ["subjects"]:
            with s.lock:
                return sorted(s.subjects)
        if p == ["schemas", "types"]:
            return list(_TYPES)
        if p[0] == "config" or p[0] == "mode":
            return {"compatibilityLevel": "BACKWARD"} if p[0] == "config" else {"mode": "READWRITE"}
        if len(p) >= 3 and p[:2] == ["schemas", "ids"] and p[2].isdigit():
            schema_id = int(p[2])
            if len(p) == 3:
                found = s.by_id(schema_id)
                out = {"schema": found["schema"]}
                if found["schemaType"] != "AVRO":
                    out["schemaType"] = found["schemaType"]
                if found["references"]:
                    out["references"] = found["references"]
                return out
            if p[3:] == ["subjects"]:
                return [x["subject"] for x in s.subjects_of(schema_id)]
            if p[3:] == ["versions"]:
                return s.subjects_of(schema_id)
        if p[0] == "subjects" and len(p) == 3 and p[2] == "versions":
            with s.lock:
                return list(range(1, len(s._versions(p[1])) + 1))
        if p[0] == "subjects" and len(p) == 4 and p[2] == "versions":
            return s.version(p[1], p[3])
        raise RegistryError(HTTPStatus.NOT_FOUND, 404, f"no such resource: /{'/'.join(p)}")

    def _post(self, p: list[str], _q: dict[str, list[str]], body: Any) -> Any:
        if p[:1] == ["subjects"] and len(p) == 3 and p[2] == "versions":
            return self.state.register(p[1], body)
        if p[:1] == ["subjects"] and len(p) == 2:
            return self.state.lookup(p[1], body)
        if p[:2] == ["compatibility", "subjects"]:
            return {"is_compatible": True}
        raise RegistryError(HTTPStatus.NOT_FOUND, 404, f"no such resource: /{'/'.join(p)}")

    def _put(self, p: list[str], _q: dict[str, list[str]], body: Any) -> Any:
        if p[:1] == ["config"]:
            return {"compatibility": body.get("compatibility", "BACKWARD")}
        raise RegistryError(HTTPStatus.NOT_FOUND, 404, f"no such resource: /{'/'.join(p)}")


class DevRegistry:
    """The dev registry on 127.0.0.1:``port`` (0 = a free port), served from a thread."""

    def __init__(
        self,
        port: int = 0,
        state_file: str | Path | None = None,
        user_info: str | None = None,
    ) -> None:
        self._state = _State(path=Path(state_file) if state_file else None)
        self._state.load()
        handler = type("Handler", (_Handler,), {"state": self._state, "user_info": user_info})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> DevRegistry:
        """Serve in a background thread; returns self."""
        # a short poll interval: stop() (a test's restart) waits for at most one
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="dev-registry", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
