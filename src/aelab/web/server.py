"""Run the explorer's app with uvicorn: blocking (``aelab serve``) or in a background thread (tests, notebooks).

The socket is bound here, before uvicorn starts, so that a port in use or an unknown host is one clear
:class:`~aelab.errors.AelabError` instead of uvicorn's log line and exit.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import threading
import time

import uvicorn

from ..errors import AelabError

LOOPBACK_NAMES = ["127.0.0.1", "localhost"]  # the Host headers a loopback server answers


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: a free one)."""
    if not 0 <= port <= 65535:
        raise AelabError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise AelabError(f"cannot listen on host '{host}' ({exc}); give an address of this machine, "
                         f"e.g. 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise AelabError(bind_advice(host, port, exc)) from None
    return sock


def bind_advice(host: str, port: int, exc: OSError) -> str:
    """One line on why ``host``:``port`` cannot be listened on, with the fix that fits the cause."""
    why = f"cannot listen on {host}:{port} ({exc.strerror or exc})"
    if exc.errno == errno.EADDRINUSE:
        return f"{why}: the port is taken; choose another --port (or --port 0 for a free one)"
    if exc.errno in (errno.EACCES, errno.EPERM) and 0 < port < 1024:
        return f"{why}: ports below 1024 need administrator rights; choose --port 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"{why}: {host} is not an address of this machine; give one of its addresses with --host "
                f"(127.0.0.1 for this machine only, 0.0.0.0 for all its interfaces)")
    return f"{why}; check --host {host} (an address of this machine) and --port {port}"


def url_of(sock: socket.socket) -> str:
    """The address to open in a browser: the socket's own, or a loopback one when it listens on every
    interface (0.0.0.0 or ::, which a browser cannot open)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def listens_everywhere(sock: socket.socket) -> bool:
    """Whether ``sock`` listens on every interface of the machine (0.0.0.0 or ::)."""
    return sock.getsockname()[0] in ("0.0.0.0", "::")


def serve(app, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C (blocks)."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=5))
    server.run(sockets=[sock])


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` serves ``app`` on a free loopback port in a thread, stopped at exit."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
