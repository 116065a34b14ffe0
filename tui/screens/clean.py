"""The Clean section: the dataset's quality overview, and the tiles tool (the style precision method).

The overview lists each quality flag with the images that carry it and the near-duplicate
groups with their members; enter on an image opens it in the dataset section. The tiles
tool cuts one large image into a grid, shows every tile with its score and flags, and
writes the tiles the user keeps into a concept folder of the dataset, which the dataset
section then picks up. The judgement comes from the dataset screen (it owns the analysis);
decoding, measuring and writing tiles run in workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.engine.analysis.quality import DUPLICATE, DatasetQuality
from kiln.engine.curate import FLAG_PREFIX, Curation
from kiln.engine.errors import KilnError, UsageError
from kiln.engine.tiles import (
    Grid,
    Source,
    Tile,
    TilePlan,
    check_output,
    existing_tiles,
    load_source,
    plan_tiles,
    stale_tiles,
    tile_image,
    write_tiles,
)
from kiln.tui.form_keys import field_tab_bindings
from kiln.tui.messages import FilesChanged, QualityJudged
from kiln.tui.screens.section import SectionScreen
from kiln.tui.screens.yes_no import YesNoScreen
from kiln.tui.widgets.fixup_pane import FixupPane
from kiln.tui.widgets.image_preview import image_widget_class
from kiln.tui.widgets.section_bar import SectionBar
from kiln.tui.widgets.tile_grid import TileGrid
from PIL import Image as PILImage
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Input, Label, Static, TabbedContent, TabPane, Tree
from textual.widgets.tree import TreeNode
from textual.worker import get_current_worker

# The terminal shows at most this many rows or columns of tiles; kiln tiles cuts finer grids.
MAX_GRID_SIDE = 8
# Leaves listed under one flag; the dataset's flag filter shows the rest.
MAX_LEAVES = 500
THUMBNAIL_SIDE = 256
DEFAULT_OUT = "10_style"

# What a flag means, in a few words, for the overview.
FLAG_TITLES = {
    "blurry": "blurred or featureless",
    "overexposed": "blown to white",
    "underexposed": "crushed to black",
    "low_information": "nearly flat",
    "transparency": "transparent pixels",
    "exif_rotation": "EXIF rotation Kohya ignores",
    "odd_aspect": "unusual aspect ratio",
    "low_resolution": "would be upscaled",
    "duplicate": "near-duplicate of another image",
}


@dataclass(frozen=True)
class ImageRef:
    """A tree leaf: an image of the dataset, the flag it is listed under, its duplicate group."""

    path: str
    flag: str | None = None
    group: int = 0


@dataclass(frozen=True)
class FlagRef:
    """A tree node: a flag, or the duplicate groups (``duplicate``)."""

    flag: str


class CleanScreen(SectionScreen):
    """Quality overview and tiles tool over the workbench's dataset."""

    CSS_PATH = "clean.tcss"
    SECTION = "clean"

    BINDINGS = [
        # The tab titles name these two keys, so the footer leaves them out.
        Binding(
            "o",
            "show_tab('overview')",
            "Overview",
            show=False,
            id="clean.overview",
            tooltip="The quality overview: flags and near-duplicate groups",
        ),
        Binding(
            "t",
            "tiles",
            "Tiles",
            show=False,
            id="clean.tiles",
            tooltip="The tiles tool (on an image of the overview: tile that image)",
        ),
        Binding(
            "x",
            "show_tab('fixup')",
            "Fix-up",
            show=False,
            id="clean.fixup",
            tooltip="The Fix-up tab: the flagged images with what would fix them, before and after",
        ),
        Binding(
            "f",
            "filter_flag",
            "Filter dataset",
            id="clean.filter_flag",
            tooltip="Open the dataset section showing only the images with the flag under the cursor",
        ),
        Binding(
            "escape",
            "leave_field",
            "Leave field",
            id="clean.leave_field",
            tooltip="Leave the text field, so that o, t, w and the tile keys work again",
        ),
        *field_tab_bindings("clean"),
        Binding(
            "w",
            "write_tiles",
            "Write",
            id="clean.write",
            tooltip="Write the kept tiles and their captions into the folder (asks before replacing)",
        ),
    ]

    class TilesPlanned(Message):
        """A worker cut and measured an image; ``pictures`` are the previews by tile name."""

        def __init__(
            self, plan: TilePlan, source: Source, pictures: dict[str, PILImage.Image], key: tuple
        ) -> None:
            super().__init__()
            self.plan = plan
            self.source = source
            self.pictures = pictures
            self.key = key

    class TilesWritten(Message):
        """A worker wrote tiles into ``out``."""

        def __init__(self, out: Path, written: list[Path], stale: list[Path], warnings: list[str]) -> None:
            super().__init__()
            self.out = out
            self.written = written
            self.stale = stale
            self.warnings = warnings

    class TilesFailed(Message):
        """Planning or writing failed; ``error`` is one line for the user."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(self, curation: Curation, images: str = "auto") -> None:
        super().__init__()
        self.curation = curation
        self.images_mode = images
        self.source: Source | None = None  # the last plan's image, decoded once
        self._source_key: tuple | None = None
        self._source_edited = False
        self._prefilled = ""
        self._writing = False
        self._planning = False
        self._tile_note: Text | None = None  # the last write's outcome, under the plan's summary
        # The overview's contents, filled into the tree lazily (see show_quality).
        self._by_flag: dict[str, list[str]] = {}
        self._groups: dict[FlagRef, tuple[int, list[str], str | None]] = {}
        self._expanded: set = set()

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield SectionBar("clean")
        with TabbedContent(initial="overview", id="tabs"):
            with TabPane("o Overview", id="overview"):
                yield Static(id="quality-summary")
                yield Tree("quality", id="quality-tree")
                yield Static(id="quality-reason")
            with TabPane("t Tiles", id="tiles"):
                with Horizontal(classes="form-row"):
                    yield Label("image", classes="form-label")
                    yield Input(id="tile-source", compact=True, placeholder="path of a large image")
                    yield Label("grid", classes="form-label short")
                    yield Input("4x4", id="tile-grid", compact=True)
                    yield Label("overlap", classes="form-label short")
                    yield Input("0", id="tile-overlap", compact=True, type="integer")
                with Horizontal(classes="form-row"):
                    yield Label("into", classes="form-label")
                    yield Input(DEFAULT_OUT, id="tile-out", compact=True)
                    yield Label("caption", classes="form-label short")
                    yield Input(id="tile-caption", compact=True, placeholder="the folder's concept name")
                yield Static(id="tile-status")
                with Vertical(id="tile-pane"):
                    yield TileGrid(image_widget_class(self.images_mode), id="tile-view")
                    yield Static(id="tile-empty")
                yield Static(id="tile-info")
            with TabPane("x Fix-up", id="fixup"):
                yield FixupPane(self.curation, self.kiln, self.images_mode, id="fixup-pane")
        yield Footer()

    def on_mount(self) -> None:
        tree = self.query_one("#quality-tree", Tree)
        tree.show_root = False
        tree.guide_depth = 2
        self.query_one("#tile-view").display = False
        self.show_tile_hint()
        self.show_quality(self.curation.quality)
        tree.focus()

    def on_screen_resume(self) -> None:
        self.show_quality(self.curation.quality)
        self.query_one(FixupPane).refresh_plan()
        if not self._source_edited and self.active_tab == "tiles":
            self.prefill_source()

    @property
    def active_tab(self) -> str:
        """``overview``, ``tiles`` or ``fixup``."""
        return self.query_one("#tabs", TabbedContent).active

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        self.focus_tab(tab)

    def action_leave_field(self) -> None:
        view = self.query_one("#tile-view", TileGrid)
        if view.plan is not None and self.active_tab == "tiles":
            view.focus()
        else:
            self.query_one("#tabs", TabbedContent).query_one("ContentTabs").focus()

    def focus_tab(self, tab: str) -> None:
        """Put the focus where that tab's work starts."""
        if tab == "overview":
            self.query_one("#quality-tree", Tree).focus()
        elif tab == "fixup":
            self.query_one("#fixup-table").focus()
        elif self.query_one("#tile-view", TileGrid).plan is not None:
            self.query_one("#tile-view", TileGrid).focus()
        else:
            self.query_one("#tile-source", Input).focus()

    @on(TabbedContent.TabActivated, "#tabs")
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tiles" and not self._source_edited:
            self.prefill_source()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not super().check_action(action, parameters):
            return False  # a letter key while typing in a field: the field takes it
        if action == "filter_flag":
            return self.active_tab == "overview"
        if action == "leave_field":
            return isinstance(self.focused, Input)
        if action == "write_tiles":
            return self.active_tab == "tiles" and self.query_one("#tile-view", TileGrid).plan is not None
        return True

    # -- quality overview --------------------------------------------------------------------

    def on_quality_judged(self, message: QualityJudged) -> None:
        # Out of sight, the overview waits: on_screen_resume rebuilds it.
        if self.app.screen is self:
            self.show_quality(message.quality)
            self.query_one(FixupPane).quality_judged()

    def show_quality(self, quality: DatasetQuality) -> None:
        """Rebuild the overview from a judgement, keeping what was expanded and the cursor.

        Only expanded nodes get their children (a flag can carry thousands of images), the
        rest are filled when opened.
        """
        rows = self.curation.rows
        measured = sum(1 for row in rows.values() if row.analysis is not None and row.analysis.ok)
        pending = sum(1 for row in rows.values() if row.analysis is None)
        flagged = sum(1 for row in rows.values() if row.flags)
        summary = Text()
        if not rows:
            summary.append("No images in this dataset yet.")
        else:
            summary.append(f"{measured} of {len(rows)} images measured", style="bold")
            if pending:
                summary.append(f" · measuring {pending} (flags fill in as they arrive)", style="dim")
            summary.append(f" · {flagged} flagged")
            groups = len(quality.duplicates)
            summary.append(f" · {groups} duplicate group{'s' if groups != 1 else ''}")
            if measured and not flagged:
                summary.append("\nNo quality problems found.", style="green")
        self.query_one("#quality-summary", Static).update(summary)

        self._by_flag = {flag: [] for flag in self.curation.flag_counts()}
        for path, row in rows.items():
            for flag_id in row.flag_ids:
                self._by_flag[flag_id].append(path)
        self._groups = {}
        for index, members in enumerate(quality.duplicates, start=1):
            original = next(
                (
                    quality.images[path].duplicate_of
                    for path in members
                    if path in quality.images and quality.images[path].duplicate_of
                ),
                members[0],
            )
            self._groups[FlagRef(f"group:{'|'.join(members)}")] = (index, members, original)

        tree: Tree = self.query_one("#quality-tree", Tree)
        self._expanded = {
            node.data for node in self._tree_nodes(tree.root) if node.is_expanded and node.data is not None
        }
        cursor = tree.cursor_node.data if tree.cursor_node is not None else None
        tree.clear()
        for flag_id, paths in self._by_flag.items():
            label = Text.assemble(
                (f"{flag_id:<16}", "bold yellow"),
                f"{len(paths):>5} image{'s' if len(paths) != 1 else ' '}",
                (f"  {FLAG_TITLES.get(flag_id, '')}", "dim"),
            )
            self._restore(tree.root.add(label, data=FlagRef(flag_id)))
        if quality.duplicates:
            count = len(quality.duplicates)
            label = Text.assemble(
                (f"{'duplicate groups':<16}", "bold"),
                f"{count:>5} group{'s' if count != 1 else ' '}",
                ("  the original is listed first", "dim"),
            )
            self._restore(tree.root.add(label, data=FlagRef("groups")))
        if not tree.root.children:
            tree.root.add_leaf(Text("nothing flagged", style="dim"), data=None)
        for node in self._tree_nodes(tree.root):
            if node.data == cursor and cursor is not None:
                tree.move_cursor(node)
                break
        self.show_reason()

    def _restore(self, node: TreeNode) -> None:
        """Fill and expand ``node`` if it was expanded before the rebuild."""
        if node.data in self._expanded:
            self._fill(node)
            node.expand()

    def _fill(self, node: TreeNode) -> None:
        """Add a flag's images, the duplicate groups, or a group's members under ``node``."""
        data = node.data
        if node.children or not isinstance(data, FlagRef):
            return
        if data.flag in self._by_flag:
            paths = self._by_flag[data.flag]
            for path in paths[:MAX_LEAVES]:
                node.add_leaf(Text(path), data=ImageRef(path, data.flag))
            if len(paths) > MAX_LEAVES:
                node.add_leaf(
                    Text(f"… {len(paths) - MAX_LEAVES} more: f shows them all in the dataset", style="dim"),
                    data=None,
                )
        elif data.flag == "groups":
            for key, (index, members, _) in list(self._groups.items())[:MAX_LEAVES]:
                self._restore(node.add(f"group {index}  {len(members)} images", data=key))
            if len(self._groups) > MAX_LEAVES:
                node.add_leaf(
                    Text(
                        f"… {len(self._groups) - MAX_LEAVES} more: f shows them in the dataset", style="dim"
                    ),
                    data=None,
                )
        elif data in self._groups:
            index, members, original = self._groups[data]
            for path in sorted(members, key=lambda path: (path != original, path)):
                text = Text(path)
                text.append("  original" if path == original else "  duplicate", style="dim")
                node.add_leaf(text, data=ImageRef(path, DUPLICATE, index))

    @on(Tree.NodeExpanded, "#quality-tree")
    def node_expanded(self, event: Tree.NodeExpanded) -> None:
        self._fill(event.node)

    @staticmethod
    def _tree_nodes(root: TreeNode) -> list[TreeNode]:
        found: list[TreeNode] = []
        stack = list(root.children)
        while stack:
            node = stack.pop()
            found.append(node)
            stack.extend(node.children)
        return found

    @on(Tree.NodeHighlighted, "#quality-tree")
    def show_reason(self) -> None:
        """Under the tree: why the image under the cursor is flagged."""
        node = self.query_one("#quality-tree", Tree).cursor_node
        reason = self.query_one("#quality-reason", Static)
        data = node.data if node is not None else None
        if isinstance(data, ImageRef) and data.path in self.curation.rows:
            row = self.curation.rows[data.path]
            text = Text(data.path, style="bold")
            for flag in row.flags:
                text.append("\n")
                text.append(flag.id, style="bold yellow")
                text.append(f" {flag.reason}")
            text.append("\nenter: show in the dataset · t: tile this image", style="dim")
            reason.update(text)
        elif isinstance(data, FlagRef):
            reason.update(Text("enter: list the images · f: show them in the dataset section", style="dim"))
        else:
            reason.update("")

    @on(Tree.NodeSelected, "#quality-tree")
    def node_selected(self, event: Tree.NodeSelected) -> None:
        data = event.node.data
        if isinstance(data, ImageRef):
            self.jump_to(data.path)

    def jump_to(self, path: str) -> None:
        """Open the dataset section with the cursor on ``path``."""
        self.kiln.show_in_dataset(path)

    def action_filter_flag(self) -> None:
        node = self.query_one("#quality-tree", Tree).cursor_node
        flag = None
        while node is not None and flag is None:
            data = node.data
            if isinstance(data, ImageRef):
                flag = data.flag
            elif isinstance(data, FlagRef):
                flag = DUPLICATE if data.flag == "groups" or data.flag.startswith("group:") else data.flag
            node = node.parent
        if flag is None:
            self.notify("Put the cursor on a flag or an image first.")
            return
        self.kiln.show_in_dataset(filter=f"{FLAG_PREFIX}{flag}")

    # -- tiles: choosing -----------------------------------------------------------------------

    def action_tiles(self) -> None:
        node = self.query_one("#quality-tree", Tree).cursor_node
        picked = node.data if node is not None and self.active_tab == "overview" else None
        chosen = isinstance(picked, ImageRef)
        if isinstance(picked, ImageRef):
            self.query_one("#tile-source", Input).value = picked.path
            self._source_edited = True
        self.action_show_tab("tiles")
        if chosen:
            self.plan()

    def prefill_source(self) -> None:
        """Offer the dataset section's current image as the one to tile."""
        current = self.kiln.dataset_cursor()
        if current:
            self._prefilled = current
            self.query_one("#tile-source", Input).value = current

    @on(Input.Changed, "#tile-source")
    def source_changed(self, event: Input.Changed) -> None:
        # Typed by the user (not our prefill): keep it rather than follow the dataset's cursor.
        if event.input.has_focus and event.value != self._prefilled:
            self._source_edited = True

    @on(Input.Submitted, "#tile-source, #tile-grid, #tile-overlap")
    def plan_submitted(self) -> None:
        self.plan()

    @on(Input.Submitted, "#tile-out, #tile-caption")
    def out_submitted(self) -> None:
        view = self.query_one("#tile-view", TileGrid)
        if view.plan is not None:
            view.focus()

    def source_path(self, text: str) -> Path:
        """The image a typed path names: inside the dataset, else as given (``~`` expanded).

        Raises:
            UsageError: The path names no file.
        """
        if not text.strip():
            raise UsageError("give the path of an image to cut (inside the dataset, or absolute)")
        given = Path(text.strip()).expanduser()
        for candidate in [given] if given.is_absolute() else [self.curation.root / given, Path.cwd() / given]:
            if candidate.is_file():
                return candidate
        raise UsageError(
            f"{text.strip()}: no such image file; give a path inside the dataset or an absolute one"
        )

    def plan(self) -> None:
        """Check the form and cut the image in a worker."""
        try:
            path = self.source_path(self.query_one("#tile-source", Input).value)
            grid = Grid.parse(self.query_one("#tile-grid", Input).value or "4x4")
            if max(grid.rows, grid.cols) > MAX_GRID_SIDE:
                raise UsageError(
                    f"grid {grid}: the workbench shows up to {MAX_GRID_SIDE}x{MAX_GRID_SIDE}; "
                    "use kiln tiles for finer grids"
                )
            overlap_text = self.query_one("#tile-overlap", Input).value.strip() or "0"
            overlap = int(overlap_text)
            if overlap < 0:
                raise UsageError(f"overlap {overlap}: give 0 or more pixels")
        except (UsageError, ValueError) as exc:
            self.show_tile_error(str(exc))
            return
        self.show_tile_status(Text(f"cutting {path.name} into {grid}…", style="dim"))
        self._planning = True
        self.plan_worker(path, grid, overlap)

    @work(thread=True, exclusive=True, group="tiles")
    def plan_worker(self, path: Path, grid: Grid, overlap: int) -> None:
        """Decode (once per image), cut, measure and preview the tiles off the UI thread."""
        worker = get_current_worker()
        try:
            stat = path.stat()
            key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
            source = self.source if self._source_key == key and self.source is not None else None
            if source is None:
                source = load_source(path)
            if worker.is_cancelled:
                return
            plan = plan_tiles(source, grid, overlap, self.curation.thresholds.resolution)
            pictures: dict[str, PILImage.Image] = {}
            if self.images_mode != "none":
                for tile in plan.tiles:
                    if worker.is_cancelled:
                        return
                    picture = tile_image(source, tile)
                    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), reducing_gap=2.0)
                    pictures[tile.name] = picture
        except (KilnError, OSError) as exc:
            if not worker.is_cancelled:
                self.post_message(self.TilesFailed(str(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(self.TilesPlanned(plan, source, pictures, key))

    def on_clean_screen_tiles_planned(self, message: TilesPlanned) -> None:
        self._planning = False
        self.source = message.source
        self._source_key = message.key
        self._tile_note = None
        view = self.query_one("#tile-view", TileGrid)
        view.display = True
        self.query_one("#tile-empty").display = False
        view.show_plan(message.plan, message.pictures)
        view.focus()
        self.refresh_bindings()

    def on_clean_screen_tiles_failed(self, message: TilesFailed) -> None:
        self._writing = self._planning = False
        self.show_tile_error(message.error)

    @on(TileGrid.Changed, "#tile-view")
    def tiles_changed(self) -> None:
        view = self.query_one("#tile-view", TileGrid)
        self.show_tile_status(self._tile_note)
        tile = view.current
        info = Text()
        if tile is not None:
            kept = tile.name in view.kept
            info.append(f"{tile.name} ", style="bold")
            info.append(f"{tile.size[0]}x{tile.size[1]} · score {tile.score:.2f} · ")
            info.append("kept" if kept else "dropped", style="green" if kept else "red")
            for flag in tile.flags:
                info.append("\n")
                info.append(flag.id, style="bold yellow")
                info.append(f" {flag.reason}")
        self.query_one("#tile-info", Static).update(info)

    def show_tile_hint(self) -> None:
        self.query_one("#tile-empty", Static).update(
            "Cut one large image into a grid of tiles (the guide's style precision method).\n\n"
            "Type its path (inside the dataset or absolute), the grid and the overlap, then enter "
            "(tab moves between the fields, esc leaves them). "
            "Every tile shows its score; the low-information ones (blur, exposure, flat) start "
            "dropped. space keeps or drops a tile, w writes the kept ones with a caption into the "
            "folder given under 'into', which the dataset section then shows."
        )

    def plan_summary(self) -> Text | None:
        """The current plan in a line: source, tiles, how many are low-information and kept."""
        view = self.query_one("#tile-view", TileGrid)
        plan = view.plan
        if plan is None:
            return None
        width, height = plan.size
        tile_w, tile_h = plan.tiles[0].size
        low = sum(tile.low_information for tile in plan.tiles)
        summary = Text.assemble(
            (plan.source.name, "bold"),
            f" {width}x{height} · grid {plan.grid} · {len(plan.tiles)} tiles of about {tile_w}x{tile_h}",
            f" · {low} low-information" if low else " · none low-information",
            (f" · {len(view.kept)} to write", "bold"),
        )
        return summary

    def show_tile_status(self, note: Text | None) -> None:
        """Show the plan's summary, ``note`` (progress, an error, the last write), then warnings.

        The note comes before the plan's warnings: on a short terminal the status is cut from
        the bottom, and the warnings were already shown when the plan arrived.
        """
        self._tile_note = note
        view = self.query_one("#tile-view", TileGrid)
        warnings = view.plan.warnings if view.plan is not None else ()
        lines = [part for part in (self.plan_summary(), note) if part is not None]
        lines += [Text(f"⚠ {warning}", style="yellow") for warning in warnings]
        self.query_one("#tile-status", Static).update(Text("\n").join(lines))

    def show_tile_error(self, error: str) -> None:
        self.show_tile_status(Text(f"✗ {error}", style="bold red"))

    # -- tiles: writing ------------------------------------------------------------------------

    def out_path(self) -> Path:
        """The concept folder the tiles go into (relative paths are inside the dataset).

        Raises:
            UsageError: The field is empty.
        """
        text = self.query_one("#tile-out", Input).value.strip()
        if not text:
            raise UsageError("give the folder for the tiles, e.g. 10_style (inside the dataset)")
        given = Path(text).expanduser()
        return given if given.is_absolute() else self.curation.root / given

    def action_write_tiles(self) -> None:
        """Write the kept tiles; asks first when the folder already holds tiles of this image."""
        view = self.query_one("#tile-view", TileGrid)
        if view.plan is None or self.source is None:
            self.notify("Plan the tiles first: enter in the image field.")
            return
        if self._writing:
            return
        if self._planning:
            self.notify("Still cutting the image: write once its tiles are shown.", severity="warning")
            return
        tiles = view.kept_tiles()
        if not tiles:
            self.notify("No tile is kept: space keeps the tile under the cursor.", severity="warning")
            return
        stem = view.plan.source.stem
        try:
            out = self.out_path()
            # force: existing tiles are asked about below; this finds the other problems.
            warnings = check_output(out, [stem], True, [self.source.path])
        except UsageError as exc:
            self.show_tile_error(str(exc))
            return
        existing = existing_tiles(out, [stem])
        if not existing:
            self.write(tiles, out, False, warnings)
            return

        def decide(replace: bool | None) -> None:
            if replace:
                self.write(tiles, out, True, warnings)
            else:
                self.show_tile_status(Text("Nothing written: the folder keeps its tiles.", style="dim"))

        self.app.push_screen(
            YesNoScreen(
                "Replace tiles?",
                f"{self.display_path(out)} already holds {len(existing)} tile(s) of {view.plan.source.name} "
                f"(e.g. {existing[0].name}). Replace them with the {len(tiles)} kept now?",
                yes="replace them",
            ),
            decide,
        )

    def write(self, tiles: list[Tile], out: Path, force: bool, warnings: list[str]) -> None:
        caption = self.query_one("#tile-caption", Input).value.strip() or None
        self._writing = True
        self.show_tile_status(Text(f"writing {len(tiles)} tiles into {self.display_path(out)}…", style="dim"))
        self.write_worker(self.source, tiles, out, caption, force, warnings)

    @work(thread=True, exclusive=True, group="tiles-write")
    def write_worker(
        self,
        source: Source,
        tiles: list[Tile],
        out: Path,
        caption: str | None,
        force: bool,
        warnings: list[str],
    ) -> None:
        """Write all the tiles or none (kiln.engine.tiles.write_tiles stages them first)."""
        try:
            written = write_tiles(
                {source.path: source},
                tiles,
                out,
                caption,
                self.curation.dataset.caption_extension,
                force,
            )
        except (KilnError, OSError) as exc:
            self.post_message(self.TilesFailed(str(exc)))
            return
        self.post_message(
            self.TilesWritten(out, written, stale_tiles(out, [source.path.stem], written), warnings)
        )

    def on_clean_screen_tiles_written(self, message: TilesWritten) -> None:
        self._writing = False
        where = self.display_path(message.out)
        status = Text(f"✓ wrote {len(message.written)} tiles with captions into {where}", style="bold green")
        for warning in message.warnings:
            status.append(f"\n⚠ {warning}", style="yellow")
        if message.stale:
            status.append(
                f"\n⚠ {len(message.stale)} older tile(s) of this image remain there "
                f"(e.g. {message.stale[0].name}); remove them if they came from another grid",
                style="yellow",
            )
        root = self.curation.root.resolve()
        try:
            message.out.resolve().relative_to(root)
        except ValueError:
            status.append(
                "\nThat folder is outside the dataset: the dataset section does not show it.", style="dim"
            )
        else:
            if self.source is not None and self.source.path.resolve().parent == message.out.resolve():
                status.append(
                    f"\n{self.source.path.name} itself is in that folder too: exclude it in the dataset "
                    "section (space) if only its tiles should train.",
                    style="dim",
                )
            self.tell_dataset(message.written)
        self.show_tile_status(status)
        self.notify(f"Wrote {len(message.written)} tiles into {where}")

    def tell_dataset(self, written: list[Path]) -> None:
        """Make the dataset section rescan now (its watcher may be off, or miss a folder's move)."""
        root = self.curation.root.resolve()
        extension = self.curation.dataset.caption_extension
        paths = set()
        for path in written:
            relative = path.resolve().relative_to(root)
            paths |= {relative.as_posix(), relative.with_suffix(extension).as_posix()}
        if not self.kiln.tell_dataset(FilesChanged(paths, {})):
            self.curation.rescan()

    def display_path(self, path: Path) -> str:
        """``path`` relative to the dataset when inside it."""
        try:
            return path.resolve().relative_to(self.curation.root.resolve()).as_posix() + "/"
        except ValueError:
            return str(path)
