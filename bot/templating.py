"""The jinja2 environment for every sentence people read in incident
communications and pages. Templates ship under `templates/`; an operator
can point `templates_dir` at a copy and reword any of them (a file there wins).

A template that fails to render stops start-up with its name (`check_templates`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape

from .errors import SettingsError
from .reply import Reply
from .settings import Settings

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

# Every template the bot renders (checked at start-up with sample data).
TEMPLATE_NAMES = (
    "initial_p1.md", "initial_p2.md", "initial_p3.md",
    "revenue_update.md", "engineering_update.md", "executive_summary.md",
    "update_reminder.md", "escalation.md", "announcement.md",
    "report.md", "alert_card.md",
    "incident_page.html", "incidents_page.html",
)

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


def render_check(settings: Settings) -> list[str]:
    """Problems with the templates (empty when every one renders with sample data)."""
    from .incidents.views import sample_contexts

    problems: list[str] = []
    operator = _operator_dir(settings)
    if settings.cfg.templates_dir and (operator is None or not operator.is_dir()):
        return [f"templates_dir: {settings.cfg.templates_dir} is not a folder"]
    contexts = sample_contexts(settings)
    for name in TEMPLATE_NAMES:
        try:
            render(settings, name, **contexts[name])
        except TemplateError as exc:
            where = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
            problems.append(f"template {name}{where}: {exc.message or type(exc).__name__}")
        except Exception as exc:  # a filter or a value that blows up on sample data
            problems.append(f"template {name}: {type(exc).__name__}: {str(exc)[:200]}")
    return problems


def check_templates(settings: Settings) -> None:
    """Raise SettingsError naming the first template that fails to render."""
    problems = render_check(settings)
    if problems:
        raise SettingsError(problems[0])
