"""Dependencies point one way (CONVENTIONS.md, convention 1): checked in fresh interpreters."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _modules_after_import(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    ["import comet_model", "import comet_model.data", "import comet_model.config"],
)
def test_comet_model_imports_no_harness_or_plotting(statement: str) -> None:
    loaded = _modules_after_import(statement)
    for forbidden in ("ray", "pandas", "pyarrow", "matplotlib", "optuna"):
        assert forbidden not in loaded, f"{statement!r} imported {forbidden}"


def test_comet_model_source_never_imports_tqdm() -> None:
    # torch itself may load tqdm (via torch.hub) when it is installed, so check our own sources.
    root = Path(__file__).resolve().parents[1] / "comet_model"
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"^\s*(import|from)\s+tqdm", p.read_text(), flags=re.M)
    ]
    assert not offenders
