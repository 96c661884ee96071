"""Generation engine on diffusers. Knows nothing of HTTP, queues or storage."""
