"""`make mutate`: mutmut on the modules whose bugs users notice first, with their fast tests only.

mutmut names a mutant after the module path of its file, and the runtime is imported as
``apinode`` (from ``services/apinode``), so the run happens in a staged copy (``build/mutate``)
where ``infra/`` and ``apinode/`` sit side by side, with the stack files, the service
definitions and the in-process tests. Tests that start server processes or run the whole Pulumi
program are left out: mutmut only sees what runs in its own process, and they would make each
mutant cost seconds. The survivors are written to ``build/mutate/survivors.md``; the reviewed
list, with the reason each one is kept, is docs/mutation.md.

Usage: python tools/mutate.py [module ...]   (default: all six; e.g. ``infra/config.py``)
       python tools/mutate.py --report       (rewrite survivors.md from the last run)
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "mutate"
MODULES = {
    "infra/config.py": "infra/config.py",
    "infra/policies.py": "infra/policies.py",
    "apinode/enrich.py": "services/apinode/apinode/enrich.py",
    "apinode/auth.py": "services/apinode/apinode/auth.py",
    "apinode/features.py": "services/apinode/apinode/features.py",
    "apinode/handlers.py": "services/apinode/apinode/handlers.py",
}
# The fast tests of those modules (each runs in well under a second per mutant).
TESTS = [
    "tests/infra/test_config_rules.py",
    "tests/infra/test_quantities_and_ports.py",
    "tests/infra/test_config_bounds.py",
    "tests/services/test_objects.py",
    "tests/services/test_enrichment_semantics.py",
    "tests/services/test_lenient_enrichment.py",
    "tests/services/test_feature_values.py",
    "tests/services/test_inprocess_errors.py",
]
HELPERS = [
    "tests/apinode_proc.py",
    "tests/infra/conftest.py",
    "tests/services/conftest.py",
    "tests/services/apinode_fixtures.py",
    "tests/services/inprocess.py",
    "Pulumi.yaml",
    "Pulumi.dev.yaml",
    "Pulumi.prod.yaml",
    "services/customer-features/service.yaml",
    "services/customer-scoring/service.yaml",
]
# Server processes (remote enrichment) and whole-program runs: covered by `make test`, not here.
DESELECT = "not remote and not declared_policies"

PYPROJECT = """\
[tool.pytest.ini_options]
pythonpath = ["."]
addopts = "-p no:cacheprovider -p no:randomly"
filterwarnings = ["ignore::DeprecationWarning"]

[tool.mutmut]
source_paths = ["infra", "apinode"]
only_mutate = {only}
pytest_add_cli_args = ["-q", "-x", "-k", "{deselect}"]
pytest_add_cli_args_test_selection = {tests}
also_copy = ["Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml", "services", "certs", "flow"]
"""


def stage(modules: list[str]) -> None:
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    shutil.copytree(ROOT / "infra", STAGE / "infra", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "services/apinode/apinode", STAGE / "apinode",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for extra in ("certs", "flow"):  # CA bundles the stack files name; the flow the fixtures build with
        if (ROOT / extra).is_dir():
            shutil.copytree(ROOT / extra, STAGE / extra, ignore=shutil.ignore_patterns("__pycache__"))
    for relative in TESTS + HELPERS:
        target = STAGE / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    quoted = lambda items: "[" + ", ".join(f'"{item}"' for item in items) + "]"  # noqa: E731
    (STAGE / "pyproject.toml").write_text(PYPROJECT.format(only=quoted(modules), deselect=DESELECT,
                                                           tests=quoted(TESTS)))


def main(argv: list[str]) -> int:
    report_only = "--report" in argv  # rewrite survivors.md from the last run, without running again
    argv = [arg for arg in argv if arg != "--report"]
    modules = argv or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    returncode = 0
    if not report_only:
        stage(modules)
        children = os.environ.get("MUTATE_CHILDREN", "2")
        log = STAGE / "mutmut.log"
        print(f"mutmut on {', '.join(modules)}; progress in {log.relative_to(ROOT)}", flush=True)
        with log.open("w") as out:
            returncode = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", children],
                                        cwd=STAGE, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    results = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=STAGE, env=env,
                             capture_output=True, text=True)
    survivors = [line.split(":")[0].strip() for line in results.stdout.splitlines()
                 if line.strip().endswith(": survived")]
    untested = [line.split(":")[0].strip() for line in results.stdout.splitlines()
                if line.strip().endswith(": no tests")]
    wording, other = [], []
    for name in survivors:
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=STAGE, env=env,
                              capture_output=True, text=True).stdout
        (wording if _wording_only(diff) else other).append((name, diff))
    lines = [f"# Surviving mutants: {len(survivors)}", "",
             f"## Wording only ({len(wording)}): a message text changed, its key, type and status did not", ""]
    lines += [f"- `{name}`" for name, _ in wording]
    lines += ["", f"## To review ({len(other)})", ""]
    for name, diff in other:
        lines += [f"### {name}", "", "```diff", diff.strip(), "```", ""]
    lines += [f"## Not run by the fast tests ({len(untested)})", ""] + [f"- `{name}`" for name in untested]
    (STAGE / "survivors.md").write_text("\n".join(lines) + "\n")
    counts: dict[str, int] = {}
    for line in results.stdout.splitlines():
        if ": " in line:
            status = line.rsplit(": ", 1)[1].strip()
            counts[status] = counts.get(status, 0) + 1
    print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or results.stdout)
    print(f"{len(survivors)} surviving mutant(s) ({len(wording)} wording only): "
          f"{STAGE.relative_to(ROOT)}/survivors.md")
    return returncode


def _tokens(line: str) -> list[tuple[int, str]] | None:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None
    skip = (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)
    return [(t.type, t.string) for t in tokens if t.type not in skip]


def _wording_only(diff: str) -> bool:
    """True when the mutant only changed the text of sentences (string literals with a space in them).

    Identifiers in strings (labels, protocols, key names) carry no space and are never counted here.
    """
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if len(removed) != len(added) or not removed:
        return False
    for before, after in zip(removed, added):
        old, new = _tokens(before), _tokens(after)
        if old is None or new is None or len(old) != len(new):
            return False
        for (old_type, old_text), (new_type, new_text) in zip(old, new):
            if (old_type, old_text) == (new_type, new_text):
                continue
            if old_type != tokenize.STRING or new_type != tokenize.STRING or " " not in old_text:
                return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
