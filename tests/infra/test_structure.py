"""Structure the style guide promises: components register outputs, nothing is declared at import time,
config is read in one place, component arguments are frozen keyword-only dataclasses."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

from infra.mocks import run_program, stack_config

INFRA = Path(__file__).resolve().parents[2] / "infra"
MODULES = sorted(p for p in INFRA.glob("*.py") if p.name != "__init__.py")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _is_component(node: ast.ClassDef) -> bool:
    return any(ast.unparse(base) in ("pulumi.ComponentResource", "ComponentResource") for base in node.bases)


COMPONENTS = [(path, node) for path in MODULES for node in ast.walk(_tree(path))
              if isinstance(node, ast.ClassDef) and _is_component(node)]


def test_there_are_components_to_check() -> None:
    names = {node.name for _, node in COMPONENTS}
    assert {"Network", "Cluster", "Registry", "ServiceImage"} <= names


@pytest.mark.parametrize("path,node", COMPONENTS, ids=[f"{p.stem}.{n.name}" for p, n in COMPONENTS])
def test_component_constructor_ends_with_register_outputs(path: Path, node: ast.ClassDef) -> None:
    init = next(f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    last = init.body[-1]
    assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) \
        and ast.unparse(last.value.func) == "self.register_outputs", \
        f"{path.name}:{node.name}.__init__ must end with self.register_outputs({{...}})"
    assert [a.arg for a in init.args.args] == ["self", "name", "args", "opts"], f"{node.name}(name, args, opts=None)"


@pytest.mark.parametrize("path,node", COMPONENTS, ids=[f"{p.stem}.{n.name}" for p, n in COMPONENTS])
def test_component_has_a_mesh_type_token(path: Path, node: ast.ClassDef) -> None:
    supers = [call for call in ast.walk(node) if isinstance(call, ast.Call)
              and ast.unparse(call.func) == "super().__init__"]
    assert supers, f"{node.name} never calls super().__init__"
    token = supers[0].args[0]
    assert isinstance(token, ast.Constant) and token.value.startswith("mesh:") \
        and token.value.endswith(f":{node.name}"), ast.unparse(token)


ARGS = [(path, node) for path in MODULES for node in ast.walk(_tree(path))
        if isinstance(node, ast.ClassDef) and node.name.endswith("Args")]


@pytest.mark.parametrize("path,node", ARGS, ids=[f"{p.stem}.{n.name}" for p, n in ARGS])
def test_component_args_are_frozen_keyword_only_dataclasses(path: Path, node: ast.ClassDef) -> None:
    decorator = next(d for d in node.decorator_list if "dataclass" in ast.unparse(d))
    keywords = {k.arg: ast.literal_eval(k.value) for k in getattr(decorator, "keywords", [])}
    assert keywords.get("frozen") is True and keywords.get("kw_only") is True, ast.unparse(decorator)


# mocks.py stands in for the engine and sets the config it hands over; config.py is the one reader.
@pytest.mark.parametrize("path", [p for p in MODULES if p.name not in ("config.py", "mocks.py")],
                         ids=lambda p: p.name)
def test_only_config_reads_pulumi_config(path: Path) -> None:
    source = ast.unparse(_tree(path))
    for forbidden in ("pulumi.Config(", "runtime.config", "get_config(", "settings_from_pulumi()"):
        if path.name == "program.py" and forbidden == "settings_from_pulumi()":
            continue  # main() is where the program reads its settings, once
        assert forbidden not in source, f"{path.name} reads config ({forbidden}); parse it in infra/config.py"


def _import_fresh(paths: list[Path]) -> None:
    """Execute each module as a new copy (the cached ones in sys.modules are left alone)."""
    for path in paths:
        spec = importlib.util.spec_from_file_location(f"import_probe_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
        try:
            spec.loader.exec_module(module)
        finally:
            del sys.modules[spec.name]


def test_importing_infra_declares_no_resources() -> None:
    run = run_program("dev", stack_config("dev"), program=lambda: _import_fresh(MODULES))
    assert run.resources == [], [r.name for r in run.resources]
    assert run.outputs == {}


def test_import_probe_sees_a_resource_declared_at_import(tmp_path: Path) -> None:
    module = tmp_path / "careless.py"
    module.write_text("import pulumi_aws as aws\nbucket = aws.s3.Bucket('declared-at-import')\n")
    run = run_program("dev", stack_config("dev"), program=lambda: _import_fresh([module]))
    assert [r.name for r in run.resources] == ["declared-at-import"]


def test_main_module_is_two_lines() -> None:
    lines = [line for line in (INFRA.parent / "__main__.py").read_text().splitlines() if line.strip()]
    assert lines == ["from infra.program import main", "main()"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 450, f"{path.name}: split it by concern"
