"""The client's pure parts of files: safe local names, sizes, progress lines, the chat line
of a file and the /send, /get commands."""

from __future__ import annotations

import io
import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatscreen.cli import format_message, parse_args
from chatscreen.cli_files import ChatProgress, ProgressBar, bar_line, clean_path, file_text
from chatscreen.client.files import (
    MAX_DISPLAY_NAME,
    MAX_NAME_BYTES,
    display_name,
    format_size,
    free_path,
    safe_name,
    too_large,
)
from chatscreen.commands import parse_command
from chatscreen.errors import ChatscreenError


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (512, "512 B"), (999, "999 B"), (1000, "1.0 kB"), (1234, "1.2 kB"),
    (1_200_000, "1.2 MB"), (999_999, "1.0 MB"), (100_000_000, "100.0 MB"),
    (2_000_000_000, "2.0 GB"), (10**18, "1000.0 PB"),
])
def test_sizes_are_shown_in_decimal_units(n: int, text: str) -> None:
    assert format_size(n) == text


@pytest.mark.parametrize(("name", "safe"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("/etc/passwd", "passwd"),
    ("C:\\Windows\\system32\\x.dll", "x.dll"),
    ("..", "file"),
    ("...", "file"),
    (".bashrc", "bashrc"),
    ("dir/", "dir"),
    ("a\x00b\nc.txt", "abc.txt"),
    ("evil\u202etxt.exe", "eviltxt.exe"),  # the bidi override that would show it as exe.txt
    ("CON", "_CON"),
    ("aux.txt", "_aux.txt"),
    ("lpt1.tar.gz", "_lpt1.tar.gz"),
    ("console.txt", "console.txt"),
    ('what?<>:"|*.txt', "what_______.txt"),
    ("name. . ", "name"),
    ("  spaced  ", "spaced"),
])
def test_safe_names(name: str, safe: str) -> None:
    assert safe_name(name) == safe


def test_safe_name_falls_back_to_a_cleaned_id() -> None:
    assert safe_name("../..", fallback="AbC_d-9") == "AbC_d-9"
    assert safe_name("/", fallback="../x") == "x"
    assert safe_name("", fallback="") == "file"


def test_safe_name_is_bounded_and_keeps_the_extension() -> None:
    name = safe_name("é" * 300 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= MAX_NAME_BYTES
    assert name[:-4] == "é" * ((MAX_NAME_BYTES - 4) // 2)  # never half a character
    assert len(safe_name("x" * 1000).encode()) == MAX_NAME_BYTES


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_any_name_gives_one_harmless_file_name(name: str) -> None:
    safe = safe_name(name)
    assert safe and len(safe.encode()) <= MAX_NAME_BYTES
    assert "/" not in safe and "\\" not in safe
    assert not safe.startswith(".") and safe not in (".", "..")
    assert not any(unicodedata.category(ch)[0] == "C" for ch in safe)
    assert safe == safe_name(safe)  # stable: a safe name stays as it is


def test_safe_names_stay_in_the_folder(tmp_path: Path) -> None:
    for name in ("../../x", "/etc/passwd", "..", "a/../../b", "C:\\x", "\\\\server\\share\\y"):
        path = (tmp_path / safe_name(name)).resolve()
        assert path.parent == tmp_path.resolve()


def test_free_path_never_picks_an_existing_file(tmp_path: Path) -> None:
    assert free_path(tmp_path, "a.txt") == tmp_path / "a.txt"
    (tmp_path / "a.txt").write_text("1")
    (tmp_path / "a (1).txt").write_text("2")
    os.symlink(tmp_path / "nowhere", tmp_path / "a (2).txt")  # a dangling link counts too
    assert free_path(tmp_path, "a.txt") == tmp_path / "a (3).txt"
    (tmp_path / "README").write_text("")
    assert free_path(tmp_path, "README") == tmp_path / "README (1)"


def test_display_name_of_a_local_file() -> None:
    assert display_name(Path("/tmp/report.pdf")) == "report.pdf"
    assert display_name(Path("/tmp/two\nlines.txt")) == "two\ufffdlines.txt"
    long = display_name(Path("/tmp/" + "x" * 300 + ".tar"))
    assert len(long) == MAX_DISPLAY_NAME and long.endswith(".tar")


def test_too_large_says_both_sizes() -> None:
    assert too_large(150_000_000, 100_000_000) == (
        "file too large: 150.0 MB (150000000 bytes); the server takes at most 100.0 MB "
        "(100000000 bytes)")


def test_progress_line() -> None:
    line = bar_line("uploading", "report.pdf", 1_200_000, 3_000_000, 5_100_000)
    assert line == ("sending report.pdf [########------------]  40%  1.2 MB / 3.0 MB  "
                    "5.1 MB/s")
    assert bar_line("downloading", "x", 0, 0, None).endswith("100%  0 B / 0 B")
    narrow = bar_line("uploading", "a-very-long-file-name-indeed.iso", 1, 2, None, width=60)
    assert len(narrow) <= 60 and "…" in narrow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_redraws_in_place_at_most_ten_times_a_second() -> None:
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar("f.bin", out, clock)
    bar("uploading", 0, 1000)
    for i in range(1, 10):
        clock.now += 0.01
        bar("uploading", i, 1000)  # too soon: not drawn
    clock.now += 1
    bar("uploading", 500, 1000)
    bar("uploading", 1000, 1000)  # the end is always drawn
    bar.finish()
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 3
    assert "  50%" in frames[1] and "B/s" in frames[1]
    assert "100%" in frames[2] and frames[2].endswith("\n")


def test_chat_progress_is_a_line_every_two_seconds() -> None:
    lines: list[str] = []
    clock = Clock()
    show = ChatProgress("f.bin", lambda text, **_: lines.append(text), clock)
    show("hashing", 100, 100)
    show("uploading", 10, 100)
    show("uploading", 20, 100)
    clock.now += 2.5
    show("uploading", 60, 100)
    assert lines == ["* sending f.bin (100 B)", "* f.bin: sending 60% of 100 B, 20 B/s"]


def test_a_file_message_in_chat() -> None:
    m = {"id": 7, "user": "alice", "ts": "2026-12-08T01:02:03Z", "room": "general",
         "kind": "file", "text": "[file] r.pdf (1.2 MB)",
         "file": {"id": "AbCdEfGhIjKlMnOp", "name": "r\u202efdp.exe\nboss: hi",
                  "size": 1_200_000, "mime": "application/pdf", "sha256": "0" * 64}}
    line = format_message(m, "general")
    assert line.endswith("] alice: [file AbCdEfGhIjKlMnOp] r<U+202E>fdp.exe<U+000A>boss: hi "
                         "(1.2 MB)")
    assert "\n" not in line
    assert file_text({"id": "x", "name": "a.txt", "size": 512}) == "[file x] a.txt (512 B)"
    assert file_text({"id": "x", "name": "a.txt", "size": 512, "expired": True}) == (
        "[file x] a.txt (512 B, expired)")
    expired = {**m, "file": None}
    assert format_message(expired, "general").endswith("alice: [file] r.pdf (1.2 MB)")


def test_send_and_get_commands() -> None:
    assert parse_command("/send my file.txt", "general").args == {"path": "my file.txt"}
    assert parse_command("/get AbC", "general").args == {"file": "AbC", "path": None}
    assert parse_command("/get AbC ~/x y.pdf", "general").args == {"file": "AbC",
                                                                   "path": "~/x y.pdf"}
    with pytest.raises(ChatscreenError, match=r"^/send PATH"):
        parse_command("/send ", "general")
    assert clean_path("'/tmp/a b.txt' ") == Path("/tmp/a b.txt")
    assert clean_path("~/x") == Path.home() / "x"


def test_get_file_takes_an_id_that_starts_with_a_dash() -> None:
    """Ids are URL-safe base64: one in 64 starts with '-'; it is still the ID."""
    where = ["--server", "h:1", "--user", "u"]
    args = parse_args(["get-file", "-AbCdEfGhIjKlMnOpQr", *where, "--output", "o.bin"])
    assert (args.id, args.output) == ("-AbCdEfGhIjKlMnOpQr", Path("o.bin"))
    args = parse_args(["get-file", *where, "-_bCdEfGhIjKlMnOpQr"])
    assert args.id == "-_bCdEfGhIjKlMnOpQr"
    args = parse_args(["get-file", *where, "--", "--AbCdEfGhIjKlMnOpQr"])
    assert args.id == "--AbCdEfGhIjKlMnOpQr"
    with pytest.raises(SystemExit):
        parse_args(["get-file", "--server-password-file", *where])  # an option, not an id
