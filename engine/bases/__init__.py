"""Choose the base: a catalog of the user's checkpoints ranked by text-encoder corruption.

:mod:`identify` finds and identifies checkpoints (headers only, a hash once), :mod:`styles`
holds the caption style each base understands (the user's note, the guide's five bases, a
measured hint), :mod:`catalog` keeps it all with each base's TEC, measured once per file.
"""
