"""The jinja2 environment for every sentence people read in incident
communications and pages. Templates ship under `templates/`; an operator
can point `templates_dir` at a copy and reword any of them (a file there wins).

A template that fails to render stops start-up with its name (`check_templates`). Which
templates there are, and the sample data each is checked with, the families declare
(`Family.templates`); the composition root hands them over as `samples`.

Message templates (`.md`) render to typed text (bot/text.py), never to Slack markup. Their own
wording may use three marks, read only in the template's text and never in a variable's value:
`*emphasis*`, `` `code` `` and `:emoji:`; people are `{{ user | mention }}` (a notification) or
`{{ user | at }}` (a name, no notification), links `{{ url | link_to("label") }}`, long user
text `{{ text | clip(500) }}`. Every `{{ … }}` is data: a person's `<!channel>` or `*` shows
as typed. Page templates (`.html`) are autoescaped HTML and show people by name.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Mapping

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, TemplateError, pass_context

from .errors import SettingsError
from .reply import Reply
from .settings import Settings
from .text import PIECES, Code, Em, Icon, Link, Text, User, clip

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_ENVS: dict[tuple[str | None, str], Environment] = {}
# The values a message template's `{{ … }}` produced, in order (one list per render).
_SLOTS: ContextVar[list | None] = ContextVar("revops_template_slots", default=None)
_SLOT = re.compile("\x00(\\d+)\x00")
_MARKS = re.compile(r"\*|`|:[a-z0-9_+-]+:")


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


def _slot(value: Any) -> str:
    slots = _SLOTS.get()
    if slots is None:  # rendered outside render_text (a sample check): plain reading
        return "" if value is None else str(value)
    slots.append(value)
    return f"\x00{len(slots) - 1}\x00"


def environment(settings: Settings, kind: str = "text") -> Environment:
    """`kind`: "text" for messages (typed text), "html" for pages (autoescaped)."""
    operator = _operator_dir(settings)
    key = (str(operator) if operator else None, kind)
    env = _ENVS.get(key)
    if env is None:
        loaders = [FileSystemLoader(str(operator))] if operator else []
        loaders.append(FileSystemLoader(str(PACKAGE_TEMPLATES)))
        options: dict[str, Any] = dict(loader=ChoiceLoader(loaders), undefined=StrictUndefined, trim_blocks=True,
                                       lstrip_blocks=True, keep_trailing_newline=False)
        if kind == "html":
            env = Environment(autoescape=True, **options)
            env.filters["mention"] = env.filters["at"] = _html_person
        else:
            env = Environment(autoescape=False, finalize=_slot, **options)
            env.filters["mention"] = lambda user: User(str(user)) if user else "nobody"
            env.filters["at"] = lambda user: User(str(user), ping=False) if user else "nobody"
        env.filters["link_to"] = lambda url, label="": Link(str(url), str(label)) if url else ""
        env.filters["clip"] = lambda value, limit=500: clip(value, int(limit))
        _ENVS[key] = env
    return env


@pass_context
def _html_person(context: Any, user: Any) -> str:
    """A person on a page: the display name the view looked up (`names`), else the id."""
    if not user:
        return "nobody"
    names = context.get("names") or {}
    return "@" + (names.get(str(user)) or str(user))


def _kind(name: str) -> str:
    return "html" if name.endswith((".html", ".htm")) else "text"


def render(settings: Settings, name: str, **context: Any) -> str:
    """A page (`.html`, autoescaped) or a message's plain reading."""
    if _kind(name) == "text":
        return str.__str__(render_text(settings, name, **context))
    return environment(settings, "html").get_template(name).render(**context).strip()


def render_text(settings: Settings, name: str, **context: Any) -> Text:
    """A message template as typed text: its own marks become pieces, its values stay data."""
    slots: list = []
    token = _SLOTS.set(slots)
    try:
        raw = environment(settings, "text").get_template(name).render(**context).strip()
    finally:
        _SLOTS.reset(token)
    return _parse(raw, slots)


def _parse(raw: str, slots: list) -> Text:
    # frames: [mark, items]; the root has mark None
    stack: list[list] = [[None, []]]
    pieces = _SLOT.split(raw)
    for i, chunk in enumerate(pieces):
        if i % 2:  # a value: data, whatever it holds
            value = slots[int(chunk)]
            stack[-1][1].append(value if isinstance(value, (Text, *PIECES)) else
                                "" if value is None else str(value))
            continue
        at = 0
        for mark in _MARKS.finditer(chunk):
            stack[-1][1].append(chunk[at:mark.start()])
            at = mark.end()
            token, top = mark.group(), stack[-1][0]
            if token == "*" and top != "`":
                if top == "*":
                    _, items = stack.pop()
                    stack[-1][1].append(Em(Text(*items)))
                else:
                    stack.append(["*", []])
            elif token == "`":
                if top == "`":
                    _, items = stack.pop()
                    stack[-1][1].append(Code(str.__str__(Text(*items))))
                else:
                    stack.append(["`", []])
            elif top == "`":  # an emoji code inside code is text
                stack[-1][1].append(token)
            elif token.startswith(":"):
                stack[-1][1].append(Icon(token[1:-1]))
            else:
                stack[-1][1].append(token)
        stack[-1][1].append(chunk[at:])
    while len(stack) > 1:  # an unclosed mark is text
        mark, items = stack.pop()
        stack[-1][1].extend([mark, *items])
    return Text(*stack[0][1])


def split_lines(text: Text) -> list[Text]:
    """Typed text cut at its line ends (pieces never span lines in a template's output)."""
    lines: list[list] = [[]]
    for part in text.parts:
        if isinstance(part, str):
            first, *rest = part.split("\n")
            lines[-1].append(first)
            for piece in rest:
                lines.append([piece])
        else:
            lines[-1].append(part)
    return [Text(*line) for line in lines]


def render_reply(settings: Settings, name: str, **context: Any) -> Reply:
    """A rendered message as a Reply: the first line is the headline, the rest the body."""
    lines = split_lines(render_text(settings, name, **context))
    head, body = lines[0], lines[1:]
    while body and not str(body[0]).strip():
        body.pop(0)
    while body and not str(body[-1]).strip():
        body.pop()
    return Reply(head if str(head).strip() else Text(name), lines=body, private=False)


def render_check(settings: Settings, samples: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Problems with the templates (empty when every one renders with its sample data).

    `samples`: template name -> sample context, for every template the bot renders."""
    problems: list[str] = []
    operator = _operator_dir(settings)
    if settings.cfg.templates_dir and (operator is None or not operator.is_dir()):
        return [f"templates_dir: {settings.cfg.templates_dir} is not a folder"]
    for name, context in samples.items():
        try:
            render_text(settings, name, **context) if _kind(name) == "text" else render(settings, name, **context)
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
