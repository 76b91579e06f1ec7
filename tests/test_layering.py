"""The layers: infer/ reads only pipeline.core, pipeline.core reads nothing above it, and pipeline/ imports
nothing from export/ or infer/."""
import re
import subprocess
import sys

from tests.conftest import ROOT

IMPORTS = re.compile(r"^\s*(?:from|import)\s+([\w.]+)", re.M)


def imported(folder: str) -> dict[str, set[str]]:
    """Each module under `folder` -> the modules it imports (top-level or inside functions)."""
    return {str(p.relative_to(ROOT)): set(IMPORTS.findall(p.read_text(encoding="utf-8")))
            for p in (ROOT / folder).rglob("*.py")}


def test_inference_imports_only_the_core_of_pipeline():
    offenders = {path: sorted(m for m in modules if m.startswith("pipeline") and not m.startswith("pipeline.core"))
                 for path, modules in imported("infer").items()}
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_the_core_imports_nothing_from_the_rest_of_the_project():
    offenders = {path: sorted(m for m in modules if m.split(".")[0] in ("export", "infer", "pipeline")
                              and not m.startswith("pipeline.core"))
                 for path, modules in imported("pipeline/core").items()}
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_inference_loads_no_training_module():
    """infer/ runs where only the export is: importing it loads nothing of pipeline/ outside the core."""
    probe = ("import sys, infer.encoder, infer.serve, infer.encode, infer.backends.paddle_inference, "
             "infer.backends.onnx_runtime; "
             "print(sorted(m for m in sys.modules if m.startswith('pipeline.') and not m.startswith('pipeline.core')))")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_training_package_imports_nothing_from_export_or_infer():
    """pipeline/ is below export/ and infer/: what both need (the Hugging Face mapping, the export format)
    lives in pipeline.core."""
    offenders = {path: sorted(m for m in modules if m.split(".")[0] in ("export", "infer"))
                 for path, modules in imported("pipeline").items()}
    assert {path: mods for path, mods in offenders.items() if mods} == {}
