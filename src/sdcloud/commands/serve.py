"""``sdcloud serve``: the web UI, the A1111-compatible API and the job queue on one port.

Secure by default: a server reachable from other machines gets a generated password
(printed once) unless ``--auth``, ``--auth-file`` or ``--api-token`` is given, or
``--insecure`` says to go without.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdcloud.commands._common import load_settings
from sdcloud.errors import BadRequest
from sdcloud.i18n import _


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the web UI and the A1111-compatible API",
        description="Run the web UI (/), the AUTOMATIC1111-compatible API (/sdapi/v1), "
        "sdcloud's queue API (/api) and the API docs (/docs).",
    )
    p.add_argument("--model", help="checkpoint to load at start (a name from 'sdcloud models list', or demo)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all, needs auth)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument(
        "--auth",
        action="append",
        metavar="USER:PASS",
        help="HTTP Basic login for the UI and API (repeatable, or comma-separated)",
    )
    p.add_argument(
        "--auth-file", metavar="FILE", help="file of USER:PASS entries (one per line or comma-separated)"
    )
    p.add_argument("--api-token", metavar="TOKEN", help="bearer token accepted instead of a login")
    p.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow serving beyond this machine without auth (not recommended)",
    )
    p.add_argument(
        "--allow-batch-dir",
        action="append",
        metavar="DIR",
        help="a folder img2img Batch may read images from and write to, besides the data folder "
        "(repeatable; env SDCLOUD_BATCH_DIRS, separated by ':')",
    )
    p.add_argument(
        "--allow-url-images",
        action="store_true",
        default=None,
        help="accept http(s) URLs as init images (never local or private addresses)",
    )
    p.add_argument("--store", help="persistent store for images and the session: a folder, "
                   "hf://<user>/<repo> or s3://<bucket>/<prefix>; env SDCLOUD_STORE")
    p.add_argument("--store-endpoint", help="S3-compatible endpoint URL (R2, B2, Wasabi, MinIO); "
                   "env SDCLOUD_STORE_ENDPOINT")
    p.add_argument("--price-per-hour", type=float, metavar="PRICE",
                   help="what this machine costs per hour (default: the catalog's price for the detected "
                   "platform and GPU), for the cost meter in the UI and /api/session")
    p.add_argument("--budget", type=float, help="stop gracefully (finish the running job, upload every "
                   "image) before the spend reaches this amount; needs a known price")
    p.add_argument("--max-hours", type=float, metavar="HOURS",
                   help="stop gracefully before this many hours (warns 15 minutes ahead)")
    p.add_argument("--webhook-url", metavar="URL", help="default webhook for job events (a request's "
                   "webhook_url wins); env SDCLOUD_WEBHOOK_URL")
    p.add_argument("--webhook-allow-private", action="store_true", default=None,
                   help="allow webhook URLs on loopback/private addresses (refused by default: SSRF)")
    p.add_argument("--broker", metavar="URL", help="hand generation to 'sdcloud worker' processes over "
                   "Celery: redis://..., rediss://... (TLS), or 'local' (start a loopback redis-server "
                   "with AOF here); default: run jobs in this process")
    p.add_argument("--nowebui", action="store_true", help="API only, no web UI (like A1111's --nowebui)")
    p.add_argument(
        "--public",
        action="store_true",
        help="make a public URL: the platform's own proxy (Colab, Paperspace 6006, RunPod, Vast), else a "
        "Gradio share link or cloudflared where the platform allows tunnels; always behind auth",
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve)


def _check_port_free(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise BadRequest(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port") from None


def _timeline_text(timeline: object) -> str:
    from sdcloud.startup import LABELS

    return " · ".join(f"{_(LABELS[p.name])} {p.seconds:.2f} s" for p in timeline.phases()  # type: ignore[attr-defined]
                      if p.name in LABELS)


def cmd_serve(args: argparse.Namespace) -> int:
    from sdcloud.startup import StartupTimeline, check_install, import_heavy

    timeline = StartupTimeline()
    with timeline.phase("install_check") as phase:
        versions = check_install(ui=not args.nowebui)
        phase["detail"] = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("torch", "diffusers", "gradio"))
    from sdcloud.api.security import exposure_auth, read_auth_file

    auth: list[str] = [e.strip() for entry in args.auth or () for e in entry.split(",") if e.strip()]
    if args.auth_file:
        try:
            auth += read_auth_file(Path(args.auth_file).read_text())
        except OSError as err:
            raise BadRequest(f"cannot read auth file {args.auth_file}: {err.strerror}") from None
    settings = load_settings(
        args,
        model=args.model,
        host=args.host,
        port=args.port,
        auth=tuple(auth) or None,
        api_token=args.api_token,
        insecure=args.insecure,
        allow_url_images=args.allow_url_images,
        batch_dirs=args.allow_batch_dir,
        store=args.store,
        store_endpoint=args.store_endpoint,
        price_per_hour=args.price_per_hour,
        budget=args.budget,
        max_hours=args.max_hours,
        webhook_url=args.webhook_url,
        webhook_allow_private=args.webhook_allow_private,
        broker=args.broker,
    )
    detected = None
    if args.public:
        from sdcloud.cloud.platforms import detect
        from sdcloud.cloud.public_url import required_port

        detected = detect()
        port = required_port(detected, settings.port)
        if port != settings.port:
            print(_("sdcloud: {platform} publishes port {port}; serving there").format(
                platform=detected.profile.name, port=port), flush=True)
            settings = settings.replace(port=port)
    settings, password = exposure_auth(settings, public_url=args.public)
    if password:
        print(
            _("sdcloud: this server is reachable beyond this machine and no --auth was given.\n"
              "  Log in as user 'sdcloud' with password: {password}\n"
              "  (shown once; pass --auth user:pass or --api-token to choose your own)").format(password=password),
            flush=True,
        )
    elif settings.insecure and not (settings.auth or settings.api_token):
        print(
            _("sdcloud: WARNING: serving on {host} without auth (--insecure): anyone who can reach "
              "this port can use your GPU and read your images").format(host=settings.host),
            file=sys.stderr,
            flush=True,
        )

    _check_port_free(settings.host, settings.port)
    with timeline.phase("imports") as phase:
        phase["detail"] = import_heavy(ui=not args.nowebui)
    import uvicorn

    from sdcloud.api.app import create_app

    app = create_app(settings, ui=not args.nowebui, public_url=args.public, startup=timeline)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level=args.log_level, timeout_graceful_shutdown=10
        )
    )
    session = app.state.services.session
    # the session guard's graceful stop (budget, --max-hours, platform limit) ends with this
    session.on_exit = lambda _code: setattr(server, "should_exit", True)
    try:
        app.state.services.start()  # load the model now: a bad --model is a clear error
    except BaseException:
        app.state.services.stop()
        raise
    print(_("sdcloud: ready {seconds} s after start: {phases}").format(
        seconds=f"{timeline.to_dict()['ready_s']:.1f}", phases=_timeline_text(timeline)), flush=True)
    shown = "localhost" if settings.host in ("127.0.0.1", "::1") else settings.host
    print(_("sdcloud: serving on {url} (API docs at /docs)").format(url=f"http://{shown}:{settings.port}/"),
          flush=True)
    public = None
    if detected is not None:
        import os

        from sdcloud.cloud.public_url import announce, open_public_url

        try:
            public = open_public_url(detected, settings.port, os.environ, settings.auth, settings.api_token,
                                     host=settings.host)
        except BaseException:
            app.state.services.stop()
            raise
        print(announce(public, settings.auth, reveal_password=password is not None), flush=True)
    try:
        server.run()
    finally:
        if public is not None:
            public.close()
    return session.exit_code or 0
