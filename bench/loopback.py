"""Helpers shared by the Python benches (importable because they run from bench/)."""

import socket


def free_port():
    """A port the kernel just handed out on 127.0.0.1 (closed again, so the server can bind it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
