"""LoRA training: datasets (kohya layout), the training loop, kohya-format output, resumable state.

Independent of the job queue and HTTP: the CLI, the API job runner and the bench all call
:func:`sdcloud.training.trainer.train` with a :class:`sdcloud.training.config.TrainConfig`.
Only ``dataset``/``config``/``captions`` are import-light (no torch at module load).
"""
