"""What each dvc.yaml stage really depends on, so `dvc status` can be trusted.

Two checks, both run by the tests (tests/flows/test_dvc_deps.py, tests/flows/test_train_flows.py):
- code: the project modules a stage's flow function can reach by import (statically, through every import
  statement, including the lazy ones inside functions) must each be covered by a dep of the stage;
- data: the files a stage opened while it ran (recorded with `ReadRecorder`) must each be covered by a dep, an
  output or a params file of the stage.

`python -m flows.dvc_deps` prints what is missing, stage by stage (exit 1 if anything is).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.config.dotted import get_dotted
from components.io.atomic import TEMPORARY_NAME

REPO = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("components", "flows")
# The command-line plumbing that starts every stage: not part of any stage's recipe.
ENTRY_MODULES = {"flows.cli", "flows.stages", "flows.deployments", "flows.dvc_deps"}


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...] = field(default=())
    uncached: tuple[str, ...] = field(default=())  # the outs marked `cache: false` (git keeps them, not DVC)


# ----------------------------------------------------------------------------- dvc.yaml, resolved


def _interpolate(text: str, params: dict[str, Any], item: Any = None, key: Any = None) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        return str(item) if name == "item" else str(key) if name == "key" else str(get_dotted(params, name))

    return re.sub(r"\$\{([^}]+)\}", value, text)


def _foreach_items(foreach: Any, params: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(key, item) per generated stage: a list gives (item, item), a dict (key, value); `${a.b}` names params."""
    if isinstance(foreach, str):
        match = re.fullmatch(r"\$\{([^}]+)\}", foreach.strip())
        foreach = get_dotted(params, match.group(1)) if match else foreach
    if isinstance(foreach, dict):
        return list(foreach.items())
    return [(item, item) for item in foreach]


def _paths(entries: list[Any], uncached_only: bool = False) -> list[str]:
    """dvc.yaml lists entries as plain paths or {path: options}; uncached_only: those with `cache: false`."""
    out = []
    for entry in entries or []:
        options = entry if isinstance(entry, dict) else {entry: None}
        out.extend(path for path, opts in options.items()
                   if not uncached_only or (isinstance(opts, dict) and opts.get("cache") is False))
    return out


def load_stages(dvc_yaml: Path = REPO / "dvc.yaml", params: dict[str, Any] | None = None) -> list[Stage]:
    """The stages of dvc.yaml with `${...}` resolved from params (default: the params.yaml beside it) and
    `foreach` expanded (as `name@item`, DVC's naming)."""
    if params is None:
        params = yaml.safe_load((dvc_yaml.parent / "params.yaml").read_text())
    stages = []
    for name, spec in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
        items = [(name, spec, None, None)]
        if "foreach" in spec:
            items = [(f"{name}@{key}", spec["do"], item, key) for key, item in _foreach_items(spec["foreach"], params)]
        for stage_name, body, item, key in items:
            resolve = lambda text: _interpolate(str(text), params, item, key)  # noqa: E731
            kinds = [body.get(kind) for kind in ("outs", "metrics", "plots")]
            outs = [path for entries in kinds for path in _paths(entries)]
            uncached = [path for entries in kinds for path in _paths(entries, uncached_only=True)]
            stages.append(Stage(
                name=stage_name,
                cmd=resolve(body["cmd"]),
                deps=tuple(os.path.normpath(resolve(d)) for d in _paths(body.get("deps"))),
                outs=tuple(os.path.normpath(resolve(o)) for o in outs),
                params=tuple(str(p) if not isinstance(p, dict) else next(iter(p)) for p in body.get("params", [])),
                uncached=tuple(os.path.normpath(resolve(o)) for o in uncached),
            ))
    return stages


def covered(path: str, by: tuple[str, ...] | list[str]) -> bool:
    """A path is covered by an entry equal to it or by a directory above it."""
    path = os.path.normpath(path)
    return any(path == entry or path.startswith(entry.rstrip("/") + "/") for entry in by)


# ----------------------------------------------------------------------------- code deps


def module_file(module: str, root: Path = REPO) -> Path | None:
    parts = module.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(node: ast.AST, root: Path) -> set[str]:
    """Project modules named by every import statement under node (`from pkg import submodule` included)."""
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import):
            found.update(alias.name for alias in sub.names)
        elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
            found.add(sub.module)
            found.update(f"{sub.module}.{alias.name}" for alias in sub.names
                         if module_file(f"{sub.module}.{alias.name}", root))
    return {m for m in found if module_file(m, root)}


def _with_parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ too."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def module_closure(modules: set[str], root: Path = REPO) -> set[str]:
    """Every project module reachable by import from these (module granularity)."""
    seen: set[str] = set()
    todo = [p for m in modules for p in _with_parents(m)]
    while todo:
        module = todo.pop()
        if module in seen or module_file(module, root) is None:
            continue
        seen.add(module)
        tree = ast.parse(module_file(module, root).read_text())
        todo.extend(p for m in imported_modules(tree, root) for p in _with_parents(m))
    return seen


def function_modules(module: str, function: str, root: Path = REPO) -> set[str]:
    """Project modules one function of a module needs: the module's top-level imports it uses, the imports
    inside it, and those of the module-level functions, classes and constants it refers to (recursively).
    Other stages' functions in the same module are not counted: flows/train.py holds several stages."""
    tree = ast.parse(module_file(module, root).read_text())
    top: dict[str, ast.AST] = {}
    bound: dict[str, set[str]] = {}  # name bound by a top-level import -> the modules it names
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        top[name.id] = node
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound.setdefault(alias.asname or alias.name.split(".")[0], set()).add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                bound.setdefault(alias.asname or alias.name, set()).update({node.module, f"{node.module}.{alias.name}"})
    if function not in top:
        raise KeyError(f"{module} has no top-level {function}")
    needed: set[str] = set()
    seen: set[str] = set()
    todo = [function]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = top[name]
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            needed.update(imported_modules(node, root))
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                if sub.id in top and sub.id not in seen:
                    todo.append(sub.id)
                needed.update(bound.get(sub.id, ()))
    needed.discard(module)  # its own file counts, but only the imports this function needs
    return {module, *_with_parents(module)[:-1], *module_closure(needed, root)}


def _only_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def stage_flow(stage: Stage) -> tuple[str, str]:
    """(module, function) of the flow a `talkalign <command>` stage command runs."""
    try:
        from flows.stages import STAGES
    except ImportError:  # TEMP until flows/stages.py lands
        from flows.cli import STAGES

    words = shlex.split(stage.cmd)
    if words[:1] != ["talkalign"] or len(words) < 2 or words[1] not in STAGES:
        raise ValueError(f"stage {stage.name}: command {stage.cmd!r} is not a `talkalign <stage>` command")
    module, _, function = STAGES[words[1]][0].partition(":")
    return module, function


def required_code(stage: Stage, root: Path = REPO) -> list[str]:
    """Project files (relative to root) the stage's code depends on, entry plumbing and empty __init__ left out."""
    files = []
    for module in function_modules(*stage_flow(stage), root=root):
        path = module_file(module, root)
        if module in ENTRY_MODULES or (path.name == "__init__.py" and _only_docstring(path)):
            continue
        files.append(str(path.relative_to(root)))
    return sorted(files)


def missing_code_deps(stages: list[Stage], root: Path = REPO) -> dict[str, list[str]]:
    missing = {s.name: [f for f in required_code(s, root) if not covered(f, s.deps)] for s in stages}
    return {name: files for name, files in missing.items() if files}


def missing_paths(stages: list[Stage], root: Path = REPO) -> dict[str, list[str]]:
    """Deps that do not exist as project code (typos, moved files); data deps made by other stages are skipped."""
    produced = [o for s in stages for o in s.outs]
    out = {}
    for stage in stages:
        gone = [d for d in stage.deps if not (root / d).exists() and not covered(d, produced)
                and not any(covered(o, [d]) for o in produced)]  # models/phase1 holds phase1@* outputs
        if gone:
            out[stage.name] = gone
    return out


# ----------------------------------------------------------------------------- data reads, recorded


class ReadRecorder:
    """Records the project-relative files opened (Python `open`, `os.listdir`, `os.scandir` audit events) while
    each stage runs: `with recorder.stage("ingest"): ingest_flow()`. Native readers that bypass Python's open
    (safetensors' Rust loader, FFmpeg inside PyAV) are not seen; their directories are seen through the other
    files read there (config.json, bundle.json, index.json)."""

    IGNORED = (".prefect", ".venv", "mlflow.db", "mlruns", "mlartifacts", "checkpoints", ".dvc", ".git", "__pycache__")

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.reads: dict[str, set[str]] = {}
        self._current: str | None = None
        sys.addaudithook(self._hook)  # hooks cannot be removed: it does nothing outside `stage()`

    def _hook(self, event: str, args: tuple) -> None:
        if self._current is None or event not in ("open", "os.listdir", "os.scandir"):
            return
        target = args[0] if args else None
        if event == "open" and len(args) > 1 and isinstance(args[1], str) and any(c in args[1] for c in "wxa"):
            return  # writes are outputs
        if event == "open" and len(args) > 2 and isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR):
            return
        if not isinstance(target, (str, bytes, os.PathLike)):
            return
        path = Path(os.fsdecode(target))
        path = (Path.cwd() / path) if not path.is_absolute() else path
        try:
            relative = path.resolve().relative_to(self.root)
        except (ValueError, OSError):
            return
        name = str(relative)
        if (relative.parts and relative.parts[0] not in self.IGNORED and not name.startswith("__editable__")
                and not any(TEMPORARY_NAME.search(str(p)) for p in (relative, *relative.parents))):
            self.reads[self._current].add(name)  # temporaries of atomic writes are the stage's own outputs

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.reads.setdefault(name, set())
        self._current = name
        try:
            yield
        finally:
            self._current = None


def undeclared_reads(recorder: ReadRecorder, stages: list[Stage]) -> dict[str, list[str]]:
    """Files a stage read that are neither a dep, an output nor a params file of it."""
    by_name = {s.name: s for s in stages}
    out = {}
    for name, reads in recorder.reads.items():
        stage = by_name[name]
        allowed = (*stage.deps, *stage.outs, "params.yaml", "dvc.lock")  # dvc.lock: lineage tags of the inputs
        # a directory above a dep or an output may be listed (to create or swap it in); that reads no data
        bad = sorted(r for r in reads if not covered(r, allowed) and not any(covered(a, [r]) for a in allowed))
        if bad:
            out[name] = bad
    return out


def compact(files: list[str], root: Path = REPO) -> list[str]:
    """Files -> the shortest list of paths covering exactly them: a directory whose every module is needed stands
    for its files (`components/io` rather than its five modules)."""
    wanted = set(files)
    out: list[str] = []
    for directory in sorted({str(Path(f).parent) for f in files}, key=lambda d: d.count("/")):
        if covered(directory, out):
            continue
        modules = {str(p.relative_to(root)) for p in (root / directory).rglob("*.py")
                   if not (p.name == "__init__.py" and _only_docstring(p))}
        if modules and modules <= wanted:
            out.append(directory)
    out.extend(f for f in sorted(wanted) if not covered(f, out))
    return sorted(out)


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in PROJECT_PACKAGES


def write_code_deps(dvc_yaml: Path = REPO / "dvc.yaml") -> list[str]:
    """Rewrite each stage's code deps (components/, flows/) in dvc.yaml from the import graph; data deps, comments
    and order of everything else are kept (ruamel round trip). Returns the stages whose deps changed."""
    from ruamel.yaml import YAML

    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 4096
    yaml_rt.indent(mapping=2, sequence=4, offset=2)
    doc = yaml_rt.load(dvc_yaml.read_text())
    resolved: dict[str, list[Stage]] = {}
    for stage in load_stages(dvc_yaml):
        resolved.setdefault(stage.name.partition("@")[0], []).append(stage)
    changed = []
    for name, body in doc["stages"].items():
        body = body["do"] if "foreach" in body else body
        code = compact(sorted({f for s in resolved[name] for f in required_code(s, dvc_yaml.parent)}), dvc_yaml.parent)
        deps = body.get("deps") or []
        data = [d for d in deps if isinstance(d, dict) or not is_code(str(d))]
        if [str(d) for d in deps if not isinstance(d, dict) and is_code(str(d))] != code:
            changed.append(name)
            deps.clear()
            deps.extend([*data, *code])
            body["deps"] = deps
    if changed:
        import io

        buffer = io.StringIO()
        yaml_rt.dump(doc, buffer)
        tmp = dvc_yaml.with_name(dvc_yaml.name + ".tmp")
        tmp.write_text(buffer.getvalue())
        tmp.replace(dvc_yaml)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--write"]:
        changed = write_code_deps()
        print(f"dvc.yaml: code deps rewritten for {', '.join(changed)}" if changed else "dvc.yaml: code deps up to date")
        return 0
    stages = load_stages()
    problems = {"code not listed in deps (python -m flows.dvc_deps --write)": missing_code_deps(stages),
                "deps that do not exist": missing_paths(stages)}
    bad = False
    for title, found in problems.items():
        for stage, files in found.items():
            bad = True
            print(f"{stage}: {title}: {', '.join(files)}")
    if not bad:
        print(f"{len(stages)} stages: every module a stage imports is a dep, every dep exists")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
