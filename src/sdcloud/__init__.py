"""sdcloud: Stable Diffusion on GPUs rented by the hour."""

__version__ = "0.1.0"
