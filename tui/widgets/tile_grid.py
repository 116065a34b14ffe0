"""The tiles of one image as a grid of previews, each with its score and flags, to keep or drop."""

from __future__ import annotations

from kiln.engine.tiles import Tile, TilePlan
from kiln.tui.widgets.image_preview import ImageWidgetClass
from PIL import Image as PILImage
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static


def tile_label(tile: Tile, kept: bool) -> Text:
    """One line under a tile: ``✓ r1c2 0.83`` and its first flag, if any."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("✓ " if kept else "✗ ", style="bold green" if kept else "bold red")
    text.append(f"r{tile.row}c{tile.col} ", style="bold" if kept else "dim")
    text.append(f"{tile.score:.2f}", style="" if kept else "dim")
    if tile.flags:
        text.append(f" {tile.flags[0].id}", style="yellow")
        if len(tile.flags) > 1:
            text.append(f" +{len(tile.flags) - 1}", style="yellow")
    return text


class TileCell(Widget):
    """One tile: its preview (or its size when previews are off) and a label."""

    def __init__(
        self, tile: Tile, picture: PILImage.Image | None, image_class: ImageWidgetClass | None
    ) -> None:
        super().__init__()
        self.tile = tile
        self.picture = picture
        self.image_class = image_class

    def compose(self) -> ComposeResult:
        if self.image_class is not None and self.picture is not None:
            yield self.image_class(self.picture, classes="tile-picture")
        else:
            width, height = self.tile.size
            yield Static(f"{width}x{height}", classes="tile-picture tile-size")
        yield Static(classes="tile-label")

    def show_state(self, kept: bool) -> None:
        """Redraw the label and shading for kept or dropped."""
        self.set_class(not kept, "-dropped")
        self.query_one(".tile-label", Static).update(tile_label(self.tile, kept))

    def on_click(self, event: events.Click) -> None:
        grid = self.parent
        if isinstance(grid, TileGrid):
            event.stop()
            grid.focus()
            grid.cursor = grid.cells.index(self)
            grid.action_toggle_keep()


class TileGrid(Widget, can_focus=True):
    """Rows x columns of :class:`TileCell`; the cursor moves with the arrows, space keeps or drops."""

    DEFAULT_CSS = """
    TileGrid {
        layout: grid;
        grid-gutter: 0 1;
        height: 1fr;
    }
    TileGrid TileCell {
        height: 1fr;
        width: 1fr;
    }
    TileGrid .tile-picture {
        width: 1fr;
        height: 1fr;
    }
    TileGrid .tile-size {
        content-align: center middle;
        color: $text-muted;
        background: $surface;
    }
    TileGrid .tile-label {
        height: 1;
        width: 1fr;
    }
    TileGrid TileCell.-dropped .tile-picture {
        tint: $background 60%;
    }
    TileGrid TileCell.-cursor .tile-label {
        background: $primary 40%;
    }
    TileGrid:focus TileCell.-cursor .tile-label {
        background: $primary;
        color: $text;
    }
    """

    BINDINGS = [
        Binding(
            "space",
            "toggle_keep",
            "Keep/drop",
            id="tiles.toggle",
            tooltip="Keep or drop the tile under the cursor",
        ),
        Binding(
            "a", "keep_all", "Keep all", id="tiles.keep_all", tooltip="Keep every tile, flagged ones too"
        ),
        Binding(
            "r",
            "reset",
            "Suggested",
            id="tiles.reset",
            tooltip="Keep the tiles without flags and drop the low-information ones (the start)",
        ),
        Binding("left", "move(0, -1)", "Left", show=False, id="tiles.left", tooltip="Tile to the left"),
        Binding("right", "move(0, 1)", "Right", show=False, id="tiles.right", tooltip="Tile to the right"),
        Binding("up", "move(-1, 0)", "Up", show=False, id="tiles.up", tooltip="Tile above"),
        Binding("down", "move(1, 0)", "Down", show=False, id="tiles.down", tooltip="Tile below"),
        Binding("h", "move(0, -1)", "Left", show=False, id="tiles.h", tooltip="Tile to the left"),
        Binding("l", "move(0, 1)", "Right", show=False, id="tiles.l", tooltip="Tile to the right"),
        Binding("k", "move(-1, 0)", "Up", show=False, id="tiles.k", tooltip="Tile above"),
        Binding("j", "move(1, 0)", "Down", show=False, id="tiles.j", tooltip="Tile below"),
    ]

    cursor: reactive[int] = reactive(0, init=False)

    class Changed(Message):
        """The kept tiles or the cursor changed."""

        def __init__(self, grid: TileGrid) -> None:
            super().__init__()
            self.grid = grid

        @property
        def control(self) -> TileGrid:
            return self.grid

    def __init__(self, image_class: ImageWidgetClass | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_class = image_class
        self.plan: TilePlan | None = None
        self.kept: set[str] = set()
        self.cells: list[TileCell] = []

    def show_plan(self, plan: TilePlan, pictures: dict[str, PILImage.Image] | None = None) -> None:
        """Show a plan's tiles; the low-information ones start dropped."""
        self.plan = plan
        self.kept = {tile.name for tile in plan.tiles if not tile.low_information}
        self.remove_children()
        self.styles.grid_size_columns = plan.grid.cols
        self.styles.grid_size_rows = plan.grid.rows
        pictures = pictures or {}
        self.cells = [TileCell(tile, pictures.get(tile.name), self.image_class) for tile in plan.tiles]
        self.mount_all(self.cells)
        self.call_after_refresh(self._redraw_all)
        self.set_reactive(TileGrid.cursor, 0)
        self.post_message(self.Changed(self))

    def clear(self) -> None:
        """Show no tiles."""
        self.plan = None
        self.kept = set()
        self.cells = []
        self.remove_children()
        self.post_message(self.Changed(self))

    @property
    def current(self) -> Tile | None:
        """The tile under the cursor."""
        if not self.cells:
            return None
        return self.cells[min(self.cursor, len(self.cells) - 1)].tile

    def kept_tiles(self) -> list[Tile]:
        """The tiles to write, in grid order."""
        return [cell.tile for cell in self.cells if cell.tile.name in self.kept]

    def _redraw_all(self) -> None:
        for index, cell in enumerate(self.cells):
            if cell.is_mounted:
                cell.show_state(cell.tile.name in self.kept)
                cell.set_class(index == self.cursor, "-cursor")

    def watch_cursor(self, old: int, new: int) -> None:
        for index in (old, new):
            if 0 <= index < len(self.cells):
                self.cells[index].set_class(index == new, "-cursor")
        self.post_message(self.Changed(self))

    def action_move(self, rows: int, cols: int) -> None:
        if self.plan is None or not self.cells:
            return
        width = self.plan.grid.cols
        row, col = divmod(self.cursor, width)
        row = max(0, min(self.plan.grid.rows - 1, row + rows))
        col = max(0, min(width - 1, col + cols))
        self.cursor = row * width + col

    def action_toggle_keep(self) -> None:
        tile = self.current
        if tile is None:
            return
        self.kept ^= {tile.name}
        self.cells[self.cursor].show_state(tile.name in self.kept)
        self.post_message(self.Changed(self))

    def action_keep_all(self) -> None:
        if self.plan is not None:
            self.kept = {tile.name for tile in self.plan.tiles}
            self._redraw_all()
            self.post_message(self.Changed(self))

    def action_reset(self) -> None:
        if self.plan is not None:
            self.kept = {tile.name for tile in self.plan.tiles if not tile.low_information}
            self._redraw_all()
            self.post_message(self.Changed(self))
