"""Outgoing webhooks for job events, signed per Standard Webhooks, durable and retried."""

from sdcloud.webhooks.delivery import WebhookSender, check_webhook_url
from sdcloud.webhooks.signing import SignatureError, sign, verify

__all__ = ["SignatureError", "WebhookSender", "check_webhook_url", "sign", "verify"]
