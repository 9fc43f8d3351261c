"""Running the dashboard: `distilflow ui` and `Client.ui()`. The socket is bound before anything is printed, so the
address printed answers at once (and --port 0 picks a free port)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from distilflow.errors import DistilflowError
from distilflow.ui.security import Access
from distilflow.workspace import Workspace

DEFAULT_PORT = 8765


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        raise DistilflowError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port or "
                              "--host") from None
    sock.listen(128)
    return sock


def address_lines(access: Access, host: str, port: int) -> list[str]:
    """What the user is told: where to open the dashboard (with the token off loopback) and how to stop it."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    if not access.public:
        return [f"dashboard: http://{shown}:{port}/", "stop with Ctrl+C"]
    return [f"dashboard: http://{shown}:{port}/?token={access.token}",
            f"listening on {host}: every request needs this token (anyone who has the address can cancel jobs; "
            "an SSH tunnel to a loopback dashboard is safer: see docs/ui.md)", "stop with Ctrl+C"]


def serve_ui(workspace: Workspace, *, host: str = "127.0.0.1", port: int | None = None, token: str | None = None,
             announce: Callable[[str], None] = print) -> None:
    """Serve the dashboard until interrupted (port None: 8765; 0: any free port). Off loopback every request needs
    `token` (a new one when None)."""
    import uvicorn

    from distilflow.ui.app import build_app

    if not workspace.db_path.exists():
        raise DistilflowError(f"no distilflow workspace at {workspace.root} (no distilflow.db); run a job there "
                              "first, or give --workspace")
    access = Access.for_host(host, token)
    sock = _bind(host, DEFAULT_PORT if port is None else port)
    # No access log: a request line can carry the token (?token=...), and the pages show what happens anyway.
    config = uvicorn.Config(build_app(workspace, access), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="on")
    for line in address_lines(access, host, sock.getsockname()[1]):
        announce(line)
    uvicorn.Server(config).run(sockets=[sock])
