"""The catching SMTP server: real SMTP clients (smtplib and a raw socket) against it."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from include.pacbook import config
from include.pacbook.smtp_sink import read_messages, running_smtp_sink, wait_for_port


def _message(subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "airflow@pacbook.local"
    message["To"] = "data-oncall@pacbook.local"
    message.set_content(body)
    return message


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_messages_dot_stuffing_and_utf8(tmp_path: Path):
    body = "first line\n.starts with a dot\n..two dots\n.\nnot the end above\nrésumé — ünïcode\n"
    with running_smtp_sink(0, tmp_path) as sink:
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            smtp.send_message(_message("one", body))
            smtp.rset()
            smtp.noop()
            smtp.send_message(_message("two", "x" * 5000 + "\n"), to_addrs=["a@pacbook.local", "b@pacbook.local"])
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:  # a second connection
            smtp.helo("tests")
            smtp.send_message(_message("three", "short\n"))
    messages = read_messages(tmp_path)
    assert [m["Subject"] for m in messages] == ["one", "two", "three"]
    assert messages[0].get_content() == body  # smtplib stuffed the dots, the sink removed them
    assert messages[1].get_content() == "x" * 5000 + "\n"
    assert messages[1]["X-PacBook-Sink-Rcpt-To"] == "<a@pacbook.local>, <b@pacbook.local>"
    assert messages[0]["X-PacBook-Sink-Mail-From"] == "<airflow@pacbook.local>"
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".eml")], "temporary files left behind"


def test_protocol_errors_and_raw_dialogue(tmp_path: Path):
    with (
        running_smtp_sink(0, tmp_path) as sink,
        socket.create_connection((sink.host, sink.port), timeout=10) as sock,
        sock.makefile("rwb") as stream,
    ):

        def say(line: str) -> str:
            stream.write(line.encode() + b"\r\n")
            stream.flush()
            return stream.readline().decode()

        assert stream.readline().startswith(b"220 ")
        assert say("RCPT TO:<a@b>").startswith("503")
        assert say("DATA").startswith("503")
        assert say("FROB").startswith("500")
        assert say("HELO raw").startswith("250")
        assert say("MAIL FROM:<raw@pacbook.local> BODY=8BITMIME").startswith("250")
        assert say("RCPT TO:<oncall@pacbook.local>").startswith("250")
        assert say("DATA").startswith("354")
        stream.write(b"Subject: raw\r\n\r\n..dotted\r\n.\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250 ")
        assert say("VRFY someone").startswith("252")
        assert say("QUIT").startswith("221")
    [message] = read_messages(tmp_path)
    assert message["Subject"] == "raw" and message.get_content() == ".dotted\n"


def test_a_client_dropping_mid_message_stores_nothing(tmp_path: Path):
    with running_smtp_sink(0, tmp_path) as sink:
        with socket.create_connection((sink.host, sink.port), timeout=10) as sock:
            stream = sock.makefile("rwb")
            stream.readline()
            for line in ("EHLO x", "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA"):
                stream.write(line.encode() + b"\r\n")
            stream.write(b"Subject: half\r\n\r\nno end")
            stream.flush()
            stream.close()  # the socket's file object holds the connection open until closed
        # the server survives and takes the next message
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            smtp.send_message(_message("whole", "ok\n"))
    assert [m["Subject"] for m in read_messages(tmp_path)] == ["whole"]


def test_command_line_server_runs_until_sigterm(tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "include.pacbook.smtp_sink", "--port", str(port), "--dir", str(tmp_path)],
        cwd=config.PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=20)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(_message("from the CLI sink", "hello\n"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [m["Subject"] for m in read_messages(tmp_path)] == ["from the CLI sink"]
    assert read_messages(tmp_path / "absent") == []


def test_stopping_with_a_client_still_connected(tmp_path: Path):
    import threading

    with running_smtp_sink(0, tmp_path) as sink:
        idle = socket.create_connection((sink.host, sink.port), timeout=10)
        assert idle.recv(100).startswith(b"220 ")
    try:
        assert not [t for t in threading.enumerate() if t.name == "smtp-sink"], "sink thread still running"
        assert idle.recv(100) == b""  # the server closed the session
    finally:
        idle.close()
