"""The Chat tab's files: a file's line and preview in the timeline, Attach…, Ctrl+V, Save as…,
a picture opened full size, a share's snapshot posted, and the transfers' progress rows.

:class:`ChatFiles` belongs to the Chat tab (seen as a :class:`FilesTab`; Tk thread only);
the transfers run on the network loop (:class:`~chatscreen.gui.net.NetSession`), their
progress and end come back as ``gui_transfer`` / ``gui_transfer_done`` events, a preview as
``gui_preview``, a pasted picture as ``gui_paste``.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import threading
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tkinter import ttk
from typing import TYPE_CHECKING, Any, Protocol

from chatscreen.client.files import FileError, local_size, picture_name, safe_name
from chatscreen.gui.files import (
    TEXT_TARGETS,
    ClipboardError,
    FileCache,
    PictureWindow,
    TransferPanel,
    clipboard_picture,
    clipboard_targets,
    file_summary,
    has_preview,
    pasted_file,
    pasted_name,
)
from chatscreen.gui.net import gui_event
from chatscreen.protocol import Message
from chatscreen.text import one_line

if TYPE_CHECKING:
    from chatscreen.gui.host import ChatHost


class FilesTab(Protocol):
    """What ChatFiles uses of the Chat tab (chat_tab.ChatTab)."""

    app: ChatHost
    text: tk.Text  # the timeline
    transfer_panel: TransferPanel
    input_error: ttk.Label  # why something typed or pasted was not sent
    current: str | None  # the conversation shown: "#room" or "@user"

    def note(self, key: str, text: str) -> None: ...

    def redraw_later(self) -> None: ...

#: the events for ChatFiles.on_event
FILE_EVENTS = frozenset({"gui_transfer", "gui_transfer_done", "gui_preview", "gui_paste"})


@dataclass
class Transfer:
    """An upload or download under way, as the Chat tab follows it."""

    kind: str  # "upload", "save", "open"
    name: str  # the file's
    key: str | None = None  # the conversation an upload goes to
    future: Any = None  # concurrent.futures.Future of the network loop's task
    window: PictureWindow | None = None  # "open": where the picture goes
    cleanup: Path | None = None  # a folder of ours to remove once it ends


class ChatFiles:
    def __init__(self, tab: FilesTab) -> None:
        self.tab = tab
        self.app = tab.app
        self.cache = FileCache()  # previews, and the app's temporary folder
        self.file_tags: dict[str, dict[str, Any]] = {}  # text tag -> a file's info
        self.transfers: dict[int, Transfer] = {}
        self.pictures: list[PictureWindow] = []  # pictures open full size
        self._tids = itertools.count(1)

    def on_event(self, ev: Message) -> None:
        kind = ev.type
        if kind == "gui_transfer":
            self._on_transfer(ev)
        elif kind == "gui_transfer_done":
            self._on_transfer_done(ev)
        elif kind == "gui_preview":
            self.cache.put(ev["file"], ev["image"] if ev["image"] is not None else "failed")
            self.tab.redraw_later()
        elif kind == "gui_paste":
            self._on_pasted(ev)

    def insert(self, info: dict[str, Any], cont: tuple[str, ...],
                     line: tuple[str, ...]) -> None:
        """``NAME  84.2 kB · PNG image  Save as…``, and under it the preview (the server's
        thumbnail, fetched once), which opens the picture full size."""
        text = self.tab.text
        n = len(self.file_tags)
        self.file_tags[f"file{n}"] = info
        text.insert("end", one_line(str(info.get("name", "")), isolate=False),
                    ("filename", *line))
        if info.get("expired"):
            text.insert("end", f"  {file_summary(info)} · expired", ("filemeta", *line))
            return
        text.insert("end", f"  {file_summary(info)}  ", ("filemeta", *line))
        text.insert("end", "Save as…", ("save", f"file{n}", *line))
        if not has_preview(info):
            return
        state = self.cache.state(str(info["id"]))
        text.insert("end", "\n", line)
        if state == "dropped":  # not kept (many pictures): a click opens it all the same
            text.insert("end", "show the picture", ("action", "preview", f"file{n}", *cont))
            return
        if state is None or isinstance(state, str):
            if state is None:
                self._fetch_preview(str(info["id"]))
            shown = "loading the preview…" if state != "failed" else "(no preview)"
            text.insert("end", shown, ("filemeta", *cont))
            return
        at = text.index("end-1c")
        text.image_create("end", image=state, padx=2)
        for tag in ("preview", f"file{n}", *cont):
            text.tag_add(tag, at)

    def _fetch_preview(self, file_id: str) -> None:
        net = self.app.net
        if net is None:
            return
        self.cache.put(file_id, "loading")
        net.preview(file_id, self.cache.folder)

    def _file_at(self, index: str) -> dict[str, Any] | None:
        for tag in self.tab.text.tag_names(index):
            info = self.file_tags.get(str(tag))
            if info is not None:
                return info
        return None

    def on_preview_click(self, _event: object) -> str:
        info = self._file_at("current")
        if info is not None:
            self.open_picture(info)
        return "break"

    def on_save_click(self, _event: object) -> str:
        info = self._file_at("current")
        if info is not None:
            self.save_as(info)
        return "break"

    def _target(self) -> tuple[str, dict[str, str]] | None:
        """The conversation shown, and where a file posted there goes (room= or to=)."""
        key = self.tab.current
        if key is None:
            return None
        return key, ({"room": key[1:]} if key.startswith("#") else {"to": key[1:]})

    def attach_dialog(self) -> None:
        """The Attach… button: pick a file, post it to the conversation shown."""
        if self.app.net is None or self.tab.current is None:
            self.tab.input_error.configure(text="Connect first")
            return
        path = self.app.ask_open_file()
        if path:
            self.attach(Path(path))

    def attach(self, path: Path, *, name: str | None = None,
               cleanup: Path | None = None) -> int | None:
        """Post a file to the conversation shown, with a progress row; its transfer id."""
        net, target = self.app.net, self._target()
        if net is None or target is None:
            return None
        key, where = target
        try:
            local_size(path)
        except FileError as exc:
            self.tab.input_error.configure(text=f"Not sent: {exc}")
            return None
        self.tab.input_error.configure(text="")
        shown = name or path.name
        tid = next(self._tids)
        transfer = self.transfers[tid] = Transfer("upload", shown, key, cleanup=cleanup)
        self.tab.transfer_panel.add(tid, f"Sending {shown} to {key}", lambda: self.cancel(tid))
        transfer.future = net.upload(tid, path, name=name, **where)
        return tid

    def post_snapshot(self, share: dict[str, Any], take: Callable[[], Any]) -> int | None:
        """Post the picture of a share being watched (``take()``: on the render thread) as a
        PNG: to the share's room if the server says it is for a room's members, else to the
        conversation shown."""
        net = self.app.net
        target = self.snapshot_target(share)
        if net is None or target is None:
            return None
        where = {"room": target[1:]} if target.startswith("#") else {"to": target[1:]}
        name = picture_name(str(share["user"]))
        tid = next(self._tids)
        transfer = self.transfers[tid] = Transfer("upload", name, target)
        self.tab.transfer_panel.add(tid, f"Posting {name} to {target}", lambda: self.cancel(tid))
        transfer.future = net.upload_picture(tid, take, name, **where)
        return tid

    def snapshot_target(self, share: dict[str, Any] | None) -> str | None:
        """Where "Snapshot to chat" posts: "#room" or "@user"."""
        room = share.get("room") if share is not None else None
        if isinstance(room, str) and room:
            return f"#{room}"
        return self.tab.current

    def save_as(self, info: dict[str, Any]) -> int | None:
        """Save as…: ask where (the file's safe name offered), download with a progress row."""
        net = self.app.net
        if net is None:
            return None
        name = safe_name(str(info.get("name", "")), fallback=str(info["id"]))
        chosen = self.app.ask_save_file(name)
        if not chosen:
            return None
        tid = next(self._tids)
        self.transfers[tid] = Transfer("save", name)
        self.tab.transfer_panel.add(tid, f"Saving {name}", lambda: self.cancel(tid))
        self.transfers[tid].future = net.download(tid, str(info["id"]), Path(chosen))
        return tid

    def open_picture(self, info: dict[str, Any]) -> PictureWindow | None:
        """A preview clicked: the picture full size in a window of its own."""
        net = self.app.net
        if net is None:
            return None
        tid = next(self._tids)
        window = PictureWindow(self.tab.text, info, lambda w: self._picture_closed(tid, w))
        self.pictures.append(window)
        folder = self.cache.scratch("picture-")
        self.transfers[tid] = Transfer("open", str(info.get("name", "")), window=window)
        self.transfers[tid].future = net.open_picture(tid, str(info["id"]), folder,
                                                      window.box())
        return window

    def _picture_closed(self, tid: int, window: PictureWindow) -> None:
        with contextlib.suppress(ValueError):
            self.pictures.remove(window)
        self.cancel(tid)

    def cancel(self, tid: int) -> None:
        transfer = self.transfers.get(tid)
        if transfer is not None and transfer.future is not None:
            transfer.future.cancel()

    def _on_transfer(self, ev: Message) -> None:
        transfer = self.transfers.get(ev["tid"])
        if transfer is None:
            return
        if transfer.window is not None:
            transfer.window.progress(ev["done"], ev["total"])
        else:
            self.tab.transfer_panel.update_row(ev["tid"], ev["phase"], ev["done"], ev["total"])

    def _on_transfer_done(self, ev: Message) -> None:
        transfer = self.transfers.pop(ev["tid"], None)
        if transfer is None:
            return
        if transfer.cleanup is not None:
            shutil.rmtree(transfer.cleanup, ignore_errors=True)
        error, result = ev.get("error"), ev.get("result")
        if transfer.window is not None:
            if error is not None:
                transfer.window.fail(f"Cannot open it: {error}")
            elif result is not None and transfer.window.winfo_exists():
                transfer.window.show(result)
            return
        if ev.get("cancelled"):
            self.tab.transfer_panel.finish(ev["tid"], "cancelled", "cancelled")
        elif error is not None:
            self.tab.transfer_panel.finish(ev["tid"], "failed", error)
            if transfer.key is not None:
                self.tab.note(transfer.key, f"Not sent: {transfer.name} ({error})")
        elif transfer.kind == "save":
            self.tab.transfer_panel.finish(ev["tid"], "done", f"saved to {result.path.name}")
        else:
            self.tab.transfer_panel.finish(ev["tid"], "done", "sent")

    def on_paste(self, _event: object) -> str | None:
        """Ctrl+V: text is pasted as text (a file copied in a file manager, a file:// URI,
        is attached); a picture alone on the clipboard (a screenshot) is read off the Tk
        thread and attached."""
        if self.app.net is None or self.tab.current is None:
            return None
        offered = clipboard_targets(self.tab.text)
        if not offered & TEXT_TARGETS and any(t.startswith("image/") for t in offered):
            return self._paste_picture()
        try:
            text = str(self.tab.text.clipboard_get())
        except tk.TclError:  # nothing on the clipboard
            return None
        path = pasted_file(text)
        if path is None:
            return None  # Tk pastes the text
        self.attach(path)
        return "break"

    def _paste_picture(self) -> str:
        assert self.app.net is not None
        events = self.app.net.events
        folder = self.cache.scratch("pasted-")
        path = folder / pasted_name()

        def read() -> None:  # a thread: xclip may wait for the clipboard's owner (us)
            error = None
            try:
                data = clipboard_picture()
                if data is None:
                    error = "nothing to paste: no text nor picture on the clipboard"
                else:
                    path.write_bytes(data)
            except (ClipboardError, OSError) as exc:
                error = str(exc)
            events.put(gui_event("paste", path=str(path), error=error))

        threading.Thread(target=read, name="clipboard", daemon=True).start()
        return "break"

    def _on_pasted(self, ev: Message) -> None:
        path = Path(ev["path"])
        if ev.get("error") is not None:
            shutil.rmtree(path.parent, ignore_errors=True)
            self.tab.input_error.configure(text=f"Not pasted: {ev['error']}")
            return
        self.attach(path, name=path.name, cleanup=path.parent)

    def release(self) -> None:
        """The window is gone: drop the photos here, on the Tk thread (see App.quit)."""
        for window in list(self.pictures):
            window.close()
        self.cache.release()
