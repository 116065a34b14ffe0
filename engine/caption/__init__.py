"""Captions: BLIP and WD14 captioners from local model folders, tag operations, undo, lint."""
