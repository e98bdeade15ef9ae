"""Dependencies point one way (CONVENTIONS.md, convention 1): checked in fresh interpreters.

Every module file of each package is imported (found on disk, so a new file cannot hide behind
a lazy ``__init__``), then the modules the interpreter loaded are checked against what the
package may depend on: ``comet_model`` (the library) loads no harness, dataframe or plotting
library; ``search_spaces`` and ``reports`` load no torch, no Ray and none of the project's model
or harness code.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "comet_model": ("ray", "pandas", "pyarrow", "matplotlib", "optuna", "ablations", "reports",
                    "search_spaces"),
    "search_spaces": ("torch", "ray", "comet_model", "ablations", "reports", "pandas"),
    "reports": ("torch", "ray", "comet_model", "ablations"),
    "ablations": (),
}  # fmt: skip


def module_names(package: str) -> list[str]:
    """Dotted names of every module file of ``package`` (``__init__`` as the package itself)."""
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def _modules_after_import(modules: list[str]) -> set[str]:
    code = "import importlib, json, sys\n"
    code += f"for name in {modules!r}:\n    importlib.import_module(name)\n"
    code += "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_package_has_its_module_files_listed() -> None:
    names = module_names("comet_model")
    for expected in ("comet_model.continual.pipeline", "comet_model.nn.model",
                     "comet_model.eval.downstream", "comet_model.data.build.audio"):  # fmt: skip
        assert expected in names
    assert len(names) > 30


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_every_module_file_imports_within_its_boundary(package: str) -> None:
    loaded = _modules_after_import(module_names(package))
    top = {name.split(".")[0] for name in loaded}
    bad = sorted(set(FORBIDDEN[package]) & top)
    assert not bad, f"importing every module of {package} loaded {bad}"


def test_comet_model_source_never_imports_tqdm() -> None:
    # torch itself may load tqdm (via torch.hub) when it is installed, so check our own sources.
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "comet_model").rglob("*.py")
        if re.search(r"^\s*(import|from)\s+tqdm", p.read_text(), flags=re.M)
    ]
    assert not offenders
