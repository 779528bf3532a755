"""Real receivers for the alert tests: a catching SMTP server and an HTTP webhook, on free ports."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from include.pacbook.smtp_sink import SmtpSink, running_smtp_sink


@pytest.fixture
def smtp_sink(tmp_path: Path, monkeypatch) -> Iterator[SmtpSink]:
    """A sink on a free port, configured as the alerts' SMTP server (no webhook unless a test adds one)."""
    with running_smtp_sink(0, tmp_path / "mail") as sink:
        monkeypatch.setenv("PACBOOK_SMTP_HOST", sink.host)
        monkeypatch.setenv("PACBOOK_SMTP_PORT", str(sink.port))
        monkeypatch.delenv("PACBOOK_ALERT_WEBHOOK_URL", raising=False)
        yield sink


@dataclass
class WebhookReceiver:
    url: str
    requests: list[dict] = field(default_factory=list)
    status: int = 204


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A real HTTP server on a free port that keeps every POSTed JSON body."""
    receiver = WebhookReceiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            receiver.requests.append(
                {"path": self.path, "content_type": self.headers.get("Content-Type"), "json": json.loads(body)}
            )
            self.send_response(receiver.status)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/pacbook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
