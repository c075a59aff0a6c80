"""Forms: what a command asks for when it is typed with arguments missing, as neutral data.

A command declares `form=Form(...)` (bot/registry.py); each `Field` fills one of its grammar's
arguments: a positional one (in the form's order), a `key=` value or a `--option`. A surface
renders the form (Slack: a modal, bot/slack/modals.py; the console: prompts, bot/console.py),
turns what was filled in back into the command's text with `command_text`, and runs that text
through the router exactly like a typed command: the same grammar checks it, the same roles,
dry-run, audit and timeline apply. Nothing here knows Slack.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

from .errors import UsageError
from .grammar import MAX_TEXT, MAX_WORD, tokenize
from .text import Textlike

KINDS = ("text", "multiline", "number", "select")
# Slack's smart quotes, folded as the grammar folds them (bot/grammar.py tokenize): a value is
# quoted for the grammar after folding, so a curly apostrophe cannot unbalance the quoting.
_SMART = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})


@dataclass(frozen=True)
class Field:
    """One question of a form.

    `name`: the grammar argument it fills (`account`, `baseline` for `baseline=`, `channel` for
    `--channel`); a name the grammar does not know is written positionally, in the form's order
    (e.g. `incident` for the `#12` that `incident update` takes before its text).
    `show`: `async (services, value) -> text | None`, what the value names (the account's balance,
    the invoice), looked up after the form is open.
    `check`: `(value) -> reason | None`, for a field the grammar does not check itself;
    `prefix`: written before the value when it lacks it (the `#` of `#12`)."""

    name: str
    label: str
    kind: str = "text"  # text | multiline | number | select
    options: tuple[str, ...] = ()
    optional: bool = False
    hint: str | None = None
    show: Callable[[Any, str], Awaitable[Textlike | None]] | None = None
    check: Callable[[str], str | None] | None = None
    prefix: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name}: kind must be one of {', '.join(KINDS)}")
        if (self.kind == "select") != bool(self.options):
            raise ValueError(f"field {self.name}: a select (and only a select) has options")


@dataclass(frozen=True)
class Form:
    title: str  # short: Slack shows at most 24 characters
    fields: tuple[Field, ...]
    submit: str = "Submit"
    intro: str | None = None  # one line above the fields


def command_named(registry, words: str):
    """The command whose path is exactly `words` ("incident update"), or None."""
    path = tuple(w.lower() for w in words.split())
    return next((c for c in registry.commands if c.grammar.path == path), None)


def wanted(registry, text: str) -> tuple[Any, dict[str, str]] | None:
    """The command (with a form) a line names when it lacks required arguments, and what the
    line already gave, by field; None when the line should simply run (or is not a form's)."""
    try:
        tokens = tokenize(text.strip().removeprefix("/revops"))
    except UsageError:
        return None
    best = registry.named(tokens)
    if best is None or getattr(best, "form", None) is None:
        return None
    rest = tokens[len(best.grammar.path):]
    required = sum(1 for p in best.grammar.params if p.required)
    if len(_split(best, rest)[0]) >= required:
        return None
    return best, prefill(best, rest)


def prefill(command, tokens: Iterable[str] | str) -> dict[str, str]:
    """The fields a list of argument tokens (or a line of them: a button's value) fills."""
    if isinstance(tokens, str):
        try:
            tokens = tokenize(tokens)
        except UsageError:
            return {}
    positional, values = _split(command, list(tokens))
    fields = [f for f in command.form.fields if not _keyword(command, f)]
    for i, f in enumerate(fields):
        if not positional:
            break
        last = i == len(fields) - 1 or _is_rest(command, f)
        values[f.name] = " ".join(positional) if last else positional.pop(0)
        if last:
            positional = []
    return {k: v for k, v in values.items() if any(f.name == k for f in command.form.fields)}


def command_text(command, values: dict[str, str]) -> str:
    """The command line the filled-in fields make: the path, then each value quoted for the
    grammar (a multi-line text stays one argument, its lines kept)."""
    parts = list(command.grammar.path)
    for f in command.form.fields:
        value = (values.get(f.name) or "").translate(_SMART).strip()
        if not value:
            continue
        if f.prefix and not value.startswith(f.prefix):
            value = f.prefix + value
        if f.name in command.grammar.named:
            parts.append(shlex.quote(f"{f.name}={value}"))
        elif f.name in command.grammar.options:
            parts += [f"--{f.name}", shlex.quote(value)]
        else:
            parts.append(shlex.quote(value))
    return " ".join(parts)


def field_of(command, values: dict[str, str], message: str) -> str:
    """The field a refusal of the command's text is about (the grammar names `<amount>`,
    `baseline=` or `--since`; a command's own words name `account`, `severity`…; else the
    field whose value it quotes; else the first field)."""
    fields = command.form.fields
    for f in fields:
        if f"<{f.name}>" in message or f"{f.name}=" in message or f"--{f.name}" in message:
            return f.name
    for f in fields:
        if re.search(rf"\b{re.escape(f.name)}\b", message, re.IGNORECASE):
            return f.name
    for f in fields:
        value = (values.get(f.name) or "").strip()
        if value and value[:30] in message:
            return f.name
    return fields[0].name


def reason_for(command, field: str, message: str) -> str:
    """The refusal in words for one field: its `<name>` said as its label."""
    label = next((f.label for f in command.form.fields if f.name == field), field)
    return message.replace(f"<{field}>", label)


def field_problems(command, values: dict[str, str]) -> dict[str, str]:
    """What the fields' own checks refuse, by field: a control character (as the grammar refuses
    it), a select answered with a value it does not offer (a stale or forged form), a field's
    `check`; the grammar checks the rest in the command's text."""
    problems: dict[str, str] = {}
    for f in command.form.fields:
        value = (values.get(f.name) or "").strip()
        if not value:
            continue
        try:
            tokenize(shlex.quote(value.translate(_SMART)))  # the grammar's own refusals of any text
        except UsageError as exc:
            problems[f.name] = str(exc.text)
            continue
        if f.kind == "select" and value not in f.options:
            problems[f.name] = f"choose one of {', '.join(f.options)}"
        elif f.check is not None and (reason := f.check(value)):
            problems[f.name] = reason
    return problems


def max_length(command, f: Field) -> int:
    """The longest answer the grammar takes for the field."""
    return MAX_TEXT if _is_rest(command, f) or f.kind == "multiline" else MAX_WORD


def prompt_of(f: Field) -> str:
    """The field as a console prompt: its label, its choices or hint, whether it may stay empty."""
    extra = "/".join(f.options) if f.options else (f.hint or "")
    return f"{f.label}" + (f" [{extra}]" if extra else "") + (" (optional)" if f.optional else "") + ": "


def _keyword(command, f: Field) -> bool:
    return f.name in command.grammar.named or f.name in command.grammar.options


def _is_rest(command, f: Field) -> bool:
    return any(p.name == f.name and p.rest for p in command.grammar.params)


def _split(command, tokens: list[str]) -> tuple[list[str], dict[str, str]]:
    """Positional tokens, and the `key=` / `--option` values, of a command's arguments."""
    grammar = command.grammar
    positional: list[str] = []
    values: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--") and len(tok) > 2:
            name, eq, value = tok[2:].partition("=")
            if not eq and i + 1 < len(tokens):
                value = tokens[i + 1]
                i += 1
            values[name] = value
        elif grammar.named and "=" in tok and tok.split("=", 1)[0] in grammar.named:
            key, _, value = tok.partition("=")
            values[key] = value
        else:
            positional.append(tok)
        i += 1
    return positional, values
