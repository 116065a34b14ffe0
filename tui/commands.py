"""Command palette provider: every key binding of the current screen, findable by name."""

from __future__ import annotations

from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode


class BindingCommands(Provider):
    """Offers the current screen's and the app's bindings as palette commands."""

    def _commands(self) -> list[tuple[str, str, str, DOMNode]]:
        found: list[tuple[str, str, str, DOMNode]] = []
        for target in (self.screen, self.app):
            for binding in getattr(target, "BINDINGS", []):
                if isinstance(binding, Binding) and binding.description:
                    found.append((binding.description, binding.tooltip, binding.action, target))
        return found

    async def discover(self) -> Hits:
        for name, help_text, action, target in self._commands():
            yield DiscoveryHit(name, partial(self._run, target, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, action, target in self._commands():
            score = matcher.match(f"{name} {help_text}")
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._run, target, action), help=help_text)

    async def _run(self, target: DOMNode, action: str) -> None:
        await self.app.run_action(action, target)
