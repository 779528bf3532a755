"""A catching SMTP server for local runs and tests: every message it accepts becomes an ``.eml`` file.

Nothing is relayed anywhere. Standard library only (asyncio); it speaks the part of SMTP that
``smtplib`` and Airflow's SMTP provider use: HELO/EHLO, MAIL FROM, RCPT TO, DATA (with dot
un-stuffing), RSET, NOOP, VRFY, QUIT. Each message is written atomically (a temporary file renamed
into place), so a reader never sees half a message.

    python -m include.pacbook.smtp_sink --port 8025 --dir .state/mail   # until SIGTERM / Ctrl-C

    with running_smtp_sink(0, tmp_path) as sink:   # port 0 = any free port: sink.port
        ...
        messages = read_messages(tmp_path)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import itertools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 25 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
HOSTNAME = "pacbook-smtp-sink"


@dataclass
class _Envelope:
    mail_from: str | None = None
    rcpt_to: list[str] = field(default_factory=list)


def _address(argument: str, keyword: str) -> str | None:
    """``FROM:<a@b> SIZE=12`` → ``a@b``; None when the syntax is wrong."""
    head, _, rest = argument.partition(":")
    if head.strip().upper() != keyword:
        return None
    rest = rest.strip()
    if rest.startswith("<"):
        end = rest.find(">")
        return rest[1:end] if end != -1 else None
    return rest.split(" ", 1)[0] if rest else None


class SmtpSink:
    """The server: ``await start()``, then ``close()``; messages land in ``directory``."""

    def __init__(self, directory: Path | str, host: str = "127.0.0.1", port: int = 8025):
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._counter = itertools.count(1)
        self._sessions: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_server(self._session, self.host, self.port, limit=MAX_LINE_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("SMTP sink listening on %s:%d, writing to %s", self.host, self.port, self.directory)

    async def close(self) -> None:
        """Stops listening and ends open sessions (a message not completed by then is not stored)."""
        if self._server is not None:
            self._server.close()
            for session in list(self._sessions):
                session.cancel()
            await asyncio.gather(*self._sessions, return_exceptions=True)
            await self._server.wait_closed()

    # --- one client ---------------------------------------------------------------------------------

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        envelope = _Envelope()
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
            task.add_done_callback(self._sessions.discard)
        try:
            await reply(f"220 {HOSTNAME} ESMTP ready")
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return  # client went away
                except asyncio.LimitOverrunError:
                    await reply("500 5.5.2 line too long")
                    return
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                verb, _, argument = line.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    envelope = _Envelope()
                    await reply(f"250-{HOSTNAME} greets {argument.strip() or 'client'}")
                    await reply(f"250-SIZE {MAX_MESSAGE_BYTES}")
                    await reply("250-8BITMIME")
                    await reply("250 SMTPUTF8")
                elif verb == "HELO":
                    envelope = _Envelope()
                    await reply(f"250 {HOSTNAME}")
                elif verb == "MAIL":
                    address = _address(argument, "FROM")
                    if address is None:
                        await reply("501 5.5.4 syntax: MAIL FROM:<address>")
                    else:
                        envelope = _Envelope(mail_from=address)
                        await reply("250 2.1.0 OK")
                elif verb == "RCPT":
                    address = _address(argument, "TO")
                    if envelope.mail_from is None:
                        await reply("503 5.5.1 MAIL first")
                    elif not address:
                        await reply("501 5.5.4 syntax: RCPT TO:<address>")
                    else:
                        envelope.rcpt_to.append(address)
                        await reply("250 2.1.5 OK")
                elif verb == "DATA":
                    if not envelope.rcpt_to:
                        await reply("503 5.5.1 RCPT first")
                        continue
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    data = await self._read_data(reader)
                    if data is None:
                        return
                    if len(data) > MAX_MESSAGE_BYTES:
                        await reply("552 5.3.4 message too big")
                    else:
                        name = await asyncio.to_thread(self._store, envelope, data)
                        await reply(f"250 2.0.0 OK queued as {name}")
                    envelope = _Envelope()
                elif verb == "RSET":
                    envelope = _Envelope()
                    await reply("250 2.0.0 OK")
                elif verb == "NOOP":
                    await reply("250 2.0.0 OK")
                elif verb == "VRFY":
                    await reply("252 2.1.5 cannot verify, will accept")
                elif verb == "QUIT":
                    await reply("221 2.0.0 bye")
                    return
                else:
                    await reply("500 5.5.2 command not recognized")
        except (ConnectionError, OSError) as error:
            log.warning("SMTP sink: client connection lost: %s", error)
        except Exception:  # noqa: BLE001 - one bad session must not stop the server
            log.exception("SMTP sink: session failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes | None:
        """The message up to the lone dot, dot-unstuffed, CRLF line ends; None if the client left."""
        lines: list[bytes] = []
        size = 0
        while True:
            raw = await _read_long_line(reader)
            if raw is None:
                return None
            content = raw.rstrip(b"\r\n")
            if content == b".":
                return b"".join(lines)
            if content.startswith(b"."):
                content = content[1:]
            size += len(content) + 2
            if size <= MAX_MESSAGE_BYTES + 2:  # keep reading to the end, but stop keeping
                lines.append(content + b"\r\n")

    def _store(self, envelope: _Envelope, data: bytes) -> str:
        name = f"{time.time_ns()}-{os.getpid()}-{next(self._counter):06d}.eml"
        trace = (
            f"X-PacBook-Sink-Mail-From: <{envelope.mail_from}>\r\n"
            f"X-PacBook-Sink-Rcpt-To: {', '.join(f'<{r}>' for r in envelope.rcpt_to)}\r\n"
        ).encode()
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(trace + data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.directory / name)
        log.info("SMTP sink: message from %s to %s stored as %s", envelope.mail_from, envelope.rcpt_to, name)
        return name


async def _read_long_line(reader: asyncio.StreamReader) -> bytes | None:
    """One line of any length (message bodies may hold long lines); None if the client left."""
    chunks: list[bytes] = []
    while True:
        try:
            chunks.append(await reader.readuntil(b"\n"))
            return b"".join(chunks)
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError as error:  # no line end within the limit: take what is there
            chunks.append(await reader.readexactly(max(1, error.consumed)))


def read_messages(directory: Path | str) -> list[EmailMessage]:
    """Every message the sink stored in ``directory``, oldest first."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    messages = []
    for path in sorted(folder.glob("*.eml")):
        with open(path, "rb") as handle:
            messages.append(email.message_from_binary_file(handle, policy=email.policy.default))
    return messages


@contextlib.contextmanager
def running_smtp_sink(port: int, directory: Path | str, host: str = "127.0.0.1") -> Iterator[SmtpSink]:
    """Runs a sink in a background thread for the duration of the block (port 0 = any free port)."""
    sink = SmtpSink(directory, host=host, port=port)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            await sink.start()
        except Exception as error:  # noqa: BLE001 - handed to the caller's thread
            failure.append(error)
            ready.set()
            return
        ready.set()
        try:
            await stop.wait()
        finally:
            await sink.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="smtp-sink", daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout=10):
            raise TimeoutError("the SMTP sink did not start within 10 s")
        if failure:
            raise failure[0]
        yield sink
    finally:
        if stop is not None and thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()


def wait_for_port(host: str, port: int, timeout: float = 10) -> None:
    """Waits until something accepts connections on host:port (for scripts starting the sink)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def _serve_forever(sink: SmtpSink) -> None:
    await sink.start()
    print(f"SMTP sink listening on {sink.host}:{sink.port}, writing to {sink.directory}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await sink.close()


def main(argv: list[str] | None = None) -> None:
    from include.pacbook import config

    parser = argparse.ArgumentParser(description="Catching SMTP server: writes each message to DIR as .eml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=config.smtp_port())
    parser.add_argument("--dir", type=Path, default=config.smtp_sink_dir())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_serve_forever(SmtpSink(args.dir, host=args.host, port=args.port)))


if __name__ == "__main__":
    main()
