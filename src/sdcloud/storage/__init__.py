"""Persistent stores and the outbox: every image is safe on local disk first, then copied to
a store (a mounted path, the Hugging Face Hub, S3) in the background.

Nothing here imports torch; the CLI's ``storage`` and ``models pull|push`` commands use it.
"""

from sdcloud.storage.base import Store
from sdcloud.storage.outbox import Outbox
from sdcloud.storage.stores import open_store, parse_store_url

__all__ = ["Outbox", "Store", "open_store", "parse_store_url"]
