"""Package discovery for setuptools (everything else is in pyproject.toml).

The folders plugin/ and tui/ install as ``testmon_live.plugin`` and ``testmon_live.tui``
(``package-dir`` in pyproject.toml), and examples/demo as ``testmon_live.demo_suite`` so
that ``testmon demo`` finds its suite in a wheel. setuptools' own discovery cannot prefix
the names it finds, so the packages are found here: every folder with an ``__init__.py``
under plugin/ and tui/, whatever subpackages they grow, and no hand-kept list.
"""

from setuptools import find_packages, setup

ROOTS = {"plugin": "testmon_live.plugin", "tui": "testmon_live.tui"}

packages = ["testmon_live.demo_suite"]
for folder, name in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages)
