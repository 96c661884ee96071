"""Build the server's ``WebhookSender`` from settings (the secret is generated once and kept)."""

from __future__ import annotations

import os
from pathlib import Path

from sdcloud.settings import Settings
from sdcloud.webhooks.delivery import WebhookSender
from sdcloud.webhooks.signing import new_secret

SECRET_FILE = "webhook-secret"


def webhook_secret(settings: Settings) -> str:
    """``settings.webhook_secret``, else the one kept in ``<state>/webhook-secret`` (mode 0600),
    made on first use. Receivers read it from there (or set SDCLOUD_WEBHOOK_SECRET)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    path: Path = settings.state_path / SECRET_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = new_secret()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
    return secret


def make_sender(settings: Settings) -> WebhookSender:
    return WebhookSender(settings.state_path / "webhooks.sqlite", webhook_secret(settings),
                         allow_private=settings.webhook_allow_private)
