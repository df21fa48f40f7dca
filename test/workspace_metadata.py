"""Package metadata for the source tree, for pytest runs without a built and sourced workspace.

Entry points (koch_runtime's policy plugins: `koch_runtime.policies` in kuavo_train's setup.py) live in
installed package metadata, not in the source. The colcon build writes it (`build/<pkg>/<pkg>.egg-info`,
on PYTHONPATH once `scripts/env.sh` is sourced), so a sourced workspace needs nothing from here. Without
one, test/conftest.py puts each package's source folder on sys.path, which makes the code importable but
not its entry points; this writes the missing metadata from each package's own setup.py (setuptools'
`egg_info`, the same command the build runs) into a temporary folder on sys.path, so importlib.metadata
finds what an installed workspace would declare.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path


def is_installed(name: str) -> bool:
    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


def provide_package_metadata(package_dirs: list[Path]) -> list[str]:
    """Write metadata for each package folder (holding a setup.py) whose distribution is not installed,
    and put it on sys.path for this process. Returns the names written."""
    missing = [d for d in package_dirs if (d / "setup.py").is_file() and not is_installed(d.name)]
    if not missing:
        return []
    egg_base = Path(tempfile.mkdtemp(prefix="koch-test-metadata-"))
    atexit.register(shutil.rmtree, egg_base, True)
    runs = [(d, subprocess.Popen([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(egg_base)],
                                 cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            for d in missing]
    for package_dir, run in runs:
        output, _ = run.communicate()
        if run.returncode != 0:
            raise RuntimeError(f"`setup.py egg_info` failed in {package_dir} (exit {run.returncode}):\n{output}")
    sys.path.append(str(egg_base))
    return [d.name for d in missing]
