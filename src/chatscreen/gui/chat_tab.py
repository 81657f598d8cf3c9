"""The Chat tab: conversations (rooms and private), the people in a room, the messages."""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import time
import tkinter as tk
from dataclasses import dataclass, field
from datetime import UTC, datetime
from tkinter import ttk
from typing import TYPE_CHECKING, Any

from chatscreen.client.session import PRIVATE_CATCH_UP
from chatscreen.commands import HELP, Command, parse_command
from chatscreen.errors import ChatscreenError
from chatscreen.gui.chat_files import FILE_EVENTS, ChatFiles
from chatscreen.gui.dialogs import NewPasswordDialog
from chatscreen.gui.files import TransferPanel, is_file_info
from chatscreen.gui.net import gui_event
from chatscreen.gui.timeline import day_line, grouped, presence_line
from chatscreen.gui.widgets import selection, styled_listbox
from chatscreen.protocol import Message
from chatscreen.text import display_lines, local_time, local_times, one_line

if TYPE_CHECKING:
    from chatscreen.client import Client
    from chatscreen.gui.host import ChatHost

MAX_SHOWN = 2000  # entries kept per conversation (older ones come back by scrolling up)
OLDER_PAGE = 50  # messages asked for each time the user scrolls to the top
TYPING_EVERY = 3.0  # s between "typing" notices while the user types
TYPING_SHOWN = 6.0  # s a "typing" notice is shown without news
MSG_MARGIN, OWN_MARGIN = 4, 80  # px: where others' and our own messages start
HANG_STEP = 4  # px: hanging indents are rounded up to this (fewer tags)
OFFLINE = "#9aa0a6"  # the people list while we are not connected
INPUT_MAX_LINES = 6  # the message field grows up to this many lines
MARK_EVERY = 1.0  # s: read markers go to the server at most this often (a busy room)
URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.IGNORECASE)


def split_links(text: str) -> list[tuple[str, str | None]]:
    """Cut text into (piece, url or None); trailing punctuation stays out of a link."""
    out: list[tuple[str, str | None]] = []
    pos = 0
    for m in URL.finditer(text):
        url = m.group(0).rstrip(".,;:!?)]}")
        if not url:
            continue
        if m.start() > pos:
            out.append((text[pos:m.start()], None))
        out.append((url, url if "://" in url else f"https://{url}"))
        pos = m.start() + len(url)
    if pos < len(text):
        out.append((text[pos:], None))
    return out


def _now_ts() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Conversation:
    key: str  # "#room" or "@user"
    # Entries in timeline order: server messages (sort key (id, 0)) and local notices such as
    # "bob joined" (sort key (id of the message before, n)).
    entries: list[dict[str, Any]] = field(default_factory=list)
    keys: list[tuple[int, int]] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)
    unread: int = 0
    typing: dict[str, float] = field(default_factory=dict)  # user -> shown until
    more: bool = True  # older messages may exist on the server
    loading: bool = False  # a scroll-back request is on its way
    _notes: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def title(self) -> str:
        return self.key[1:]

    @property
    def is_room(self) -> bool:
        return self.key.startswith("#")

    @property
    def oldest_id(self) -> int | None:
        return min(self.ids) if self.ids else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if "info" not in e]

    def _insert(self, key: tuple[int, int], entry: dict[str, Any]) -> None:
        i = bisect.bisect(self.keys, key)
        self.keys.insert(i, key)
        self.entries.insert(i, entry)

    def add(self, m: dict[str, Any], *, trim: bool = True) -> bool:
        if m["id"] in self.ids:
            return False
        self.ids.add(m["id"])
        self._insert((m["id"], 0), m)
        if trim and len(self.entries) > MAX_SHOWN:
            for old in self.entries[:-MAX_SHOWN]:
                self.ids.discard(old.get("id", -1))
            del self.entries[:-MAX_SHOWN]
            del self.keys[:-MAX_SHOWN]
            self.more = True
        return True

    def remove(self, message_id: int) -> bool:
        """A message deleted on the server (its file with it) leaves the timeline."""
        if message_id not in self.ids:
            return False
        self.ids.discard(message_id)
        for i, entry in enumerate(self.entries):
            if entry.get("id") == message_id and "info" not in entry:
                del self.entries[i]
                del self.keys[i]
                break
        return True

    def note(self, text: str, presence: tuple[str, str] | None = None) -> None:
        """A local note; ``presence``: (user, "join" or "leave"), drawn with its run."""
        last = max(self.ids) if self.ids else 0
        entry: dict[str, Any] = {"info": text, "ts": _now_ts()}
        if presence is not None:
            entry["presence"] = presence
        self._insert((last, next(self._notes)), entry)


async def _mark_read(c: Client, *, where: dict[str, str], newest: int) -> int:
    return await c.mark_read(id=newest, **where)


@dataclass
class Pending:
    key: str
    text: str


class ChatTab(ttk.Frame):
    def __init__(self, master: tk.Misc, app: ChatHost) -> None:
        super().__init__(master, padding=8)
        self.app = app
        self.conversations: dict[str, Conversation] = {}
        self.order: list[str] = []  # keys in the order of the list
        self.current: str | None = None
        self.room_users: dict[str, set[str]] = {}
        self.people_names: list[str] = []  # the names in the people list, in its order
        self.live = False  # connected now: else the people list is what was last known
        self.pending: dict[int, Pending] = {}
        self.links: dict[str, str] = {}  # text tag -> url
        self._tokens = itertools.count(1)
        self._typing_sent = 0.0
        self._dirty = False
        self._keep_top: str | None = None  # after loading older messages: keep this in view
        self.password_dialog: NewPasswordDialog | None = None  # the last /register's
        # read markers (the server's, for the account): casefolded key -> last id read
        self.markers: dict[str, int] = {}
        self.invitations: dict[str, str | None] = {}  # private room -> who invited us
        self.invite_buttons: dict[str, tuple[ttk.Button, ttk.Button]] = {}  # Join, Decline
        self._unsent_marks: dict[str, int] = {}  # conversation -> marker not sent yet
        self._marks_sent = 0.0  # when markers last went out (time.monotonic)
        self._hangs: set[str] = set()  # the hanging-indent tags made so far
        self._hang_cache: dict[tuple[str, str, bool], str] = {}
        self.files = ChatFiles(self)  # files: lines, previews, transfers (gui/chat_files.py)
        self._build()

    # -- layout ------------------------------------------------------------------------

    def _build(self) -> None:
        fonts = self.app.fonts
        self.columnconfigure(1, weight=1)
        self.rowconfigure(0, weight=1)
        side = ttk.Frame(self)
        side.grid(row=0, column=0, sticky="ns", padx=(0, 10))
        side.rowconfigure(1, weight=1)
        side.rowconfigure(5, weight=2)
        ttk.Label(side, text="Conversations", style="Heading.TLabel").grid(row=0, column=0,
                                                                          sticky="w")
        self.conv_list = styled_listbox(side, fonts["body"], width=22, height=7)
        self.conv_list.grid(row=1, column=0, sticky="nsew", pady=(4, 6))
        self.conv_list.bind("<<ListboxSelect>>", self._on_pick_conversation)
        # pending invitations, each with Join / Decline (hidden while there is none)
        self.invite_box = ttk.Frame(side)
        self.invite_box.grid(row=2, column=0, sticky="ew", pady=(0, 6))
        self.invite_box.grid_remove()
        join = ttk.Frame(side)
        join.grid(row=3, column=0, sticky="ew", pady=(0, 14))
        self.room_entry = ttk.Entry(join, width=12, font=fonts["body"])
        self.room_entry.pack(side="left", fill="x", expand=True)
        self.room_entry.bind("<Return>", lambda _e: self.join_room())
        ttk.Button(join, text="Join room", command=self.join_room).pack(side="left", padx=(4, 0))
        self.people_label = ttk.Label(side, text="People", style="Heading.TLabel")
        self.people_label.grid(row=4, column=0, sticky="w")
        self.people = styled_listbox(side, fonts["body"], width=22, height=8)
        self.people.grid(row=5, column=0, sticky="nsew", pady=(4, 4))
        self.people.bind("<Double-Button-1>", lambda _e: self.open_private())
        self.people.bind("<Return>", lambda _e: self.open_private())
        ttk.Button(side, text="Private message", command=self.open_private).grid(
            row=6, column=0, sticky="ew")
        ttk.Label(side, text="Double-click a name to talk privately", style="Hint.TLabel",
                  wraplength=200).grid(row=7, column=0, sticky="w", pady=(4, 0))

        main = ttk.Frame(self)
        main.grid(row=0, column=1, sticky="nsew")
        main.columnconfigure(0, weight=1)
        main.rowconfigure(1, weight=1)
        self.title = ttk.Label(main, text="Not connected", style="Title.TLabel")
        self.title.grid(row=0, column=0, columnspan=2, sticky="w", pady=(0, 6))
        self.text = tk.Text(main, wrap="word", state="disabled", font=fonts["body"],
                            padx=12, pady=8, relief="flat", borderwidth=0, cursor="arrow",
                            highlightthickness=1, highlightbackground="#d0d4da",
                            background="#ffffff", spacing1=2, spacing3=2, takefocus=False)
        self.text.grid(row=1, column=0, sticky="nsew")
        self.scroll = ttk.Scrollbar(main, orient="vertical", command=self._on_scrollbar)
        self.scroll.grid(row=1, column=1, sticky="ns")
        self.text.configure(yscrollcommand=self._on_yview)
        for seq in ("<Button-4>", "<MouseWheel>", "<Prior>", "<Control-Home>"):
            self.text.bind(seq, self._on_scroll_up, add="+")
        t = self.text
        bold = fonts["bold"]
        t.tag_configure("msg", lmargin1=MSG_MARGIN, lmargin2=62, rmargin=80, spacing1=6)
        t.tag_configure("own", lmargin1=OWN_MARGIN, lmargin2=138, rmargin=4,
                        background="#e8f0fe", spacing1=6)
        t.tag_configure("time", foreground="#8a8f98", font=fonts["small"])
        t.tag_configure("name", foreground="#a0410d", font=bold)
        t.tag_configure("ownname", foreground="#0b57d0", font=bold)
        t.tag_configure("pending", foreground="#8a8f98", lmargin1=80, lmargin2=138,
                        background="#f1f3f4", spacing1=6)
        t.tag_configure("info", foreground="#6b7078", font=fonts["italic"], justify="center",
                        spacing1=6, spacing3=4)
        t.tag_configure("more", foreground="#8a8f98", font=fonts["small"], justify="center")
        # comings and goings: quieter than moderation notices, which are quieter than talk
        t.tag_configure("presence", foreground="#9aa0a6", font=fonts["small"],
                        justify="center", spacing1=2, spacing3=2)
        t.tag_configure("day", foreground="#5f6368", font=fonts["small"], justify="center",
                        spacing1=10, spacing3=4)
        t.tag_configure("link", foreground="#0b57d0", underline=True)
        for tag in ("save", "action"):
            t.tag_configure(tag, foreground="#0b57d0", underline=True)
        t.tag_configure("filename", foreground="#1f2328", font=bold)
        t.tag_configure("filemeta", foreground="#6b7078", font=fonts["small"])
        t.tag_configure("preview", spacing1=4, spacing3=4)
        # A message's further lines: indented past the time and marked, so that no line of
        # a message can pass for a message of its own (configured last: these margins win).
        t.tag_configure("cont", lmargin1=62, lmargin2=74)
        t.tag_configure("owncont", lmargin1=138, lmargin2=150)
        t.tag_configure("contmark", foreground="#8a8f98")
        t.tag_bind("link", "<Enter>", lambda _e: t.configure(cursor="hand2"))
        t.tag_bind("link", "<Leave>", lambda _e: t.configure(cursor="arrow"))
        t.tag_bind("link", "<Button-1>", self._on_link)
        for tag in ("preview", "save"):
            t.tag_bind(tag, "<Enter>", lambda _e: t.configure(cursor="hand2"))
            t.tag_bind(tag, "<Leave>", lambda _e: t.configure(cursor="arrow"))
        t.tag_bind("preview", "<Button-1>", self.files.on_preview_click)
        t.tag_bind("save", "<Button-1>", self.files.on_save_click)
        # uploads and downloads under way: a row each, with a progress bar and Cancel
        self.transfer_panel = TransferPanel(main)
        self.transfer_panel.grid(row=2, column=0, columnspan=2, sticky="ew", pady=(4, 0))
        self.transfer_panel.grid_remove()
        self.typing_label = ttk.Label(main, text="", style="Hint.TLabel")
        self.typing_label.grid(row=3, column=0, sticky="w", pady=(2, 0))
        row = ttk.Frame(main)
        row.grid(row=4, column=0, columnspan=2, sticky="ew", pady=(2, 0))
        self.entry = tk.Text(row, height=1, width=20, wrap="word", font=fonts["body"], undo=True,
                             relief="flat", borderwidth=0, padx=8, pady=6,
                             highlightthickness=1, highlightbackground="#c4c9d0",
                             highlightcolor="#0b57d0", background="#ffffff")
        self.entry.pack(side="left", fill="x", expand=True)
        self.entry.bind("<Return>", self._on_return)
        self.entry.bind("<KP_Enter>", self._on_return)
        self.entry.bind("<Shift-Return>", self._on_shift_return)
        self.entry.bind("<Shift-KP_Enter>", self._on_shift_return)
        self.entry.bind("<KeyRelease>", self._on_key)
        self.entry.bind("<Control-Tab>", lambda _e: self.app.cycle_tabs(1))
        for seq in ("<Control-Shift-Tab>", "<Control-ISO_Left_Tab>"):
            self.entry.bind(seq, lambda _e: self.app.cycle_tabs(-1))
        self.entry.bind("<Tab>", lambda _e: self._focus_next())
        self.entry.bind("<<Paste>>", self.files.on_paste)
        self.send_button = ttk.Button(row, text="Send", command=self.send_message,
                                      style="Accent.TButton")
        self.send_button.pack(side="left", padx=(8, 0), fill="y")
        self.attach_button = ttk.Button(row, text="Attach…", command=self.files.attach_dialog)
        self.attach_button.pack(side="left", padx=(8, 0), fill="y")
        ttk.Label(main, text="Enter sends · Shift+Enter adds a line · Ctrl+V pastes a picture",
                  style="Hint.TLabel").grid(row=5, column=0, sticky="e", pady=(2, 0))
        # why the text in the box was not sent (it stays there to be fixed)
        self.input_error = ttk.Label(main, text="", style="Hint.TLabel", foreground="#b3261e")
        self.input_error.grid(row=5, column=0, sticky="w", pady=(2, 0))

    def _focus_next(self) -> str:
        self.send_button.focus_set()
        return "break"

    # -- session -----------------------------------------------------------------------

    def reset(self) -> None:
        """A new session (another user, maybe another server): forget everything."""
        self.conversations.clear()
        self.order.clear()
        self.room_users.clear()
        self.pending.clear()
        self.input_error.configure(text="")
        self.markers.clear()
        self._unsent_marks.clear()
        self.invitations.clear()
        self._refresh_invitations()
        self.current = None
        self._refresh_list()
        self._refresh_people()
        self._render()

    def set_state(self, markers: dict[str, int], invitations: dict[str, str | None]) -> None:
        """What the server keeps of us, at each login: the read markers (messages up to
        one are not unread), the private rooms we are invited to."""
        for key, id_ in markers.items():
            self.markers[key] = max(self.markers.get(key, 0), id_)
        self.invitations = {r: by or self.invitations.get(r) for r, by in invitations.items()}
        self._refresh_invitations()

    def _mark_read(self, key: str) -> None:
        """The conversation is shown: what it holds is read, here and for the account on
        every client (the server keeps the marker; it only moves forward)."""
        conv = self.conversations.get(key)
        net = self.app.net
        if conv is None or not conv.ids or net is None:
            return
        newest = max(conv.ids)
        if newest <= self.markers.get(key.casefold(), 0):
            return
        self.markers[key.casefold()] = newest
        self._unsent_marks[key] = newest
        self.send_marks()

    def send_marks(self, *, now: bool = False) -> None:
        """Send the markers that moved, at most every MARK_EVERY seconds (``now``: at
        once, e.g. before logging out)."""
        net = self.app.net
        when = time.monotonic()
        if not self._unsent_marks or net is None or (
                not now and when - self._marks_sent < MARK_EVERY):
            return
        self._marks_sent = when
        for key, newest in self._unsent_marks.items():
            where = {"room": key[1:]} if key.startswith("#") else {"peer": key[1:]}
            net.call(functools.partial(_mark_read, where=where, newest=newest))
        self._unsent_marks.clear()

    def conversation(self, key: str) -> Conversation:
        conv = self.conversations.get(key)
        if conv is None:
            conv = self.conversations[key] = Conversation(key, more=key.startswith("#"))
            self.order.append(key)
            self.order.sort(key=lambda k: (not k.startswith("#"), k.casefold()))
            joining = self.app.joining
            # Not shown (so not read) on the way to the room the app opens with.
            if self.current is None and (joining is None
                                         or key.casefold() == f"#{joining}".casefold()):
                self.current = key
            self._refresh_list()
        return conv

    def _key_of(self, m: dict[str, Any]) -> str:
        if m.get("room") is not None:
            return f"#{m['room']}"
        me = self.app.user.casefold()
        other = m["to"] if m["user"].casefold() == me else m["user"]
        return f"@{other}"

    def online(self, user: str) -> bool:
        if not self.live:  # we are not: who is online is not known
            return False
        u = user.casefold()
        return any(u in {x.casefold() for x in users} for users in self.room_users.values())

    # -- events from the network --------------------------------------------------------

    def on_event(self, ev: Message) -> None:
        kind = ev.type
        if kind == "message":
            self._add_messages([ev.fields], live=True)
        elif kind == "history":
            if ev.get("room") is not None:
                conv = self.conversation(f"#{ev['room']}")
                msgs = ev["messages"]
                # A join's first page tells whether older messages exist; a reconnect's
                # catch-up pages (all newer than what is shown) do not.
                if ev.get("rid") is None and (not conv.ids or
                                              (msgs and msgs[0]["id"] <= min(conv.ids))):
                    conv.more = bool(ev.get("more"))
                self._add_messages(ev["messages"])
            else:  # private messages: ours with everybody at login, or a reconnect's catch-up
                self._add_messages(ev["messages"])
                if ev.get("rid") != PRIVATE_CATCH_UP:  # its "more" is about newer ones
                    for m in ev["messages"]:
                        self.conversations[self._key_of(m)].more = bool(ev.get("more"))
        elif kind == "gui_older":
            self._on_older(ev)
        elif kind == "joined":
            room = ev["room"]
            if room in self.invitations:
                del self.invitations[room]
                self._refresh_invitations()
            self.room_users[room] = set(ev["users"])
            fresh = f"#{room}" not in self.conversations
            self.conversation(f"#{room}")
            if fresh and self.app.joining == room:
                self.select(f"#{room}")
            self._refresh_people()
        elif kind == "users":
            self.room_users[ev["room"]] = set(ev["users"])
            self._refresh_people()
        elif kind == "presence":
            users = self.room_users.setdefault(ev["room"], set())
            if ev["event"] == "join":
                users.add(ev["user"])
            else:
                users.discard(ev["user"])
            self._refresh_people()
            self._note(f"#{ev['room']}", f"{ev['user']} "
                       f"{'joined' if ev['event'] == 'join' else 'left'} #{ev['room']}",
                       presence=(ev["user"], "join" if ev["event"] == "join" else "leave"))
            self._refresh_list()
        elif kind == "left":
            self.room_users.pop(ev["room"], None)
            self._refresh_people()
        elif kind == "typing":
            key = f"#{ev['room']}" if ev.get("room") is not None else f"@{ev['user']}"
            talk = self.conversations.get(key)
            if talk is not None:
                if ev["active"]:
                    talk.typing[ev["user"]] = time.monotonic() + TYPING_SHOWN
                else:
                    talk.typing.pop(ev["user"], None)
                self._refresh_typing()
        elif kind == "invited" and ev.get("by") is not None:  # we are invited
            if ev["room"] not in self.room_users:
                self.invitations[ev["room"]] = ev["by"]
                self._refresh_invitations()
        elif kind == "declined":
            self.invitations.pop(ev["room"], None)
            self._refresh_invitations()
        elif kind == "notice":  # a moderation action: shown in its room
            key = f"#{ev['room']}"
            if key in self.conversations:
                self._note(key, ev["text"])
            elif ev["room"] not in self.invitations and self.current is not None:
                # not a room we are in: said where we are, without adding the room
                self._note(self.current, f"#{ev['room']}: {ev['text']}")
        elif kind == "deleted":
            for conv in self.conversations.values():
                if conv.remove(ev["id"]) and conv.key == self.current:
                    self._dirty = True
        elif kind in FILE_EVENTS:
            self.files.on_event(ev)
        elif kind == "gui_note":
            if ev["key"] in self.conversations:
                self._note(ev["key"], ev["text"])
        elif kind == "gui_sent":
            pending = self.pending.pop(ev["token"], None)
            if pending is not None:
                if ev.get("error"):
                    self._note(pending.key, f"Not sent: {pending.text!r} ({ev['error']})")
                    self._give_back(pending, ev["error"])
                if pending.key == self.current:
                    self._dirty = True

    def _add_messages(self, messages: list[dict[str, Any]], *, live: bool = False) -> None:
        touched: set[str] = set()
        me = self.app.user.casefold()
        for m in messages:
            key = self._key_of(m)
            conv = self.conversation(key)
            if conv.add(m):
                touched.add(key)
                mine = m["user"].casefold() == me
                if key != self.current and not mine and m["id"] > self.markers.get(
                        key.casefold(), 0):
                    conv.unread += 1
                if live and not mine and m.get("kind") != "notice":
                    self.app.notify(f"{m['user']}: {m['text']}")
                conv.typing.pop(m["user"], None)
        if self.current in touched:
            self._dirty = True
            self._mark_read(self.current)
        if touched:
            self._refresh_list()
            self._refresh_typing()

    def note(self, key: str, text: str) -> None:
        """A local note in a conversation (if it is there)."""
        self._note(key, text)

    def redraw_later(self) -> None:
        """Redraw the timeline at the next flush (after this batch of events)."""
        self._dirty = True

    def _note(self, key: str, text: str, presence: tuple[str, str] | None = None) -> None:
        conv = self.conversations.get(key)
        if conv is None:
            return
        conv.note(local_times(text), presence)  # a mute's end: in local time, as the timeline
        if key == self.current:
            self._dirty = True

    # -- older messages ----------------------------------------------------------------

    def load_older(self) -> bool:
        """Ask for the page of messages before the oldest one shown (scrolling up)."""
        conv = self.conversations.get(self.current or "")
        net = self.app.net
        if conv is None or net is None or conv.loading or not conv.more:
            return False
        oldest = conv.oldest_id
        if oldest is None:
            conv.more = False
            return False
        conv.loading = True
        self._dirty = True
        net.older(conv.key, oldest, OLDER_PAGE)
        return True

    def _on_older(self, ev: Message) -> None:
        conv = self.conversations.get(ev["key"])
        if conv is None:
            return
        conv.loading = False
        if ev.get("error"):
            self._dirty = conv.key == self.current
            return
        msgs = ev["messages"]
        conv.more = bool(ev["more"]) and bool(msgs)
        first = conv.oldest_id
        for m in msgs:
            conv.add(m, trim=False)
        if conv.key == self.current:
            self._keep_top = f"m{first}" if first is not None else None
            self._dirty = True

    def _on_yview(self, first: float | str, last: float | str) -> None:
        self.scroll.set(float(first), float(last))
        if float(first) <= 0.0 and float(last) < 1.0:
            conv = self.conversations.get(self.current or "")
            if conv is not None and conv.more and not conv.loading and self._at_top_by_user:
                self.load_older()
        self._at_top_by_user = False

    _at_top_by_user = False

    def _on_scrollbar(self, *args: str) -> None:
        self._at_top_by_user = True
        self.text.yview(*args)

    def _on_scroll_up(self, _event: object) -> None:
        self._at_top_by_user = True
        if self.text.yview()[0] <= 0.0:  # already at the top (or everything fits)
            self.load_older()

    # -- the user's actions ------------------------------------------------------------

    def select(self, key: str) -> None:
        self.current = key
        conv = self.conversation(key)
        conv.unread = 0
        self._mark_read(key)
        self._refresh_list()
        self._refresh_people()
        self._render()
        self._refresh_typing()

    def _on_pick_conversation(self, _event: object) -> None:
        sel = selection(self.conv_list)
        if sel and self.order[sel[0]] != self.current:
            self.select(self.order[sel[0]])
            self.entry.focus_set()

    def _on_return(self, _event: object) -> str:
        self.send_message()
        return "break"

    def _on_shift_return(self, _event: object) -> str:
        self.entry.insert("insert", "\n")
        self.entry.see("insert")
        self._fit_entry()
        return "break"

    def entry_text(self) -> str:
        return str(self.entry.get("1.0", "end-1c"))

    def _fit_entry(self) -> None:
        lines = self.entry.count("1.0", "end", "displaylines")
        n = lines[0] if isinstance(lines, tuple) else (lines or 1)
        height = max(1, min(INPUT_MAX_LINES, int(n)))
        if int(self.entry.cget("height")) != height:
            self.entry.configure(height=height)

    def send_message(self) -> None:
        text = self.entry_text().strip("\n")
        net = self.app.net
        if not text.strip() or self.current is None or net is None:
            return
        if text.startswith("/"):
            room = self.current[1:] if self.current.startswith("#") else "general"
            try:
                command = parse_command(text, room)
            except ChatscreenError as exc:
                self._note(self.current, str(exc))
                self._render(to_end=True)
                return
            if command.kind == "msg" and not self._may_send(command.args["text"]):
                return
            self.entry.delete("1.0", "end")
            self._fit_entry()
            if command.kind != "say":
                self.run_command(command)
                self._render(to_end=True)
                return
            text = command.args["text"]  # "//text": a message that starts with "/"
        if not self._may_send(text):
            return  # the text stays in the box, the reason beside it
        token = next(self._tokens)
        self.pending[token] = Pending(self.current, text)
        if self.current.startswith("#"):
            net.say(self.current[1:], text, token)
            net.typing(False, room=self.current[1:])
        else:
            net.pm(self.current[1:], text, token)
            net.typing(False, to=self.current[1:])
        self._typing_sent = 0.0
        self.entry.delete("1.0", "end")
        self._fit_entry()
        self._render(to_end=True)

    def _may_send(self, text: str) -> bool:
        """Check the text against the server's limits; if it breaks one, say why beside
        the box (the text stays there) and send nothing."""
        net = self.app.net
        try:
            if net is not None:
                net.client.check_text(text)
        except ChatscreenError as exc:
            self.input_error.configure(text=f"Not sent: {exc}")
            return False
        self.input_error.configure(text="")
        return True

    def _give_back(self, pending: Pending, error: str) -> None:
        """A message the server refused (or that could not be sent) goes back into the box,
        if the box is empty and its conversation is the one shown: nothing is lost."""
        if pending.key == self.current and not self.entry_text().strip():
            self.entry.insert("1.0", pending.text)
            self._fit_entry()
        self.input_error.configure(text=f"Not sent: {error}")

    def give_back_unsent(self, reason: str) -> None:
        """The session ends with messages not yet stored: they were not sent. Each is noted
        in its conversation; those of the one shown go back into the box (if it is empty)."""
        unsent, self.pending = list(self.pending.values()), {}
        for pending in unsent:
            self._note(pending.key, f"Not sent: {pending.text!r} ({reason})")
        here = "\n".join(p.text for p in unsent if p.key == self.current)
        if here and not self.entry_text().strip():
            self.entry.insert("1.0", here)
            self._fit_entry()
        if unsent:
            self.input_error.configure(text=f"Not sent: {reason}")
            self._render(to_end=True)

    def run_command(self, command: Command) -> None:
        """Carry out a chat-line command (see :mod:`chatscreen.commands`); what it answers
        shows as a note in the current conversation."""
        net = self.app.net
        if net is None or self.current is None:
            return
        here, kind, a = self.current, command.kind, command.args

        def then(fn: Any, what: str, answer: Any = None) -> None:
            fut = net.call(fn, what)
            if answer is not None:
                fut.add_done_callback(lambda f: None if f.cancelled() or f.exception() else
                                      net.events.put(gui_event("note", key=here,
                                                               text=answer(f.result()))))

        if kind == "join":
            self.app.joining = a["room"]
            then(lambda c: c.join(a["room"]), f"Cannot join {a['room']}")
        elif kind == "msg":
            self.select(f"@{a['to']}")
            token = next(self._tokens)
            self.pending[token] = Pending(f"@{a['to']}", a["text"])
            net.pm(a["to"], a["text"], token)
        elif kind == "who":
            then(lambda c: c.who(a["room"]), f"Cannot list {a['room']}",
                 lambda users: f"In #{a['room']}: {', '.join(users)}")
        elif kind == "rooms":
            then(lambda c: c.list_rooms(), "Cannot list the rooms",
                 lambda rooms: "Rooms: " + ", ".join(f"#{r['name']} ({r['users']})"
                                                     for r in rooms))
        elif kind == "private":
            self.app.joining = a["room"]
            then(lambda c: c.create_room(a["room"], private=True),
                 f"Cannot create {a['room']}")
        elif kind == "invite":
            then(lambda c: c.invite(a["room"], a["user"]), f"Cannot invite {a['user']}",
                 lambda _: f"Invited {a['user']} to #{a['room']}")
        elif kind == "moderate":
            # the server's notice in the target's rooms says what was done
            then(lambda c: c.moderate(**a), f"Cannot {a['action']}",
                 lambda _: f"Done: {a['action']} {a.get('target') or a.get('address')}")
        elif kind == "register":
            def register(password: str) -> None:
                then(lambda c: c.register(password), "Cannot register",
                     lambda _: f"Registered: from now on only your password logs in as "
                               f"{self.app.user}")

            self.password_dialog = NewPasswordDialog(self, self.app.user, register)
        elif kind == "quit":
            self.app.quit()
        else:
            self._note(here, HELP)

    def _on_key(self, event: tk.Event[Any]) -> None:
        self._fit_entry()
        net = self.app.net
        if net is None or self.current is None or event.keysym in ("Return", "KP_Enter"):
            return
        now = time.monotonic()
        if self.entry_text().strip() and now - self._typing_sent > TYPING_EVERY:
            self._typing_sent = now
            target = self.current[1:]
            if self.current.startswith("#"):
                net.typing(True, room=target)
            else:
                net.typing(True, to=target)

    def join_room(self) -> None:
        room = self.room_entry.get().strip().lstrip("#")
        if room and self.app.net is not None:
            self.app.joining = room
            self.app.net.call(lambda c: c.join(room), f"Cannot join {room}")
            self.room_entry.delete(0, "end")

    def join_invited(self, room: str) -> None:
        net = self.app.net
        if net is not None:
            self.app.joining = room
            net.call(lambda c: c.join(room), f"Cannot join {room}")

    def decline(self, room: str) -> None:
        net = self.app.net
        self.invitations.pop(room, None)
        self._refresh_invitations()
        if net is not None:
            net.call(lambda c: c.decline(room), f"Cannot decline {room}")

    def invite_text(self, room: str) -> str:
        by = self.invitations.get(room)
        who = f"{one_line(by, isolate=False)} invited you" if by else "You are invited"
        return f"{who} to #{one_line(room, isolate=False)}"

    def _refresh_invitations(self) -> None:
        """One line per pending invitation: who invited us where, Join, Decline."""
        for child in self.invite_box.winfo_children():
            child.destroy()
        self.invite_buttons = {}
        for room in sorted(self.invitations, key=str.casefold):
            row = ttk.Frame(self.invite_box)
            row.pack(fill="x", pady=(0, 4))
            ttk.Label(row, text=self.invite_text(room), wraplength=200).pack(anchor="w")
            join = ttk.Button(row, text="Join", command=functools.partial(self.join_invited, room))
            join.pack(side="left")
            no = ttk.Button(row, text="Decline", command=functools.partial(self.decline, room))
            no.pack(side="left", padx=(4, 0))
            self.invite_buttons[room] = (join, no)
        if self.invitations:
            self.invite_box.grid()
        else:
            self.invite_box.grid_remove()

    def open_private(self) -> None:
        sel = selection(self.people)
        if not sel or sel[0] >= len(self.people_names):
            return
        user = self.people_names[sel[0]]
        if user.casefold() == self.app.user.casefold():
            return
        self.select(f"@{user}")
        self.entry.focus_set()

    def _on_link(self, _event: object) -> str:
        for tag in self.text.tag_names("current"):
            url = self.links.get(str(tag))
            if url is not None:
                self.app.open_url(url)
                break
        return "break"

    # -- drawing -----------------------------------------------------------------------

    def _refresh_list(self) -> None:
        self.conv_list.delete(0, "end")
        for i, key in enumerate(self.order):
            conv = self.conversations[key]
            title = one_line(conv.title, isolate=False)
            if conv.is_room:
                label = f"  # {title}"
            else:
                label = f"  {'●' if self.online(conv.title) else '○'} {title}"
            if conv.unread:
                label += f"   ({conv.unread})"
            self.conv_list.insert("end", label)
            if conv.unread:
                self.conv_list.itemconfigure(i, foreground="#0b57d0")
            if key == self.current:
                self.conv_list.selection_clear(0, "end")
                self.conv_list.selection_set(i)

    def set_live(self, live: bool) -> None:
        """Connected (True) or not: while not, nobody is shown online (the list greys)."""
        if live != self.live:
            self.live = live
            self._refresh_people()
            self._refresh_list()

    def _refresh_people(self) -> None:
        self.people.delete(0, "end")
        if self.current is None or not self.current.startswith("#"):
            self.people_label.configure(text="People online" if self.live
                                        else "People (offline)")
            users: list[str] = sorted({u for s in self.room_users.values() for u in s},
                                      key=str.casefold)
        else:
            room = self.current[1:]
            n = len(self.room_users.get(room, set()))
            self.people_label.configure(text=f"In #{one_line(room, isolate=False)} "
                                             + (f"({n} online)" if self.live else "(offline)"))
            users = sorted(self.room_users.get(room, set()), key=str.casefold)
        self.people_names = users
        me = self.app.user.casefold()
        for user in users:
            own = user.casefold() == me
            self.people.insert("end", f"  {'●' if self.live else '○'} "
                                      f"{one_line(user, isolate=False)}"
                                      f"{'  (you)' if own else ''}")
            self.people.itemconfigure("end", foreground=OFFLINE if not self.live
                                      else "#0b57d0" if own else "#1e7d32")
        if self.current is not None and not self.current.startswith("#"):
            self._refresh_title()

    def _refresh_typing(self) -> None:
        conv = self.conversations.get(self.current or "")
        now = time.monotonic()
        who = [] if conv is None else [one_line(u, isolate=False)
                                       for u, t in conv.typing.items() if t > now]
        text = ""
        if len(who) == 1:
            text = f"{who[0]} is typing…"
        elif who:
            text = f"{', '.join(sorted(who))} are typing…"
        if str(self.typing_label.cget("text")) != text:
            self.typing_label.configure(text=text)

    def tick(self) -> None:
        """Called a few times a second: expire typing notices, send read markers."""
        self._refresh_typing()
        self.send_marks()

    def flush(self) -> None:
        """Redraw the timeline once if anything changed (called after each batch of events)."""
        if self._dirty:
            self._render()

    def _refresh_title(self) -> None:
        conv = self.conversations.get(self.current or "")
        if conv is None:
            self.title.configure(text="Not connected" if self.app.net is None else "")
        elif conv.is_room:
            self.title.configure(text=f"# {one_line(conv.title, isolate=False)}")
        else:
            state = "online" if self.online(conv.title) else "offline"
            self.title.configure(text=f"Private with {one_line(conv.title, isolate=False)}  "
                                      f"({state})")

    def _render(self, *, to_end: bool = False) -> None:
        self._dirty = False
        conv = self.conversations.get(self.current or "")
        self._refresh_title()
        text = self.text
        at_end = to_end or text.yview()[1] >= 0.999
        top = text.yview()[0]
        text.configure(state="normal")
        text.delete("1.0", "end")
        self.links.clear()
        self.files.file_tags.clear()
        me = self.app.user.casefold()
        if conv is not None and conv.loading:
            text.insert("end", "loading older messages…\n", "more")
        elif conv is not None and conv.more and conv.ids:
            text.insert("end", "scroll up for older messages\n", "more")
        for kind, item in grouped([] if conv is None else conv.entries):
            if kind == "day":
                text.insert("end", f"{day_line(item)}\n", "day")
            elif kind == "presence":  # a run of comings and goings: one quiet line
                when = local_time(item[-1]["ts"])[:5]
                line = presence_line(item, conv.title if conv is not None else "")
                text.insert("end", f"{one_line(line, isolate=False)}  ·  {when}\n", "presence")
            elif "info" in item or item.get("kind") == "notice":  # a stored one: a message
                when = local_time(item["ts"])[:5]
                info = item["info"] if "info" in item else local_times(item["text"])
                text.insert("end", f"{one_line(info, isolate=False)}  ·  {when}\n", "info")
            else:
                self._insert_message(item, item["user"].casefold() == me)
        for p in self.pending.values():
            if p.key == self.current:
                shown = "\n│ ".join(display_lines(p.text, isolate=False))
                text.insert("end", f"sending…  {shown}\n", "pending")
        text.configure(state="disabled")
        keep, self._keep_top = self._keep_top, None
        if keep is not None and text.tag_ranges(keep):
            text.yview(f"{keep}.first - 1 lines")
        elif at_end:
            text.see("end")
        else:
            text.yview_moveto(top)

    def _insert_message(self, m: dict[str, Any], own: bool) -> None:
        """``time  name  text``: the text's wrapped and further lines start under its first
        (a hanging indent as wide as the time and the name), never under the time."""
        text = self.text
        when = local_time(m["ts"])[:5]
        name = "You" if own else one_line(m["user"], isolate=False)
        line = ("own",) if own else ("msg",)
        hang = self._hang_of(when, name, own)
        body = (*line, hang)  # Tk takes a line's margins from its first character's tags
        text.insert("end", when + "  ", ("time", *body, f"m{m['id']}"))
        text.insert("end", name, ("ownname" if own else "name", *body))
        text.insert("end", "  ", body)
        cont = (*line, "cont", "owncont", f"{hang}c") if own else (*line, "cont", f"{hang}c")
        if m.get("kind") == "file" and is_file_info(m.get("file")):
            self.files.insert(m["file"], cont, body)
        else:
            self._insert_text(m["text"], cont, body)
        text.insert("end", "\n", line)

    def _hang_of(self, when: str, name: str, own: bool) -> str:
        """The hanging-indent tag of a message line that starts ``when  name  ``
        (measured once per time and name: the timeline is redrawn whole)."""
        key = (when, name, own)
        tag = self._hang_cache.get(key)
        if tag is None:
            if len(self._hang_cache) > 4096:
                self._hang_cache.clear()
            fonts = self.app.fonts
            tag = self._hang_cache[key] = self._hang(
                (OWN_MARGIN if own else MSG_MARGIN) + fonts["small"].measure(when + "  ")
                + fonts["bold"].measure(name) + fonts["body"].measure("  "))
        return tag

    def _hang(self, indent: int) -> str:
        """The tag that indents wrapped lines to ``indent`` pixels (rounded, so that a few
        tags serve every name), and its ``c`` twin for further lines with their marker."""
        indent = -(-indent // HANG_STEP) * HANG_STEP
        tag = f"hang{indent}"
        if tag not in self._hangs:
            self._hangs.add(tag)
            mark = self.app.fonts["body"].measure("│ ")
            self.text.tag_configure(tag, lmargin2=indent)
            self.text.tag_configure(f"{tag}c", lmargin1=indent, lmargin2=indent + mark)
        return tag

    def _insert_text(self, message: str, cont: tuple[str, ...], line: tuple[str, ...]) -> None:
        """A message's text, safe to show (see :mod:`chatscreen.text`; Tk draws every line
        left to right, so no isolation is needed), its links clickable, each further line
        marked as a continuation."""
        text = self.text
        for i, piece_line in enumerate(display_lines(message, isolate=False)):
            tags = line
            if i:
                tags = cont
                text.insert("end", "\n", line)
                text.insert("end", "│ ", ("contmark", *tags))
            for piece, url in split_links(piece_line):
                if url is None:
                    text.insert("end", piece, tags)
                else:
                    tag = f"url{len(self.links)}"
                    self.links[tag] = url
                    text.insert("end", piece, ("link", tag, *tags))

    def shown_text(self) -> str:
        """What the message pane shows (for tests)."""
        return str(self.text.get("1.0", "end"))
