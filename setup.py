"""The package list of the wheel, found on disk (the rest of the build is in pyproject.toml).

`src/bond` is the `bond` package. `agents/`, `gateway/` and `topics/` live at the top of the
repository, where the dataflow reads from the folders, and ship as `bond.agents`,
`bond.gateway` and `bond.topics` through `package-dir` in pyproject.toml. setuptools' own
`packages.find` cannot name a folder's packages under another prefix, so they are listed here:
a new sub-folder of any of them ships without an edit.
"""

from setuptools import find_namespace_packages, setup

MAPPED = ("agents", "gateway", "topics")
PYCACHE = ["__pycache__", "*.__pycache__"]

packages = find_namespace_packages("src", include=["bond", "bond.*"], exclude=PYCACHE)
for top in MAPPED:
  found = find_namespace_packages(".", include=[top, f"{top}.*"], exclude=PYCACHE)
  packages += [f"bond.{name}" for name in found]

setup(packages=packages)
