"""A TCP forwarder in front of a real server that can cut the line: every open connection is shut
and new ones are refused for a while, as when the broker restarts or the network drops. What the
clients then see are real socket errors, at whatever point of a command they happen to be."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class Forwarder:
    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._down_until = 0.0
        self._lines: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, down_for: float) -> None:
        """Shut every connection, and refuse new ones for `down_for` seconds."""
        self._down_until = time.monotonic() + down_for
        with self._lock:
            lines, self._lines = self._lines, []
            self.cuts += 1
        for line in lines:
            _shut(*line)

    def close(self) -> None:
        self.server.close()
        self.cut(0)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            if time.monotonic() < self._down_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._lines.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(client: socket.socket, upstream: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([client, upstream], [], [], 0.5)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
        except (OSError, ValueError):  # shut by a cut (ValueError: a closed socket's fileno)
            pass
        finally:
            _shut(client, upstream)


def _shut(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):  # already shut by the other side
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
