"""
A trivial POP3 server, to measure the load generator's own ceiling.

It accepts any login and answers every command of the benchmark's sessions with prepared bytes
(messages of the sizes it is given, each one line of filler), reading no mail and checking no
password: what limits a run against it is the generator (or this server's own small cost, on the
other core).  Standard library only.

Run by C{run.py}; by hand: C{python trivial_server.py --port 2110 --tls-port 2995 --certificate
cert.pem --key key.pem --sizes 4096,4096}.
"""

from __future__ import annotations

import argparse
import select
import socket
import ssl
from collections.abc import Sequence


class Answers:
    """
    The prepared answer to each command the benchmark sends.
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        """
        @param sizes: the size of each message as sent (the body only, CRLF included), at
            least 3 octets each.
        """
        total = sum(sizes)
        self.stat = b"+OK %d %d\r\n" % (len(sizes), total)
        self.list = (
            b"+OK\r\n"
            + b"".join(b"%d %d\r\n" % (number, size) for number, size in enumerate(sizes, 1))
            + b".\r\n"
        )
        self.uidl = (
            b"+OK\r\n"
            + b"".join(
                b"%d trivial-%d\r\n" % (number, number) for number in range(1, len(sizes) + 1)
            )
            + b".\r\n"
        )
        self.messages = [
            b"+OK %d octets\r\n" % (size,) + b"x" * (size - 2) + b"\r\n.\r\n" for size in sizes
        ]

    def answer(self, line: bytes) -> bytes:
        """
        The answer to one command line (without its CRLF).
        """
        keyword, _, argument = line.partition(b" ")
        keyword = keyword.upper()
        if keyword == b"STAT":
            return self.stat
        if keyword == b"LIST":
            return self.list
        if keyword == b"UIDL":
            return self.uidl
        if keyword == b"RETR":
            return self.messages[int(argument) - 1]
        return b"+OK\r\n"


class _Client:
    """
    One connection: TLS handshake when needed, then lines in, prepared answers out.
    """

    def __init__(self, sock: socket.socket, handshaking: bool) -> None:
        self.sock = sock
        self.handshaking = handshaking
        self.pending = b""
        self.out = b""
        self.sent = 0
        self.writing = False
        self.closing = False


class Server:
    """
    An C{epoll} loop over the listeners and every connection, in one thread: the same design
    as the generator's, so that this server costs about what the generator does per command.
    """

    def __init__(self, answers: Answers, tls: ssl.SSLContext) -> None:
        self._answers = answers
        self._tls = tls
        self._epoll = select.epoll()
        self._listeners: dict[int, tuple[socket.socket, bool]] = {}
        self._clients: dict[int, _Client] = {}

    def listen(self, port: int, tls: bool) -> None:
        """
        Accept connections on 127.0.0.1:C{port}, with implicit TLS or not.
        """
        listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        listener.setblocking(False)
        self._listeners[listener.fileno()] = (listener, tls)
        self._epoll.register(listener.fileno(), select.EPOLLIN)

    def run(self) -> None:
        """
        Serve forever.
        """
        while True:
            for fd, _ in self._epoll.poll():
                if fd in self._listeners:
                    self._accept(*self._listeners[fd])
                    continue
                client = self._clients.get(fd)
                if client is not None:
                    try:
                        self._serve(client)
                    except (OSError, ssl.SSLError):
                        self._close(client)

    def _accept(self, listener: socket.socket, tls: bool) -> None:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        client = _Client(sock, tls)
        self._clients[sock.fileno()] = client
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        if tls:
            self._serve(client)
        else:
            self._send(client, b"+OK trivial server ready\r\n")

    def _serve(self, client: _Client) -> None:
        sock = client.sock
        if client.handshaking:
            assert isinstance(sock, ssl.SSLSocket)
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                return
            client.handshaking = False
            self._send(client, b"+OK trivial server ready\r\n")
        if client.sent < len(client.out):
            self._send(client, b"")
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            if not data:
                self._close(client)
                return
            client.pending += data
            while b"\r\n" in client.pending:
                line, client.pending = client.pending.split(b"\r\n", 1)
                client.closing = line.upper() == b"QUIT"
                self._send(client, self._answers.answer(line))
                if client.closing:
                    return
            if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                return

    def _send(self, client: _Client, data: bytes) -> None:
        """
        Send what is queued and C{data}; wait for the socket to be writable for the rest.
        TLS writes go a record at a time, so that a retry repeats the same buffer.
        """
        if data:
            client.out = bytes(client.out[client.sent :]) + data
            client.sent = 0
        sock = client.sock
        limit = 16384 if isinstance(sock, ssl.SSLSocket) else len(client.out)
        view = memoryview(client.out)
        try:
            while client.sent < len(client.out):
                client.sent += sock.send(view[client.sent : client.sent + limit])
        except (BlockingIOError, ssl.SSLWantWriteError):
            if not client.writing:
                client.writing = True
                self._epoll.modify(sock.fileno(), select.EPOLLIN | select.EPOLLOUT)
            return
        finally:
            view.release()
        client.out, client.sent = b"", 0
        if client.writing:
            client.writing = False
            self._epoll.modify(sock.fileno(), select.EPOLLIN)
        if client.closing:
            self._close(client)

    def _close(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if self._clients.pop(fd, None) is not None:
            self._epoll.unregister(fd)
            client.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-port", type=int, required=True)
    parser.add_argument("--certificate", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--sizes", required=True, help="message sizes as sent, comma-separated")
    options = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options.certificate, options.key)
    server = Server(Answers([int(size) for size in options.sizes.split(",")]), context)
    server.listen(options.port, tls=False)
    server.listen(options.tls_port, tls=True)
    server.run()


if __name__ == "__main__":
    main()
