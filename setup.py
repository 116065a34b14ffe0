"""Install the repository's folders under one import name, ``kiln`` (the rest is pyproject.toml).

``engine/``, ``cli/``, ``tui/`` and ``themes/`` stay top-level folders in the repository and
become ``kiln.engine``, ``kiln.cli``, ``kiln.tui`` and ``kiln.themes`` in site-packages, so
the wheel's only top-level name is ``kiln`` and nothing else installed can collide with them.
The package list is computed here because pyproject.toml cannot rename found packages.
"""

from setuptools import find_namespace_packages, find_packages, setup

FOLDERS = ("engine", "cli", "tui", "themes")

packages = ["kiln"]
package_dir = {"kiln": "kiln"}
for folder in FOLDERS:
    package_dir[f"kiln.{folder}"] = folder
    packages.append(f"kiln.{folder}")
    packages += [f"kiln.{folder}.{name}" for name in find_packages(folder)]

# The shipped model configs are data, not code, but setuptools sees their folders as importable
# and warns once per folder ("Package would be ignored") unless they are listed; listed, their
# files come from the package-data patterns as before.
packages += [
    f"kiln.engine.models.{name}" for name in find_namespace_packages("engine/models", include=["configs*"])
]

# The bundled sample dataset (what `kiln train --demo` trains on) ships as data, so the demo
# works from an installed wheel as from a checkout (its files: package-data in pyproject.toml).
packages.append("kiln.sample_data")
package_dir["kiln.sample_data"] = "sample_data"

setup(packages=packages, package_dir=package_dir)
