"""A client for a running Ollama server (docs/api.md): `HEAD /api/blobs/sha256:<hex>` asks
whether the server holds a blob, `POST /api/blobs/sha256:<hex>` uploads one, `POST
/api/create` assembles the model from the uploaded GGUF plus template, system prompt,
parameters and license. Only the standard library: a base install can talk to a server."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgekit.errors import EdgekitError

DEFAULT_PORT = 11434


def normalize_host(value: str) -> str:
    """OLLAMA_HOST forms (`host`, `host:port`, `http://host:port`, `https://...`) as a base URL."""
    value = value.strip().rstrip("/")
    if not value:
        raise EdgekitError("empty Ollama host")
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EdgekitError(f"not an Ollama server address: {value!r}", "use http://HOST:PORT")
    try:
        port = parts.port or (443 if parts.scheme == "https" else DEFAULT_PORT)
    except ValueError:
        raise EdgekitError(f"not an Ollama server address: {value!r} (bad port)") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}:{port}{parts.path}"


def env_host() -> str | None:
    value = os.environ.get("OLLAMA_HOST")
    return normalize_host(value) if value else None


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> dict:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class OllamaClient:
    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = normalize_host(base_url)
        self.timeout = timeout

    def _connection(self, timeout: float | None = None):
        import http.client

        parts = urlsplit(self.base_url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        # large send blocks: a model upload is many GiB
        return cls(
            parts.hostname or "", parts.port, timeout=timeout or self.timeout, blocksize=1 << 20
        ), parts.path

    def request(
        self, method: str, path: str, body=None, headers: dict | None = None, timeout: float | None = None
    ) -> Response:
        conn, prefix = self._connection(timeout)
        try:
            conn.request(method, prefix + path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, resp.read())
        except (OSError, ValueError) as e:
            raise EdgekitError(f"cannot reach the Ollama server at {self.base_url}: {e}") from None
        finally:
            conn.close()

    def version(self, timeout: float = 2.0) -> str | None:
        """The server's version, or None when nothing answers there."""
        try:
            r = self.request("GET", "/api/version", timeout=timeout)
        except EdgekitError:
            return None
        return str(r.json().get("version", "")) if r.status == 200 else None

    def has_blob(self, digest: str) -> bool:
        r = self.request("HEAD", f"/api/blobs/{digest}")
        if r.status in (200, 404):
            return r.status == 200
        raise EdgekitError(
            f"the Ollama server at {self.base_url} answered {r.status} to HEAD /api/blobs/{digest}"
        )

    def push_blob(self, path: Path, digest: str, size: int) -> None:
        """Upload a file as the blob `digest`, streamed from disk."""
        with open(path, "rb") as fh:
            r = self.request(
                "POST",
                f"/api/blobs/{digest}",
                body=fh,
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                timeout=max(self.timeout, 600.0),
            )
        if r.status not in (200, 201):
            raise EdgekitError(
                f"the Ollama server at {self.base_url} refused the blob {digest}: {r.status} {_error_text(r)}"
            )

    def create(self, payload: dict) -> dict:
        body = json.dumps({**payload, "stream": False}).encode("utf-8")
        r = self.request(
            "POST",
            "/api/create",
            body=body,
            headers={"Content-Type": "application/json"},
            timeout=max(self.timeout, 3600.0),
        )
        answer = r.json()
        if r.status != 200 or answer.get("error"):
            raise EdgekitError(
                f"the Ollama server at {self.base_url} could not create {payload.get('model')}: "
                f"{r.status} {_error_text(r)}"
            )
        return answer


def _error_text(r: Response) -> str:
    err = r.json().get("error")
    if err:
        return " ".join(str(err).split())
    return " ".join(r.body.decode("utf-8", "replace").split())[:200]
