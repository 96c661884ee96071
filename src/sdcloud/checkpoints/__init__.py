"""Checkpoint files: headers, architecture detection, hashes, safe pickle loading and the
streaming toolkit (convert, prune, merge, LoRA bake). Nothing here loads a whole model
into RAM unless a caller asks for the tensors."""
