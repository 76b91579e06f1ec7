"""Every command's --help: each of its flags (taken from the parser itself) is listed with a help text, and
every flag the README uses with that command exists."""
import re

import pytest

from tests.conftest import ROOT, run_script

COMMANDS = {"pipeline/train.py": "pipeline.train", "pipeline/prepare.py": "pipeline.prepare",
            "pipeline/evaluate.py": "pipeline.evaluate", "export/save.py": "export.save",
            "infer/encode.py": "infer.encode", "infer/serve.py": "infer.serve"}


def parser_flags(module: str) -> dict[str, str]:
    """{option string: its help} of every option of `module`'s build_parser()."""
    import importlib

    parser = importlib.import_module(module).build_parser()
    return {flag: action.help or "" for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("script", COMMANDS)
def test_help_lists_every_flag_with_its_meaning(script):
    flags = parser_flags(COMMANDS[script])
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    for flag, help_text in flags.items():
        assert re.search(rf"(^|[\s,\[]){re.escape(flag)}([\s,=\]]|$)", result.stdout, re.M), (script, flag)
        assert flag in ("-h", "--help") or len(help_text) > 10, (script, flag, "has no help text")


@pytest.mark.parametrize("script", COMMANDS)
def test_every_flag_the_readme_and_docs_use_exists(script):
    flags = set(parser_flags(COMMANDS[script]))
    manual = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    used = set()
    for line in manual.splitlines():
        if f"{script} " in line or line.rstrip().endswith(script):
            after = line.split(script, 1)[1].split("#", 1)[0].split("&&", 1)[0].split("|", 1)[0]
            used |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[co])(?![\w-])", after))
    assert used, f"the README shows no use of {script}"
    assert used <= flags, (script, sorted(used - flags))


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert f"\n{command}\n" in readme
