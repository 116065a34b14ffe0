"""Fix-up: repair what the quality checks find, never touching an original.

:mod:`ops` holds the operations (pure image -> image), :mod:`upscaler` the super-resolution
models (spandrel, tiled), :mod:`plan` what each flagged image needs, :mod:`write` applying a
plan to a new dataset folder or in place with the originals kept (and undo).
"""
