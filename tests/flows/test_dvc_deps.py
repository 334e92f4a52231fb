"""dvc.yaml's deps are true by construction (flows/dvc_deps.py): every project module a stage's flow can import
is a dep of that stage, exactly as the generator writes them, and every dep exists. The data side (files a
stage opens while it runs) is checked in tests/flows/test_train_flows.py, where every stage really runs."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import yaml

from flows.dvc_deps import (
    REPO,
    ReadRecorder,
    Stage,
    compact,
    covered,
    function_modules,
    load_stages,
    missing_code_deps,
    missing_paths,
    undeclared_reads,
    write_code_deps,
)


def test_every_stage_lists_every_module_it_imports_and_every_dep_exists():
    stages = load_stages()
    assert {s.name for s in stages} >= {"synthesize", "phase1@reshape", "dpo", "tlpo", "evaluate", "register"}
    assert missing_code_deps(stages) == {}, "run `python -m flows.dvc_deps --write`"
    assert missing_paths(stages) == {}


def test_the_committed_dvc_yaml_is_what_the_generator_writes(tmp_path):
    """No stale code deps either: rewriting the committed file changes nothing."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    before = (tmp_path / "dvc.yaml").read_text()
    # The generator reads the project's modules from the file's folder: link the packages in.
    for package in ("components", "flows"):
        (tmp_path / package).symlink_to(REPO / package)
    assert write_code_deps(tmp_path / "dvc.yaml") == []
    assert (tmp_path / "dvc.yaml").read_text() == before


def test_a_dropped_dep_is_reported_and_written_back(tmp_path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    for package in ("components", "flows"):
        (tmp_path / package).symlink_to(REPO / package)
    doc = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    deps = doc["stages"]["phase2"]["deps"]
    dropped = next(d for d in deps if str(d).startswith("flows/"))
    deps.remove(dropped)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    missing = missing_code_deps(load_stages(tmp_path / "dvc.yaml"), tmp_path)
    assert set(missing) == {"phase2"} and any(covered(f, [dropped]) for f in missing["phase2"])
    assert write_code_deps(tmp_path / "dvc.yaml") == ["phase2"]
    assert missing_code_deps(load_stages(tmp_path / "dvc.yaml"), tmp_path) == {}


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_import_graph_per_stage_function(tmp_path):
    """Lazy imports inside functions count; another stage's function in the same flow module does not;
    `from package import module` and transitive imports are followed."""
    _write(tmp_path, "components/__init__.py", '"""docstring only"""\n')
    _write(tmp_path, "components/a.py", "from components import b\n")
    _write(tmp_path, "components/b.py", "def f():\n    from components.c import g\n")
    _write(tmp_path, "components/c.py", "g = 1\n")
    _write(tmp_path, "components/d.py", "x = 1\n")
    _write(tmp_path, "flows/__init__.py", "")
    _write(tmp_path, "flows/stage.py", """
        from components.d import x

        def helper():
            from components.a import something
            return something

        def first_flow():
            return helper()

        def second_flow():
            return x
        """)
    first = function_modules("flows.stage", "first_flow", tmp_path)
    second = function_modules("flows.stage", "second_flow", tmp_path)
    assert {"flows.stage", "components.a", "components.b", "components.c"} <= first and "components.d" not in first
    assert "components.d" in second and "components.a" not in second


def test_compact_uses_a_directory_only_when_every_module_in_it_is_needed(tmp_path):
    _write(tmp_path, "components/io/__init__.py", "")
    _write(tmp_path, "components/io/a.py", "")
    _write(tmp_path, "components/io/b.py", "")
    assert compact(["components/io/a.py", "components/io/b.py"], tmp_path) == ["components/io"]
    assert compact(["components/io/a.py"], tmp_path) == ["components/io/a.py"]


def test_reads_outside_deps_outs_and_params_are_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("data/in/a.json", "models/secret/config.json", "params.yaml"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text("{}")
    recorder = ReadRecorder(tmp_path)
    with recorder.stage("s"):
        Path("data/in/a.json").read_text()
        Path("models/secret/config.json").read_text()
        Path("params.yaml").read_text()
        Path("data/out/x.json").parent.mkdir(parents=True, exist_ok=True)
        Path("data/out/x.json").write_text("written, not read")
    Path("models/secret/config.json").read_text()  # outside any stage: not recorded
    stage = Stage(name="s", cmd="talkalign s", deps=("data/in",), outs=("data/out",))
    assert recorder.reads["s"] == {"data/in/a.json", "models/secret/config.json", "params.yaml"}
    assert undeclared_reads(recorder, [stage]) == {"s": ["models/secret/config.json"]}
