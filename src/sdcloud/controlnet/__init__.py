"""ControlNet in sd-webui-controlnet's vocabulary: units from ``alwayson_scripts.controlnet``
(``units``), weight-free preprocessors (``preprocessors``), model files from ``models/ControlNet``
loaded as diffusers ``ControlNetModel`` (``models``) and the residuals added at each UNet call
(``apply``)."""
