"""The house rules the code can check (DESIGN.md): the core imports no family — only the
composition root (bot/app.py) does; a family's code does not reach up into commands/ (only
its registration, bot/<family>/family.py, does, and only the root reads a registration);
every registration is wired in; and no module imports inside a function to dodge a cycle."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

from bot.app import FAMILIES
from bot.family import Family
from bot.registry import CommandSet
from bot.settings import example_config_path

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOT = "bot.app"
# A family is a folder under bot/ with a registration; commands/ belongs to the families too.
FAMILY_PACKAGES = sorted(p.parent.name for p in (ROOT / "bot").glob("*/family.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(source: str, module: str, package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the source, relative ones resolved;
    `from X import y` counts as importing X and X.y (y may be a module)."""
    found: list[tuple[int, str]] = []
    here = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def family_of(name: str) -> str | None:
    """The family a module belongs to ("commands" for the command modules), or None for the core."""
    parts = name.split(".")
    if parts[0] == "commands":
        return "commands"
    if parts[0] == "bot" and len(parts) > 1 and parts[1] in FAMILY_PACKAGES:
        return parts[1]
    return None


def core_violations(files: dict[str, tuple[str, bool]]) -> list[str]:
    """`files`: module name -> (source, is a package). Core modules that import a family."""
    problems = []
    for module, (source, package) in sorted(files.items()):
        if family_of(module) is not None or module == COMPOSITION_ROOT:
            continue
        for line, target in imports_of(source, module, package):
            if family_of(target) is not None:
                problems.append(f"{module}:{line} imports {target}")
    return problems


def function_level_imports(source: str) -> list[int]:
    """Lines of imports inside a function (or a lambda, or a class body's method)."""
    lines: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                lines.append(child.lineno)
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(source), False)
    return lines


def direction_violations(files: dict[str, tuple[str, bool]]) -> list[str]:
    """Family code importing commands/ (only its registration may), and any module but the
    root importing a registration."""
    problems = []
    for module, (source, package) in sorted(files.items()):
        family = family_of(module)
        for line, target in imports_of(source, module, package):
            parts = target.split(".")
            if family_of(target) not in (None, "commands") and parts[2:3] == ["family"] and \
                    module != COMPOSITION_ROOT and target == ".".join(parts[:3]):
                problems.append(f"{module}:{line} reads the registration {target}")
            if family not in (None, "commands") and not module.endswith(".family") and family_of(target) == "commands":
                problems.append(f"{module}:{line} (family code) imports {target}")
    return problems


def project_files() -> dict[str, tuple[str, bool]]:
    files = {}
    for top in ("bot", "commands"):
        for path in sorted((ROOT / top).rglob("*.py")):
            files[module_name(path)] = (path.read_text(), is_package(path))
    return files


def test_the_core_imports_no_family():
    files = project_files()
    assert {"bot.router", "bot.db", "bot.worker", "bot.scheduler", "bot.services", "bot.cli"} <= set(files)
    assert FAMILY_PACKAGES == ["billing", "grants", "health", "incidents"]
    assert core_violations(files) == []


def test_only_registrations_reach_into_commands_and_only_the_root_reads_them():
    assert direction_violations(project_files()) == []


def test_every_registration_is_wired_into_the_root():
    names = [family.name for family in FAMILIES.families]
    assert set(FAMILY_PACKAGES) <= set(names)
    assert {"help", "flags", "audit"} <= set(names)  # the families that are only commands over the core
    assert all(isinstance(family, Family) for family in FAMILIES.families)
    # every CommandSet under commands/ is in some family (a command module nobody registered is dead)
    registered = {id(commands) for family in FAMILIES.families for commands in family.commands}
    modules = [import_module(f"commands.{p.stem}") for p in sorted((ROOT / "commands").glob("*.py"))]
    unregistered = [m.__name__ for m in modules if isinstance(getattr(m, "commands", None), CommandSet)
                    and id(m.commands) not in registered]
    assert unregistered == []


# Deliberate exceptions, each with its reason; an entry that no longer occurs fails the test too.
FUNCTION_LEVEL_IMPORTS_ALLOWED: set[str] = set()


def test_no_import_inside_a_function():
    found = {module: lines for module, (source, _) in project_files().items()
             if (lines := function_level_imports(source))}
    assert {m: lines for m, lines in found.items() if m not in FUNCTION_LEVEL_IMPORTS_ALLOWED} == {}
    assert FUNCTION_LEVEL_IMPORTS_ALLOWED <= set(found), "remove the allowance: the import is gone"


def test_the_checks_catch_what_they_look_for():
    """The checks above fail on code that breaks the rules, so their passing means something."""
    lazy = ("import os\n\ndef f():\n    from .incidents import jobs\n    return jobs\n\n"
            "x = lambda: __import__('y')\nclass C:\n    async def g(self):\n        import commands\n")
    files = {
        "bot.fake": ("from .billing import ledger\nfrom . import audit\n", False),
        "bot.web.fake": ("from ..incidents.views import sample_contexts\n", False),
        "bot.lazy": (lazy, False),
        "bot.fakepkg": ("from . import things\nfrom ..grants import service\n", True),
        "bot.app": ("from .billing.family import family\nfrom commands import help\n", False),  # the root may
        "bot.billing.fake": ("from ..incidents import service\n", False),  # a family may use another
        "bot.billing.family": ("from commands import customer\n", False),  # its registration reads commands
        "bot.grants.service": ("from commands import grant\n", False),
        "bot.health.job": ("from ..incidents.family import family\n", False),
    }
    assert core_violations(files) == [
        "bot.fake:1 imports bot.billing", "bot.fake:1 imports bot.billing.ledger",
        "bot.fakepkg:2 imports bot.grants", "bot.fakepkg:2 imports bot.grants.service",
        "bot.lazy:4 imports bot.incidents", "bot.lazy:4 imports bot.incidents.jobs",
        "bot.lazy:10 imports commands",
        "bot.web.fake:1 imports bot.incidents.views", "bot.web.fake:1 imports bot.incidents.views.sample_contexts",
    ]
    assert direction_violations(files) == [
        "bot.grants.service:1 (family code) imports commands",
        "bot.grants.service:1 (family code) imports commands.grant",
        "bot.health.job:1 reads the registration bot.incidents.family",
    ]
    assert function_level_imports(lazy) == [4, 10]
    assert function_level_imports("if True:\n    import os\nclass C:\n    import sys\n") == []


def test_the_entry_points_start_from_the_root(tmp_path):
    """`python -m bot`, the `revops` script and `uvicorn bot.asgi:app` all build the app through bot/app.py."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STRIPE_", "REVOPS_", "DATABASE"))}
    env.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/asgi.db", REVOPS_CONFIG=str(example_config_path()),
               PYTHONPATH=str(ROOT))
    probe = ("import bot.asgi, bot.app; print(sorted([*(bot.asgi.app.url_path_for(name) for name in "
             "('alerts', 'incidents_page', 'flags')), *(e.path for e in bot.app.FAMILIES.endpoints)]))")
    # the families' routes and endpoints (bot/web/direct.py), and the core's
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['/alerts', '/flags', '/incidents', '/webhooks/stripe']"
    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["revops"]
    assert script == "bot.app:main"
