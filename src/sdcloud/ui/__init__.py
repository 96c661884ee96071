"""sdcloud's web UI (Gradio Blocks on the API's FastAPI app)."""

from sdcloud.ui.app import UI_CSS, build_ui, mount_ui

__all__ = ["UI_CSS", "build_ui", "mount_ui"]
