"""A local SMTP server for the alert tests (aiosmtpd): it keeps every message it receives."""

from __future__ import annotations

import email
import json
import socket
import time
from email.message import Message

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MailServer:
    """An SMTP server on 127.0.0.1 (plain, no login) that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self.recipients: list[list[str]] = []
        #: How many of the next messages to refuse with a temporary error (451), as a mail server under load does.
        self.refuse_next = 0
        self.refused = 0
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler hook
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            return "451 4.3.0 try again later"
        self.messages.append(email.message_from_bytes(envelope.content))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def start(self) -> "MailServer":
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def connection_json(self) -> str:
        """The value of ``AIRFLOW_CONN_SMTP_DEFAULT`` for this server."""
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"from_email": "airflow@example.com", "disable_ssl": True, "disable_tls": True,
                                     "retry_limit": 0, "timeout": 10}})

    def bodies(self) -> list[str]:
        """Each message's HTML part, decoded."""
        out = []
        for message in self.messages:
            part = next(p for p in message.walk() if p.get_content_type() == "text/html")
            out.append(part.get_payload(decode=True).decode("utf-8"))
        return out

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """aiosmtpd hands a message over after the client's QUIT may have returned: wait for ``count`` of them."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
