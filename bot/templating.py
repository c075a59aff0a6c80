"""The jinja2 environment for every sentence people read in incident
communications and pages. Templates ship under `templates/`; an operator
can point `templates_dir` at a copy and reword any of them (a file there wins).

A template that fails to render stops start-up with its name (`check_templates`). Which
templates there are, and the sample data each is checked with, the families declare
(`Family.templates`); the composition root hands them over as `samples`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape

from .errors import SettingsError
from .reply import Reply
from .settings import Settings

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_ENVS: dict[str | None, Environment] = {}


def _operator_dir(settings: Settings) -> Path | None:
    configured = settings.cfg.templates_dir
    if not configured:
        return None
    path = Path(configured).expanduser()
    if not path.is_absolute() and settings.config_path is not None:
        # relative to the config file first, then the working directory
        beside = settings.config_path.parent / path
        if beside.exists() or not path.exists():
            path = beside
    return path


def environment(settings: Settings) -> Environment:
    operator = _operator_dir(settings)
    key = str(operator) if operator else None
    env = _ENVS.get(key)
    if env is None:
        loaders = [FileSystemLoader(str(operator))] if operator else []
        loaders.append(FileSystemLoader(str(PACKAGE_TEMPLATES)))
        env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False,
                                         default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        env.filters["mention"] = lambda user: f"<@{user}>" if user else "nobody"
        env.filters["at"] = lambda user: f"@{user}" if user else "nobody"
        _ENVS[key] = env
    return env


def render(settings: Settings, name: str, **context: Any) -> str:
    return environment(settings).get_template(name).render(**context).strip()


def render_reply(settings: Settings, name: str, **context: Any) -> Reply:
    """A rendered message as a Reply: the first line is the headline, the rest the body."""
    text = render(settings, name, **context)
    head, _, body = text.partition("\n")
    body = body.strip("\n")
    return Reply(head.strip() or name, lines=[body] if body else [], private=False)


def render_check(settings: Settings, samples: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Problems with the templates (empty when every one renders with its sample data).

    `samples`: template name -> sample context, for every template the bot renders."""
    problems: list[str] = []
    operator = _operator_dir(settings)
    if settings.cfg.templates_dir and (operator is None or not operator.is_dir()):
        return [f"templates_dir: {settings.cfg.templates_dir} is not a folder"]
    for name, context in samples.items():
        try:
            render(settings, name, **context)
        except TemplateError as exc:
            where = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
            problems.append(f"template {name}{where}: {exc.message or type(exc).__name__}")
        except Exception as exc:  # a filter or a value that blows up on sample data
            problems.append(f"template {name}: {type(exc).__name__}: {str(exc)[:200]}")
    return problems


def check_templates(settings: Settings, samples: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise SettingsError naming the first template that fails to render."""
    problems = render_check(settings, samples)
    if problems:
        raise SettingsError(problems[0])
