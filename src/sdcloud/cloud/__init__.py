"""Cloud platforms: detection and profiles, doctor checks, public URLs, the cost catalog and
planner, and the live cost meter. Nothing here imports torch."""
