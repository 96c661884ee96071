"""A public URL for the server: the platform's own proxy first, then Gradio's share link, then
cloudflared when installed -- and only where the platform allows tunnels.

Auth is mandatory for anything public: :func:`open_public_url` refuses without credentials.
"""

from __future__ import annotations

import importlib.util
import queue
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from sdcloud.cloud.platforms import Detected
from sdcloud.errors import BadRequest, Unsupported

PAPERSPACE_PORT = 6006
_TRYCLOUDFLARE = re.compile(r"https://[-a-z0-9]+\.trycloudflare\.com")


@dataclass
class PublicUrl:
    method: (
        str  # colab-proxy | paperspace-6006 | runpod-proxy | vast-port | gradio-share | cloudflared | none
    )
    url: str | None
    port: int
    notes: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None  # a tunnel we started (cloudflared); stop it on exit

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _colab_module_present() -> bool:
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no "google" namespace package at all
        return False


def required_port(detected: Detected, port: int) -> int:
    """The port serve must listen on for the platform's proxy (Paperspace exposes only 6006)."""
    return PAPERSPACE_PORT if detected.profile.public_url == "paperspace-6006" else port


def platform_url(detected: Detected, port: int, env: Mapping[str, str]) -> PublicUrl | None:
    """The platform proxy URL when it can be known from the environment alone (no network)."""
    method = detected.profile.public_url
    if method == "paperspace-6006":
        fqdn = env.get("PAPERSPACE_FQDN")
        if not fqdn:
            return None
        notes = (
            []
            if port == PAPERSPACE_PORT
            else [f"Paperspace only exposes port {PAPERSPACE_PORT}: serve with --port {PAPERSPACE_PORT}"]
        )
        return PublicUrl(method, f"https://tensorboard-{fqdn}", PAPERSPACE_PORT, notes)
    if method == "runpod-proxy" and env.get("RUNPOD_POD_ID"):
        return PublicUrl(
            method,
            f"https://{env['RUNPOD_POD_ID']}-{port}.proxy.runpod.net",
            port,
            [f"port {port} must be listed as an HTTP port in the pod's template"],
        )
    if method == "vast-port":
        ext, ip = env.get(f"VAST_TCP_PORT_{port}"), env.get("PUBLIC_IPADDR")
        if ext and ip:
            return PublicUrl(
                method,
                f"http://{ip}:{ext}",
                port,
                [
                    "plain HTTP through Vast's port mapping: credentials cross the network "
                    "unencrypted; prefer Vast's Instance Portal (TLS) when you can"
                ],
            )
    return None


def choose_method(
    detected: Detected, port: int, env: Mapping[str, str], *, colab_available: bool | None = None
) -> PublicUrl:
    """Decide how the URL will be made, without starting anything."""
    prof = detected.profile
    if prof.public_url == "colab-proxy":
        available = _colab_module_present() if colab_available is None else colab_available
        if available:
            return PublicUrl(
                "colab-proxy", None, port, ["Colab's own port proxy (google.colab.kernel.proxyPort)"]
            )
    known = platform_url(detected, port, env)
    if known is not None:
        return known
    if not prof.tunnels_allowed:
        return PublicUrl(
            "none",
            None,
            port,
            [
                f"{prof.name} does not allow tunnels and its proxy is not "
                "available here: open the server from inside the platform"
            ],
        )
    if importlib.util.find_spec("gradio") is not None:
        return PublicUrl("gradio-share", None, port, ["Gradio share link: best effort, up to one week"])
    if shutil.which("cloudflared"):
        return PublicUrl("cloudflared", None, port, ["trycloudflare quick tunnel: no uptime guarantee"])
    return PublicUrl(
        "none",
        None,
        port,
        [
            "no platform proxy, no gradio, no cloudflared: reach the server "
            f"through SSH port forwarding (ssh -L {port}:127.0.0.1:{port} ...)"
        ],
    )


def open_public_url(
    detected: Detected,
    port: int,
    env: Mapping[str, str],
    auth: Sequence[str],
    api_token: str | None = None,
    *,
    host: str = "127.0.0.1",
    timeout_s: float = 30.0,
) -> PublicUrl:
    """Make the URL (this may start a tunnel). Refuses when no credentials protect the server."""
    if not auth and not api_token:
        raise BadRequest(
            "a public URL needs auth: pass --auth user:password (or --api-token); "
            "nothing goes public unprotected"
        )
    plan = choose_method(detected, port, env)
    if plan.method == "colab-proxy":
        from google.colab.output import eval_js  # type: ignore[import-not-found]  # Colab only

        plan.url = str(eval_js(f"google.colab.kernel.proxyPort({int(port)})"))
    elif plan.method == "gradio-share":
        from gradio.networking import setup_tunnel

        plan.url = setup_tunnel(host, port, secrets.token_urlsafe(32), None, None)
    elif plan.method == "cloudflared":
        plan.url, plan.process = _start_cloudflared(host, port, timeout_s)
    elif plan.method == "none":
        raise Unsupported("; ".join(plan.notes))
    return plan


def _start_cloudflared(host: str, port: int, timeout_s: float) -> tuple[str, subprocess.Popen[str]]:
    exe = shutil.which("cloudflared")
    if not exe:
        raise Unsupported("cloudflared is not installed")
    proc = subprocess.Popen(
        [exe, "tunnel", "--no-autoupdate", "--url", f"http://{host}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: queue.Queue[str] = queue.Queue()

    def drain(stream: IO[str]) -> None:
        # Keep reading for the tunnel's whole life: a full pipe would block cloudflared.
        for line in stream:
            m = _TRYCLOUDFLARE.search(line)
            if m:
                found.put(m.group(0))

    assert proc.stderr is not None
    threading.Thread(target=drain, args=(proc.stderr,), name="cloudflared-log", daemon=True).start()
    try:
        return found.get(timeout=timeout_s), proc
    except queue.Empty:
        proc.terminate()
        raise Unsupported(
            "cloudflared did not report a URL in time; check its output or use another method"
        ) from None


def announce(url: PublicUrl, auth: Sequence[str], *, reveal_password: bool = False) -> str:
    """The lines to print: URL, how it is made, and the credentials (password masked unless it was
    generated for this session and must be shown once)."""
    lines = [f"Public URL ({url.method}): {url.url}"]
    for entry in auth:
        user, _, password = entry.partition(":")
        shown = (
            password if reveal_password else "*" * min(len(password), 8) + " (the one you passed to --auth)"
        )
        lines.append(f"  user: {user}  password: {shown}")
    lines += [f"  note: {n}" for n in url.notes]
    return "\n".join(lines)
