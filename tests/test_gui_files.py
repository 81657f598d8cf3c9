"""Files in the desktop app (issue 18): attach (the button, Ctrl+V of a picture), progress
bars, previews inline that open full size, Save as…, and a share's picture into chat; on a
real Xvfb against the real server, driven as in tests/test_gui.py. The file dialogs are
Tk's own: the tests give their answers through ``App.ask_open_file`` / ``ask_save_file``."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chatscreen.client import Client, OutRect, ScreenChannel, ThreadedClient
from chatscreen.client.files import FileInfo, download, format_size, upload
from chatscreen.gui import files as files_module
from chatscreen.gui.files import (
    PictureError,
    decode_fitted,
    decode_preview,
    file_summary,
    has_preview,
    is_file_info,
    pasted_file,
)
from chatscreen.gui.net import close_loop
from chatscreen.screen.codec import encode_zlib
from tests.helpers.display import grab_display, render_test_picture
from tests.helpers.gui import GUI_TIMEOUT, GuiHarness
from tests.helpers.server import TIMEOUT, ServerProcess, running_server
from tests.test_gui import Headless, _bgra, bob, connected, gui, shots  # noqa: F401


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def a_png(path: Path, w: int = 900, h: int = 560, noise: int = 0) -> Path:
    """A test picture (text, gradients), and ``noise`` rows of random pixels (a larger
    file: PNG cannot shrink them)."""
    pic = np.asarray(render_test_picture(w, h).convert("RGB")).copy()
    if noise:
        pic[:noise] = np.random.default_rng(7).integers(0, 256, (noise, w, 3), np.uint8)
    Image.fromarray(pic, "RGB").save(path)
    return path


def file_messages(h: Headless) -> list[dict[str, Any]]:
    """The file messages ``h`` got, each once (a history page may bring one again)."""
    out: dict[int, dict[str, Any]] = {}
    for m in h.messages():
        if m.get("kind") == "file":
            out.setdefault(m["id"], m)
    return sorted(out.values(), key=lambda m: m["id"])


def shown_at(g: GuiHarness, widget: Any, x: int, y: int, w: int, h: int) -> np.ndarray:
    g.pump()
    rx, ry = widget.winfo_rootx() + x, widget.winfo_rooty() + y
    return grab_display(g.display)[ry : ry + h, rx : rx + w]


def preview_box(g: GuiHarness) -> tuple[str, tuple[int, int, int, int]]:
    """The first preview image in the timeline: its index and box in the text widget."""
    text = g.app.chat_tab.text
    index = text.index(text.tag_ranges("preview")[0])
    text.see(index)
    g.pump()
    box = text.bbox(index)
    assert box is not None
    return index, box


def bob_uploads(bob: Headless, path: Path, name: str) -> FileInfo:  # noqa: F811
    async def go(c: Client) -> FileInfo:
        return await upload(c, path, room="general", name=name)

    return bob.tc.call(go).result(TIMEOUT)


def bob_downloads(bob: Headless, file_id: str, dest: Path, *,  # noqa: F811
                  thumb: bool = False) -> Path:
    async def go(c: Client) -> Path:
        return (await download(c, file_id, dest, thumb=thumb)).path

    return bob.tc.call(go).result(TIMEOUT)


def test_attach_a_png_with_a_progress_bar_and_bob_gets_it_alice_sees_its_preview(
        gui: GuiHarness, server: ServerProcess, bob: Headless,  # noqa: F811
        tmp_path: Path) -> None:
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    png = a_png(tmp_path / "diagram.png", noise=300)  # ~0.8 MB: a few progress steps
    g.app.ask_open_file = lambda: str(png)
    g.click(chat.attach_button)
    g.wait_for(lambda: chat.transfer_panel.rows, "the progress row")
    (tid, row), = chat.transfer_panel.rows.items()
    assert row.bar.winfo_ismapped() and "Sending diagram.png to #general" in str(
        row.label.cget("text"))
    g.wait_for(lambda: chat.transfer_panel.ended.get(tid) == ("done", "sent"), "the upload")
    assert row.phase == "uploading" and row.done == row.total == png.stat().st_size
    assert float(row.bar.cget("value")) == 1000  # full
    assert "hashing" in row.phases and "uploading" in row.phases

    # bob gets it, with the same bytes
    g.wait_for(lambda: file_messages(bob), "bob to get the file")
    info = file_messages(bob)[0]["file"]
    assert info["name"] == "diagram.png" and info["mime"] == "image/png"
    got = bob_downloads(bob, info["id"], tmp_path / "got.png")
    assert sha256(got) == sha256(png)

    # alice's timeline: the file line, then its preview (the server's thumbnail)
    g.wait_for(lambda: chat.text.tag_ranges("preview"), "the preview in the timeline")
    shown = chat.shown_text()
    assert "You  diagram.png  " in shown and "PNG image · 900x560  Save as…" in shown
    thumb = bob_downloads(bob, info["id"], tmp_path / "thumb.png", thumb=True)
    want = np.asarray(Image.open(thumb).convert("RGB"))
    assert want.shape[:2] == (info["thumb"]["h"], info["thumb"]["w"])
    _, (x, y, w, h) = preview_box(g)
    assert (w, h) == (want.shape[1], want.shape[0])
    assert np.array_equal(shown_at(g, chat.text, x, y, w, h), want)
    g.wait_for(lambda: chat.transfer_panel.rows == {}, "the finished row to go")

    # in a private conversation: to bob alone; a text file has no preview
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    chat.select("@bob")
    g.app.ask_open_file = lambda: str(notes)
    g.click(chat.attach_button)
    g.wait_for(lambda: len(file_messages(bob)) == 2, "bob to get the private file")
    private = file_messages(bob)[1]
    assert private["to"] == "bob" and private.get("room") is None
    assert private["file"]["mime"] == "text/plain"
    g.wait_for(lambda: "You  notes.txt  5 B · text  Save as…" in chat.shown_text(),
               "the file line in the private conversation")
    assert not chat.text.image_names()


def test_bobs_picture_previews_opens_full_size_and_saves_as_the_same_bytes(
        gui: GuiHarness, server: ServerProcess, bob: Headless,  # noqa: F811
        tmp_path: Path, shots: Path) -> None:  # noqa: F811
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    png = a_png(tmp_path / "source.png", 1200, 700)
    bob.tc.call(lambda c: c.say("general", "the new layout:")).result(TIMEOUT)
    bob_uploads(bob, png, "layout.png")
    g.wait_for(lambda: chat.text.tag_ranges("preview"), "bob's preview")
    size = format_size(png.stat().st_size)
    assert f"bob  layout.png  {size} · PNG image · 1200x700  Save as…" in chat.shown_text()
    g.screenshot(shots / "file-preview.png")

    # a click on the preview: the picture full size (it fits the 1920x1080 screen)
    _, (x, y, w, h) = preview_box(g)
    g.click_at(chat.text.winfo_rootx() + x + w // 2, chat.text.winfo_rooty() + y + h // 2)
    g.wait_for(lambda: chat.files.pictures and chat.files.pictures[0].shown_size is not None,
               "the picture full size")
    window = chat.files.pictures[0]
    assert window.shown_size == (1200, 700)
    g.wait_for(lambda: window.picture.winfo_ismapped() and window.picture.winfo_width() >= 1200,
               "the picture on screen")
    label = window.picture
    bw = (label.winfo_width() - 1200) // 2
    bh = (label.winfo_height() - 700) // 2
    shown = shown_at(g, label, bw, bh, 1200, 700)
    assert np.array_equal(shown, np.asarray(Image.open(png).convert("RGB")))
    g.key("Escape")
    g.wait_for(lambda: not chat.files.pictures, "Esc to close it")

    # Save as…: the dialog offers the file's safe name; the bytes are the same
    offered: list[str] = []
    dest = tmp_path / "saved" / "here.png"
    dest.parent.mkdir()

    def ask(name: str) -> str:
        offered.append(name)
        return str(dest)

    g.app.ask_save_file = ask
    info = bob_uploads(bob, png, "../../shots/layout.png")  # a name is text, not a path
    g.wait_for(lambda: "bob  ../../shots/layout.png  " in chat.shown_text(), "the second")
    start = chat.text.tag_ranges("save")[-2]  # the last file's
    chat.text.see(start)
    g.pump()
    bx, by, _bw, bh2 = chat.text.bbox(f"{start} + 2 chars")  # type: ignore[misc]
    g.click_at(chat.text.winfo_rootx() + bx + 2, chat.text.winfo_rooty() + by + bh2 // 2)
    g.wait_for(lambda: offered, "the Save as dialog")
    assert offered == ["layout.png"]
    g.wait_for(lambda: any(r == "done" for r, _ in chat.transfer_panel.ended.values()),
               "the download")
    assert sha256(dest) == sha256(png) == info.sha256
    assert sorted(p.name for p in dest.parent.iterdir()) == ["here.png"]  # no .part left

    # bob deletes his message: it leaves alice's timeline, the other file stays
    bob.tc.call(lambda c: c._request("delete", id=info.message_id)).result(TIMEOUT)
    g.wait_for(lambda: "../../shots/layout.png" not in chat.shown_text(), "the deletion")
    assert "bob  layout.png  " in chat.shown_text()


def test_ctrl_v_of_a_picture_on_the_clipboard_attaches_it_text_pastes_as_text(
        gui: GuiHarness, server: ServerProcess, bob: Headless,  # noqa: F811
        tmp_path: Path) -> None:
    g = gui
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    png = a_png(tmp_path / "shot.png", 400, 300)
    env = {**os.environ, "DISPLAY": g.display}
    # xclip owns the clipboard with a picture only (as a screenshot tool does)
    owner = subprocess.Popen(["xclip", "-quiet", "-selection", "clipboard", "-t", "image/png",
                              "-i", str(png)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        g.click(chat.entry)
        g.wait_for(lambda: g.root.focus_get() is chat.entry, "the focus in the input")
        g.key("ctrl+v")
        g.wait_for(lambda: file_messages(bob), "bob to get the pasted picture")
    finally:
        owner.terminate()
        owner.wait(GUI_TIMEOUT)
    info = file_messages(bob)[0]["file"]
    assert info["name"].startswith("pasted-") and info["name"].endswith(".png")
    assert info["sha256"] == sha256(png) and info["mime"] == "image/png"
    assert chat.entry_text() == ""  # nothing pasted as text
    # text on the clipboard is pasted as text
    g.root.clipboard_clear()
    g.root.clipboard_append("just words")
    g.key("ctrl+v")
    g.wait_for(lambda: chat.entry_text() == "just words", "the text pasted")


def test_an_upload_cancelled_half_way_posts_nothing_and_leaves_nothing_stored(
        gui: GuiHarness, tmp_path: Path) -> None:  # noqa: F811
    g = gui
    # uploads at 4 MB/s on this server: a 32 MB file takes seconds, time to cancel it
    with running_server(tmp_path / "data", "--upload-rate-bytes", "4000000",
                        "--max-file-size", "40000000") as srv:
        carol = Headless(srv, "carol")
        try:
            connected(g, srv, "alice")
            chat = g.app.chat_tab
            g.select_tab("Chat")
            big = tmp_path / "big.bin"
            big.write_bytes(os.urandom(1 << 20) * 32)
            g.app.ask_open_file = lambda: str(big)
            g.click(chat.attach_button)
            g.wait_for(lambda: chat.transfer_panel.rows, "the progress row")
            (tid, row), = chat.transfer_panel.rows.items()
            g.wait_for(lambda: row.phase == "uploading" and row.done > 0, "bytes on their way")
            assert 0 < float(row.bar.cget("value")) < 1000
            # the chat goes on meanwhile
            g.type_into(chat.entry, "while it uploads", enter=True)
            g.wait_for(lambda: carol.got("while it uploads", user="alice"), "the message")
            assert tid not in chat.transfer_panel.ended and row.done < row.total
            g.click(row.cancel_button)
            g.wait_for(lambda: tid in chat.transfer_panel.ended, "the transfer to end")
            assert chat.transfer_panel.ended[tid] == ("cancelled", "cancelled")
            assert str(row.cancel_button.cget("text")) == "Close"
            # the server dropped the partial upload (`cancel`)
            partial = srv.data_dir / "files" / "partial"
            g.wait_for(lambda: not any(p.is_file() for p in partial.rglob("*")),
                       "the partial upload to go")
            # nothing posted: carol's next message comes, and no file before it
            g.type_into(chat.entry, "after the cancel", enter=True)
            g.wait_for(lambda: carol.got("after the cancel", user="alice"), "the message")
            assert file_messages(carol) == []

            # over the server's limit: refused, said in the row and in the conversation
            huge = tmp_path / "huge.bin"
            with huge.open("wb") as f:
                f.truncate(50_000_000)
            g.app.ask_open_file = lambda: str(huge)
            g.click(chat.attach_button)
            g.wait_for(lambda: len(chat.transfer_panel.ended) == 2, "the refusal")
            result, text = chat.transfer_panel.ended[max(chat.transfer_panel.ended)]
            assert result == "failed" and "50000000 bytes" in text, text
            assert "at most" in text and "40000000 bytes" in text, text
            g.wait_for(lambda: "Not sent: huge.bin (" in chat.shown_text(),
                       "the note in the conversation")
            assert file_messages(carol) == []
        finally:
            carol.close()


def test_snapshot_to_chat_from_the_screen_tab_posts_the_picture_losslessly(
        gui: GuiHarness, server: ServerProcess, bob: Headless,  # noqa: F811
        tmp_path: Path) -> None:
    g = gui
    picture = np.asarray(render_test_picture(800, 500).convert("RGB"))
    h, w = picture.shape[:2]
    painter = ThreadedClient("127.0.0.1", "painter", chat_port=server.chat_port,
                             screen_port=server.screen_port, timeout=TIMEOUT)
    screens: list[ScreenChannel] = []

    async def share(c: Client) -> None:
        screen = await c.open_screen()
        screens.append(screen)
        await screen.share(w, h)
        await screen.send_frame(w, h, [OutRect(0, 0, w, h, "zlib", encode_zlib(_bgra(picture)))],
                                key=True)

    try:
        painter.connect().result(TIMEOUT)
        connected(g, server, "alice")
        tab = g.app.screen_tab
        g.select_tab("Screen Share")
        assert str(tab.snapshot_button.cget("state")) == "disabled"
        painter.call(share).result(TIMEOUT)
        g.wait_for(lambda: tab.selected_label().startswith("▣ painter"), "the share")
        g.click(tab.watch_button)
        g.wait_for(lambda: str(tab.snapshot_button.cget("state")) == "normal",
                   "the snapshot button")
        assert str(tab.snapshot_button.cget("text")) == "Snapshot to #general"
        g.click(tab.snapshot_button)
        g.wait_for(lambda: file_messages(bob), "bob to get the picture")
        info = file_messages(bob)[0]["file"]
        assert info["name"].startswith("painter-screen-") and info["mime"] == "image/png"
        got = bob_downloads(bob, info["id"], tmp_path / "snap.png")
        assert np.array_equal(np.asarray(Image.open(got).convert("RGB")), picture)
        assert "#general" in str(tab.watch_status.cget("text"))

        # a share for the members of #design: its picture goes there, whatever room the
        # Chat tab shows
        bob.tc.call(lambda c: c.join("design")).result(TIMEOUT)
        painter.call(lambda c: c.join("design")).result(TIMEOUT)
        chat = g.app.chat_tab
        g.select_tab("Chat")
        g.type_into(chat.entry, "/join design", enter=True)
        g.wait_for(lambda: chat.current == "#design", "#design")
        chat.select("#general")
        g.select_tab("Screen Share")
        # the button follows the conversation shown, once the tab is shown again
        g.wait_for(lambda: str(tab.snapshot_button.cget("text")) == "Snapshot to #general",
                   "the button to say #general")
        painter.run(screens[0].share(w, h, room="design")).result(TIMEOUT)
        g.wait_for(lambda: str(tab.snapshot_button.cget("text")) == "Snapshot to #design",
                   "the button to say #design")
        g.click(tab.snapshot_button)
        try:
            g.wait_for(lambda: any(m.get("room") == "design" for m in file_messages(bob)),
                       "the picture in #design")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; transfers: {chat.transfer_panel.ended}; "
                                 f"bob's files: {file_messages(bob)}; "
                                 f"status: {tab.watch_status.cget('text')}") from None
        assert [m["room"] for m in file_messages(bob)] == ["general", "design"]
    finally:
        for screen in screens:
            painter.run(screen.close()).result(TIMEOUT)
        painter.close()
        close_loop(painter)


# -- the decoders' bounds (no display needed) ---------------------------------------------


def test_pictures_are_decoded_within_bounds(tmp_path: Path) -> None:
    # full size: scaled down to fit, never up
    big = a_png(tmp_path / "big.png", 1600, 900)
    fitted = decode_fitted(big, (800, 800))
    assert fitted.size == (800, 450)
    small = a_png(tmp_path / "small.png", 200, 100)
    assert decode_fitted(small, (800, 800)).size == (200, 100)
    # over 50 megapixels: not decoded at all (a 1-bit PNG of 56 Mpx is a few kB)
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 7000)).save(huge)
    assert huge.stat().st_size < 100_000
    with pytest.raises(PictureError, match="too large to show"):
        decode_fitted(huge, (800, 800))
    # not a picture, or a kind not opened here
    (tmp_path / "x.png").write_bytes(b"%PDF-1.4 not a picture")
    with pytest.raises(PictureError, match="cannot be shown"):
        decode_fitted(tmp_path / "x.png", (800, 800))
    # a preview is the server's PNG of at most 320x320: a JPEG, or one over 640, is refused
    Image.new("RGB", (100, 100)).save(tmp_path / "p.jpg")
    with pytest.raises(PictureError):
        decode_preview(tmp_path / "p.jpg")
    with pytest.raises(PictureError, match="preview too large"):
        decode_preview(a_png(tmp_path / "wide.png", 700, 100))
    assert decode_preview(a_png(tmp_path / "ok.png", 320, 200)).size == (320, 200)


def test_a_file_line_needs_a_well_formed_description(tmp_path: Path) -> None:
    good = {"id": "q7Z-abc_123", "name": "cat.png", "size": 84211, "mime": "image/png",
            "w": 640, "h": 480, "thumb": {"w": 320, "h": 240}}
    assert is_file_info(good) and has_preview(good)
    assert file_summary(good) == "84.2 kB · PNG image · 640x480"
    for bad in ({**good, "id": "../../x"}, {**good, "id": 5}, {**good, "size": "1"},
                {k: v for k, v in good.items() if k != "name"}, "nope", None):
        assert not is_file_info(bad), bad
    assert not has_preview({**good, "expired": True})
    assert pasted_file("x-special/nautilus-clipboard\ncopy\nfile:///nonexistent/a b.png") is None
    assert pasted_file("just words") is None
    there = tmp_path / "a b.png"
    there.write_bytes(b"x")
    assert pasted_file(f"copy\n{there.as_uri()}\n") == there  # (%20 decoded)


def test_previews_past_the_ones_kept_are_not_fetched_again_and_still_open(
        gui: GuiHarness, server: ServerProcess, bob: Headless,  # noqa: F811
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = gui
    monkeypatch.setattr(files_module, "PREVIEWS_KEPT", 1)
    connected(g, server, "alice")
    chat = g.app.chat_tab
    g.select_tab("Chat")
    net = g.app.net
    assert net is not None
    fetched: list[str] = []
    fetch = net.preview

    def counted(file_id: str, folder: Path) -> None:
        fetched.append(file_id)
        fetch(file_id, folder)

    monkeypatch.setattr(net, "preview", counted)
    first = bob_uploads(bob, a_png(tmp_path / "one.png", 300, 200), "one.png")
    g.wait_for(lambda: chat.text.image_names(), "the first preview")
    bob_uploads(bob, a_png(tmp_path / "two.png", 200, 300), "two.png")
    g.wait_for(lambda: "show the picture" in chat.shown_text(), "the first one dropped")
    assert len(chat.text.image_names()) == 1  # the second one's
    for _ in range(3):  # redraws do not fetch the dropped one again
        chat._render()
    assert len(fetched) == 2
    start = chat.text.search("show the picture", "1.0")
    bx, by, _bw, bh = chat.text.bbox(f"{start} + 2 chars")  # type: ignore[misc]
    g.click_at(chat.text.winfo_rootx() + bx + 2, chat.text.winfo_rooty() + by + bh // 2)
    g.wait_for(lambda: chat.files.pictures and chat.files.pictures[0].shown_size == (300, 200),
               "the first picture full size")
    assert chat.files.pictures[0].info["id"] == first.id
