"""One registry of sub-commands and button actions.

A family module (`commands/*.py`) makes a `CommandSet`, declares its
commands with their usage line, help line and role, and its button actions;
the registry finds the command for a line of text and the action for a click.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .errors import UsageError
from .grammar import Grammar, tokenize
from .roles import Role
from .text import Code, Text

RoleRule = Role | Callable[[dict[str, Any]], Role]
FlagRule = bool | Callable[[dict[str, Any]], bool]

# How the router treats a mutating command in dry-run mode:
#   "simulate": run it, then roll back every database change it made;
#   "handler":  the handler reads ctx.dry_run and keeps money from moving itself;
#   "exempt":   it is not simulated (the flag toggles themselves).
DRY_RUN_MODES = ("simulate", "handler", "exempt")


@dataclass
class Command:
    family: str
    grammar: Grammar
    summary: str
    role: RoleRule
    handler: Callable[..., Awaitable[Any]]
    mutating: FlagRule = False
    dry_run: str = "simulate"
    role_note: str | None = None
    examples: list[str] = field(default_factory=list)
    slow: bool = False  # always acknowledge at once and answer afterwards (probes, Stripe)
    form: Any = None  # bot.forms.Form: what a surface asks for when it is typed with arguments missing

    @property
    def name(self) -> str:
        return " ".join(self.grammar.path)

    @property
    def usage(self) -> str:
        return self.grammar.usage

    def role_for(self, args: dict[str, Any]) -> Role:
        return self.role(args) if callable(self.role) else self.role

    def mutates(self, args: dict[str, Any]) -> bool:
        return self.mutating(args) if callable(self.mutating) else self.mutating


@dataclass
class Action:
    family: str
    name: str  # "family.action"
    role: Role
    handler: Callable[..., Awaitable[Any]]
    mutating: bool = True
    dry_run: str = "simulate"
    slow: bool = False


class CommandSet:
    """What one family module declares."""

    def __init__(self, family: str):
        self.family = family
        self.commands: list[Command] = []
        self.actions: list[Action] = []
        self.forms: dict[str, Any] = {}  # command words -> bot.forms.Form

    def form(self, words: str, form: Any) -> None:
        """`words` ("incident update") asks for its arguments with `form` when they are missing."""
        self.forms[" ".join(words.lower().split())] = form

    def command(self, usage: str, *, summary: str, role: RoleRule, mutating: FlagRule = False,
                dry_run: str = "simulate", role_note: str | None = None, examples: list[str] | None = None,
                slow: bool = False):
        assert dry_run in DRY_RUN_MODES

        def decorate(fn):
            self.commands.append(Command(self.family, Grammar.from_usage(usage), summary, role, fn, mutating,
                                         dry_run, role_note, examples or [], slow))
            return fn

        return decorate

    def action(self, name: str, *, role: Role, mutating: bool = True, dry_run: str = "simulate",
               slow: bool = False):
        assert dry_run in DRY_RUN_MODES

        def decorate(fn):
            self.actions.append(Action(self.family, f"{self.family}.{name}", role, fn, mutating, dry_run, slow))
            return fn

        return decorate


class Registry:
    def __init__(self):
        self.commands: list[Command] = []
        self.actions: dict[str, Action] = {}

    def add(self, commands: CommandSet) -> None:
        unknown = set(commands.forms) - {c.name for c in commands.commands}
        if unknown:
            raise ValueError(f"a form for no command of {commands.family}: {', '.join(sorted(unknown))}")
        for command in commands.commands:
            command.form = commands.forms.get(command.name, command.form)
        self.commands.extend(commands.commands)
        for action in commands.actions:
            if action.name in self.actions:
                raise ValueError(f"duplicate action {action.name}")
            self.actions[action.name] = action

    def families(self) -> dict[str, list[Command]]:
        out: dict[str, list[Command]] = {}
        for command in self.commands:
            out.setdefault(command.grammar.path[0], []).append(command)
        return out

    def named(self, words: list[str]) -> Command | None:
        """The command the first words of a line name: the one with the longest matching path."""
        lowered = tuple(w.lower() for w in words)
        best: Command | None = None
        for command in self.commands:
            path = command.grammar.path
            if lowered[: len(path)] == path and (best is None or len(path) > len(best.grammar.path)):
                best = command
        return best

    def find(self, text: str) -> tuple[Command, dict[str, Any]]:
        """The command a line of text names, with its parsed arguments.

        Raises UsageError (with the usage line when the command is known)."""
        text = text.strip()
        if text.startswith("/revops"):
            text = text[len("/revops"):].strip()
        try:
            tokens = tokenize(text)
        except UsageError as exc:
            # Name the command the person meant, so the answer carries its usage line.
            near = self.named(text.split())
            exc.usage = near.usage if near else "help [command]"
            raise
        if not tokens:
            tokens = ["help"]
        lowered = [t.lower() for t in tokens]
        best = self.named(tokens)
        if best is None:
            family = self.families().get(lowered[0])
            if family:
                usage = "\n".join(c.usage for c in family)
                what = (Text("unknown ", Code(lowered[0]), " sub-command ", Code(tokens[1][:40])) if len(tokens) > 1
                        else Text(Code(lowered[0]), " needs a sub-command"))
                raise UsageError(what, usage=usage)
            raise UsageError(Text("unknown command ", Code(tokens[0][:40]), "; try ", Code("/revops help")), usage="help [command]")
        try:
            args = best.grammar.parse(tokens[len(best.grammar.path):])
        except UsageError as exc:
            exc.usage = best.usage
            raise
        return best, args

    def action(self, action_id: str) -> Action:
        name = action_id.removeprefix("revops:")
        base, tilde, copy = name.rpartition("~")
        if tilde and copy.isdigit():  # the same action's second button in one message (bot/slack/blocks.py)
            name = base
        action = self.actions.get(name)
        if action is None:
            raise UsageError(f"this button ({name[:60]}) is no longer handled")
        return action
