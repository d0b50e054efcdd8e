"""benchmarks/pipeline.py times exactly the README's command-line pipeline."""

import importlib.util
import pathlib
import shlex

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _benchmark():
    spec = importlib.util.spec_from_file_location("pipeline_benchmark", ROOT / "benchmarks" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme_pipeline():
    """The commands of the README's command-line pipeline section, as argv lists without `python`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## The command-line pipeline"):]
    block = section[section.index("```bash") + len("```bash"):]
    block = block[: block.index("```")].replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in block.strip().splitlines()]


def test_the_benchmark_runs_the_readme_pipeline():
    commands = _benchmark().pipeline_commands("runs/pipeline")
    assert [name for name, _ in commands] == ["search", "train", "export", "latency"]
    assert [argv for _, argv in commands] == _readme_pipeline()
