"""Run mypy over the installed layout: `python -m tests.typecheck` (also tests/test_types.py).

mypy does not follow setuptools' editable-install finder, so it cannot see that
`lmg.protocol` is the folder protocol/. This builds a throw-away tree of symlinks,
`<tmp>/lmg/<layer> -> <repo>/<layer>`, the shape of the built wheel, and checks the
package `lmg` there with the settings in pyproject.toml ([tool.mypy]).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("protocol", "storage", "server", "simulators", "bench")


def run_mypy() -> tuple[int, str]:
    """(exit status, report with paths as in the repository); status 0 means no errors."""
    with tempfile.TemporaryDirectory(prefix="lmg-mypy-") as tmp:
        package = pathlib.Path(tmp) / "lmg"
        package.mkdir()
        for layer in LAYERS:
            (package / layer).symlink_to(REPO / layer, target_is_directory=True)
        done = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
             "--cache-dir", str(REPO / ".mypy_cache"), "-p", "lmg"],
            cwd=tmp, capture_output=True, text=True, check=False)
        return done.returncode, (done.stdout + done.stderr).replace("lmg/", "")


if __name__ == "__main__":
    status, report = run_mypy()
    print(report, end="")
    sys.exit(status)
