"""The console surface: the same router, rendered as text; buttons are numbered
and clicked with `click N` (numbers are stored, so they work across `revops exec`
invocations). Posts that would go to Slack channels are printed."""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path
from typing import Callable

from sqlalchemy import func, select

from . import forms
from .errors import UsageError
from .models import ConsoleButton
from .outbox import Deliverer, FileReply
from .render_text import render_text
from .reply import Reply
from .router import Router
from .runtime import Runtime

DEFAULT_CHANNEL = "C0CONSOLE"
FORM_TRIES = 3  # rounds of prompts a form gets before it is given up
FILES_DIR = Path(tempfile.gettempdir()) / "revops-files"  # where a file posted from the console is written


class ConsoleSender:
    """Stands in for Slack: prints each post and numbers its buttons."""

    def __init__(self, console: "Console"):
        self.console = console

    async def post(self, channel: str, reply: Reply, thread_ts: str | None) -> str:
        numbers = await self.console.remember_buttons(reply, channel)
        names = await self.console.names(reply)
        self.console.write(f"→ posted to #{channel}:\n" + _indent(render_text(reply, numbers, names)))
        return f"console.{channel}"

    async def upload(self, channel: str, reply: FileReply, thread_ts: str | None) -> str:
        """A file "posted" to a channel (an export): written to disk, its path printed."""
        folder = FILES_DIR / channel
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / Path(reply.filename).name
        path.write_text(reply.content, encoding="utf-8", newline="")
        names = await self.console.names(reply)
        self.console.write(f"→ file posted to #{channel}: {path}\n" + _indent(render_text(reply, [], names)))
        return f"console.{channel}"

    async def update(self, channel: str, ts: str, reply: Reply) -> None:
        numbers = await self.console.remember_buttons(reply, channel)
        names = await self.console.names(reply)
        self.console.write(f"↻ message in #{channel} updated:\n" + _indent(render_text(reply, numbers, names)))


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


class Console:
    def __init__(self, runtime: Runtime, *, user: str, channel: str = DEFAULT_CHANNEL,
                 write: Callable[[str], None] | None = None, ask: Callable[[str], str] | None = None):
        self.runtime = runtime
        self.router: Router = runtime.router
        self.user = user
        self.channel = channel
        self._write = write or (lambda text: print(text, flush=True))
        # A form (bot/forms.py) is asked field by field with `ask` (input() in the interactive
        # console); without it (`revops exec`, the demo tour) the fields are printed instead.
        self.ask = ask
        if runtime.deliverer.sender is None:
            # Printing is no Slack channel: no per-channel pacing needed.
            runtime.deliverer = Deliverer(runtime.services.db, runtime.services.clock, ConsoleSender(self),
                                          interval=0, on_failure=runtime.services.delivery_failed)

    def write(self, text: str) -> None:
        self._write(text)

    async def names(self, reply: Reply) -> dict[str, str]:
        """Display names for the people a reply names (ids when Slack is not configured)."""
        return await self.runtime.names.resolve(reply.users())

    async def remember_buttons(self, reply: Reply, channel: str) -> list[int]:
        if not reply.buttons:
            return []
        db = self.runtime.services.db
        async with db.transaction() as session:
            top = (await session.execute(select(func.max(ConsoleButton.number)))).scalar() or 0
            numbers = []
            for i, b in enumerate(reply.buttons, start=1):
                session.add(ConsoleButton(number=top + i, action_id=b.action_id, value=b.value, label=b.label,
                                          channel=channel, created_at=self.runtime.services.clock.now()))
                numbers.append(top + i)
        return numbers

    async def show(self, reply: Reply) -> None:
        numbers = await self.remember_buttons(reply, self.channel)
        prefix = "(only you) " if reply.private else ""
        self.write(prefix + render_text(reply, numbers, await self.names(reply)))

    async def run_line(self, line: str) -> bool:
        """Run one console line; returns False when the console should stop."""
        line = line.strip()
        if not line:
            return True
        if line in ("quit", "exit", "q"):
            return False
        words = _split(line)
        as_user, words = _take_option(words, "--as")
        channel, words = _take_option(words, "--channel")
        user = as_user or self.user
        where = channel or self.channel
        if words and words[0] == "as" and len(words) == 2:
            self.user = words[1]
            self.write(f"(now acting as {self.user})")
            return True
        if words and words[0] == "channel" and len(words) == 2:
            self.channel = words[1]
            self.write(f"(now in #{self.channel})")
            return True
        if words and words[0] == "click":
            await self.click(words[1:], user)
        else:
            text = " ".join(shlex.quote(w) if " " in w else w for w in words)
            found = forms.wanted(self.runtime.services.registry, text)
            if found is not None:
                await self.form(*found, user=user, channel=where)
            else:
                outcome = await self.router.handle_text(text, actor=user, channel=where, surface="console")
                await self.show(outcome.reply)
        await self.runtime.deliverer.deliver_due()
        return True

    async def form(self, command, values: dict[str, str], *, user: str, channel: str | None) -> None:
        """A command typed with arguments missing: its form as prompts (Slack opens it as a modal),
        checked by the same grammar and run through the router as the typed command."""
        fields = command.form.fields
        if self.ask is None:
            lines = [f"/revops {command.name} asks for these (a form in Slack; prompts in the interactive console):"]
            lines += ["   " + forms.prompt_of(f) + (values.get(f.name) or "") for f in fields]
            lines.append(f"Or type it in full: /revops {command.usage}")
            self.write("\n".join(lines))
            return
        self.write(f"{command.form.title}" + (f" — {command.form.intro}" if command.form.intro else "")
                   + " (Ctrl-D cancels)")
        values = dict(values)
        asking = list(fields)
        for _ in range(FORM_TRIES):
            try:
                for f in asking:
                    values[f.name] = self._answer(f, values.get(f.name))
            except EOFError:
                self.write("(form cancelled; nothing was run)")
                return
            problems = forms.field_problems(command, values)
            if not problems:
                text = forms.command_text(command, values)
                parsed = self.router.parse(text)
                if isinstance(parsed, UsageError):
                    problems = _problem(command, values, parsed.text)
                elif parsed[0] is not command:
                    first = next(f for f in fields if f.name not in command.grammar.named)
                    problems = {first.name: f"it reads as the sub-command /revops {parsed[0].name}"}
                else:
                    outcome = await self.router.handle_text(text, actor=user, channel=channel, surface="console",
                                                            parsed=parsed)
                    if outcome.outcome != "usage":
                        await self.show(outcome.reply)
                        return
                    problems = _problem(command, values, outcome.reply.text)
            for name, reason in problems.items():
                label = next(f.label for f in fields if f.name == name)
                self.write(f"✗ {label}: {reason}")
            asking = [f for f in fields if f.name in problems]
        self.write(f"(form given up after {FORM_TRIES} tries; nothing was run. Type it in full: "
                   f"/revops {command.usage})")

    def _answer(self, f, default: str | None) -> str:
        """One field's answer; Enter keeps the default; a multi-line field ends at an empty line."""
        prompt = forms.prompt_of(f) + (f"({default}) " if default else "")
        if f.kind != "multiline":
            return self.ask(prompt).strip() or (default or "")
        lines = [self.ask(prompt + "(end with an empty line) ")]
        while lines[-1].strip():
            lines.append(self.ask("... "))
        return "\n".join(lines).strip() or (default or "")

    async def click(self, words: list[str], user: str) -> None:
        """`click N` clicks button N; `click Approve` the latest button labelled so."""
        if not words:
            self.write("Usage: click N [--as UID]  (N is the number shown beside a button, or its label)")
            return
        async with self.runtime.services.db.transaction() as session:
            if len(words) == 1 and words[0].isdigit():
                button = await session.get(ConsoleButton, int(words[0]))
            else:
                label = " ".join(words).lower()
                button = (await session.execute(
                    select(ConsoleButton).where(func.lower(ConsoleButton.label) == label)
                    .order_by(ConsoleButton.number.desc()).limit(1))).scalar_one_or_none()
        if button is None:
            self.write(f"No button [{' '.join(words)[:40]}]. Usage: click N [--as UID]")
            return
        if button.action_id.startswith(FORM_BUTTON):  # opens a command's form, prefilled with its value
            command = forms.command_named(self.runtime.services.registry,
                                          button.action_id.removeprefix(FORM_BUTTON).split("~", 1)[0])
            if command is not None and command.form is not None:
                await self.form(command, forms.prefill(command, button.value), user=user, channel=button.channel)
                return
        outcome = await self.router.handle_click(button.action_id, button.value, actor=user, channel=button.channel,
                                                 surface="console")
        await self.show(outcome.reply)

    async def repl(self) -> None:
        interactive = sys.stdin.isatty()
        if interactive and self.ask is None:
            self.ask = input
        if interactive:
            self.write(f"revops console — acting as {self.user} in #{self.channel}. "
                       "Type a command (help), `click N`, `as UID`, `channel CID`, or quit.")
        while True:
            try:
                line = input(f"{self.user}> " if interactive else "")
            except EOFError:
                break
            if not await self.run_line(line):
                break


FORM_BUTTON = "revops:form:"


def _problem(command, values: dict[str, str], refusal) -> dict[str, str]:
    message = " ".join(str(refusal).split())
    name = forms.field_of(command, values, message)
    return {name: forms.reason_for(command, name, message)}


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def _take_option(words: list[str], name: str) -> tuple[str | None, list[str]]:
    """Console-level options (--as, --channel) only before or after the command text."""
    if name in words:
        i = words.index(name)
        if i + 1 < len(words):
            return words[i + 1], words[:i] + words[i + 2:]
    return None, words
