"""Model upscalers (ESRGAN, Real-ESRGAN, SwinIR, DAT, ...) from the A1111 model folders:
listing (``registry``), loading (``loading``, our ``archs`` or spandrel) and tiled runs (``tiling``)."""

from sdcloud.upscalers.registry import FILTERS, UpscalerFile, Upscalers

__all__ = ["FILTERS", "UpscalerFile", "Upscalers"]
