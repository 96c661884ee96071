"""One module per ``sdcloud`` command group. Each module defines
``register(subparsers)`` and must stay cheap to import: torch, diffusers and other heavy
libraries are imported inside the command's function, never at module level, so
``sdcloud --help``, ``plan``, ``storage`` and ``ckpt`` start fast."""
