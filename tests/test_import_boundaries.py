"""Dependencies point one way (CONVENTIONS.md, convention 1): checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

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
    for forbidden in ("ray", "pandas", "pyarrow", "matplotlib", "tqdm", "optuna"):
        assert forbidden not in loaded, f"{statement!r} imported {forbidden}"
