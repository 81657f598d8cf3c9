"""The Chat tab: conversations (rooms and private), the people in a room, the messages."""

from __future__ import annotations

import itertools
import time
import tkinter as tk
from dataclasses import dataclass, field
from tkinter import ttk
from typing import TYPE_CHECKING, Any

from chatscreen.cli import local_time
from chatscreen.protocol import Message

if TYPE_CHECKING:
    from chatscreen.gui.app import App

MAX_SHOWN = 500  # messages kept per conversation
TYPING_EVERY = 3.0  # s between "typing" notices while the user types
TYPING_SHOWN = 6.0  # s a "typing" notice is shown without news


@dataclass
class Conversation:
    key: str  # "#room" or "@user"
    messages: list[dict[str, Any]] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)
    unread: int = 0
    typing: dict[str, float] = field(default_factory=dict)  # user -> shown until

    @property
    def title(self) -> str:
        return self.key[1:]

    @property
    def is_room(self) -> bool:
        return self.key.startswith("#")

    def add(self, m: dict[str, Any]) -> bool:
        if m["id"] in self.ids:
            return False
        self.ids.add(m["id"])
        self.messages.append(m)
        if len(self.messages) > 1 and self.messages[-2]["id"] > m["id"]:
            self.messages.sort(key=lambda x: x["id"])
        del self.messages[:-MAX_SHOWN]
        return True


@dataclass
class Pending:
    key: str
    text: str


def _selection(listbox: tk.Listbox) -> tuple[int, ...]:
    sel: tuple[int, ...] = listbox.curselection()  # type: ignore[no-untyped-call]
    return sel


class ChatTab(ttk.Frame):
    def __init__(self, master: tk.Misc, app: App) -> None:
        super().__init__(master, padding=8)
        self.app = app
        self.conversations: dict[str, Conversation] = {}
        self.order: list[str] = []  # keys in the order of the list
        self.current: str | None = None
        self.room_users: dict[str, set[str]] = {}
        self.pending: dict[int, Pending] = {}
        self._tokens = itertools.count(1)
        self._typing_sent = 0.0
        self._build()

    # -- layout ------------------------------------------------------------------------

    def _build(self) -> None:
        self.columnconfigure(1, weight=1)
        self.rowconfigure(0, weight=1)
        side = ttk.Frame(self)
        side.grid(row=0, column=0, sticky="ns", padx=(0, 8))
        side.rowconfigure(1, weight=1)
        side.rowconfigure(4, weight=1)
        ttk.Label(side, text="Conversations", style="Heading.TLabel").grid(row=0, column=0,
                                                                          sticky="w")
        self.conv_list = tk.Listbox(side, width=22, height=8, activestyle="none",
                                    exportselection=False, font=self.app.fonts["body"])
        self.conv_list.grid(row=1, column=0, sticky="nsew", pady=(2, 6))
        self.conv_list.bind("<<ListboxSelect>>", self._on_pick_conversation)
        join = ttk.Frame(side)
        join.grid(row=2, column=0, sticky="ew", pady=(0, 10))
        self.room_entry = ttk.Entry(join, width=14, font=self.app.fonts["body"])
        self.room_entry.pack(side="left", fill="x", expand=True)
        self.room_entry.bind("<Return>", lambda _e: self.join_room())
        ttk.Button(join, text="Join room", command=self.join_room).pack(side="left", padx=(4, 0))
        self.people_label = ttk.Label(side, text="People", style="Heading.TLabel")
        self.people_label.grid(row=3, column=0, sticky="w")
        self.people = tk.Listbox(side, width=22, height=8, activestyle="none",
                                 exportselection=False, font=self.app.fonts["body"])
        self.people.grid(row=4, column=0, sticky="nsew", pady=(2, 2))
        self.people.bind("<Double-Button-1>", lambda _e: self.open_private())
        self.people.bind("<Return>", lambda _e: self.open_private())
        ttk.Button(side, text="Private message", command=self.open_private).grid(
            row=5, column=0, sticky="ew")

        main = ttk.Frame(self)
        main.grid(row=0, column=1, sticky="nsew")
        main.columnconfigure(0, weight=1)
        main.rowconfigure(1, weight=1)
        self.title = ttk.Label(main, text="Not connected", style="Title.TLabel")
        self.title.grid(row=0, column=0, columnspan=2, sticky="w", pady=(0, 4))
        self.text = tk.Text(main, wrap="word", state="disabled", font=self.app.fonts["body"],
                            padx=8, pady=6, relief="flat", borderwidth=1,
                            highlightthickness=1, highlightbackground="#c8c8c8",
                            spacing1=3, spacing3=3)
        self.text.grid(row=1, column=0, sticky="nsew")
        scroll = ttk.Scrollbar(main, orient="vertical", command=self.text.yview)
        scroll.grid(row=1, column=1, sticky="ns")
        self.text.configure(yscrollcommand=scroll.set)
        bold = self.app.fonts["bold"]
        self.text.tag_configure("time", foreground="#8a8a8a")
        self.text.tag_configure("name", foreground="#7a3e00", font=bold)
        self.text.tag_configure("own", background="#e4efff", lmargin1=40, lmargin2=40)
        self.text.tag_configure("ownname", foreground="#0b57d0", font=bold)
        self.text.tag_configure("pending", foreground="#9a9a9a", lmargin1=40, lmargin2=40,
                                background="#f1f4f9")
        self.text.tag_configure("info", foreground="#6b6b6b", font=self.app.fonts["italic"])
        self.typing_label = ttk.Label(main, text="", style="Hint.TLabel")
        self.typing_label.grid(row=2, column=0, sticky="w")
        row = ttk.Frame(main)
        row.grid(row=3, column=0, columnspan=2, sticky="ew", pady=(4, 0))
        self.entry = ttk.Entry(row, font=self.app.fonts["body"])
        self.entry.pack(side="left", fill="x", expand=True, ipady=3)
        self.entry.bind("<Return>", lambda _e: self.send_message())
        self.entry.bind("<KeyRelease>", self._on_key)
        self.send_button = ttk.Button(row, text="Send", command=self.send_message)
        self.send_button.pack(side="left", padx=(6, 0))

    # -- session -----------------------------------------------------------------------

    def reset(self) -> None:
        """A new session (another user, maybe another server): forget everything."""
        self.conversations.clear()
        self.order.clear()
        self.room_users.clear()
        self.pending.clear()
        self.current = None
        self._refresh_list()
        self._render()

    def conversation(self, key: str) -> Conversation:
        conv = self.conversations.get(key)
        if conv is None:
            conv = self.conversations[key] = Conversation(key)
            self.order.append(key)
            self.order.sort(key=lambda k: (not k.startswith("#"), k.casefold()))
            if self.current is None:
                self.current = key
            self._refresh_list()
        return conv

    def _key_of(self, m: dict[str, Any]) -> str:
        if m.get("room") is not None:
            return f"#{m['room']}"
        me = self.app.user.casefold()
        other = m["to"] if m["user"].casefold() == me else m["user"]
        return f"@{other}"

    # -- events from the network --------------------------------------------------------

    def on_event(self, ev: Message) -> None:
        kind = ev.type
        if kind == "message":
            self._add_messages([ev.fields])
        elif kind == "history":
            if ev.get("room") is not None:
                self.conversation(f"#{ev['room']}")
            self._add_messages(ev["messages"])
        elif kind == "joined":
            room = ev["room"]
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
            self._info(f"#{ev['room']}", f"{ev['user']} "
                       f"{'joined' if ev['event'] == 'join' else 'left'}")
        elif kind == "left":
            self.room_users.pop(ev["room"], None)
        elif kind == "typing":
            key = f"#{ev['room']}" if ev.get("room") is not None else f"@{ev['user']}"
            conv = self.conversations.get(key)
            if conv is not None:
                if ev["active"]:
                    conv.typing[ev["user"]] = time.monotonic() + TYPING_SHOWN
                else:
                    conv.typing.pop(ev["user"], None)
                self._refresh_typing()
        elif kind == "gui_sent":
            pending = self.pending.pop(ev["token"], None)
            if pending is not None:
                if ev.get("error"):
                    self._info(pending.key, f"Not sent: {pending.text!r} ({ev['error']})")
                if pending.key == self.current:
                    self._render()

    def _add_messages(self, messages: list[dict[str, Any]]) -> None:
        touched: set[str] = set()
        for m in messages:
            key = self._key_of(m)
            conv = self.conversation(key)
            if conv.add(m):
                touched.add(key)
                if key != self.current and m["user"].casefold() != self.app.user.casefold():
                    conv.unread += 1
                conv.typing.pop(m["user"], None)
        if self.current in touched:
            self._render()
        if touched:
            self._refresh_list()
            self._refresh_typing()

    def _info(self, key: str, text: str) -> None:
        conv = self.conversations.get(key)
        if conv is None:
            return
        conv.messages.append({"id": -1, "info": text, "ts": "", "user": ""})
        if key == self.current:
            self._render()

    # -- the user's actions ------------------------------------------------------------

    def select(self, key: str) -> None:
        self.current = key
        conv = self.conversation(key)
        conv.unread = 0
        self._refresh_list()
        self._refresh_people()
        self._render()
        self._refresh_typing()

    def _on_pick_conversation(self, _event: object) -> None:
        sel = _selection(self.conv_list)
        if sel and self.order[sel[0]] != self.current:
            self.select(self.order[sel[0]])
            self.entry.focus_set()

    def send_message(self) -> None:
        text = self.entry.get()
        net = self.app.net
        if not text.strip() or self.current is None or net is None:
            return
        token = next(self._tokens)
        self.pending[token] = Pending(self.current, text)
        if self.current.startswith("#"):
            net.say(self.current[1:], text, token)
            net.typing(False, room=self.current[1:])
        else:
            net.pm(self.current[1:], text, token)
            net.typing(False, to=self.current[1:])
        self._typing_sent = 0.0
        self.entry.delete(0, "end")
        self._render()

    def _on_key(self, event: tk.Event[Any]) -> None:
        net = self.app.net
        if net is None or self.current is None or event.keysym == "Return":
            return
        now = time.monotonic()
        if self.entry.get() and now - self._typing_sent > TYPING_EVERY:
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

    def open_private(self) -> None:
        sel = _selection(self.people)
        if not sel:
            return
        user = self.people.get(sel[0])
        if user.casefold() == self.app.user.casefold():
            return
        self.select(f"@{user}")
        self.entry.focus_set()

    # -- drawing -----------------------------------------------------------------------

    def _refresh_list(self) -> None:
        self.conv_list.delete(0, "end")
        for i, key in enumerate(self.order):
            conv = self.conversations[key]
            label = f"{'#' if conv.is_room else '@'} {conv.title}"
            if conv.unread:
                label += f"  ({conv.unread})"
            self.conv_list.insert("end", label)
            if conv.unread:
                self.conv_list.itemconfigure(i, foreground="#0b57d0")
            if key == self.current:
                self.conv_list.selection_clear(0, "end")
                self.conv_list.selection_set(i)

    def _refresh_people(self) -> None:
        self.people.delete(0, "end")
        if self.current is None or not self.current.startswith("#"):
            self.people_label.configure(text="People")
            users: list[str] = sorted({u for s in self.room_users.values() for u in s},
                                      key=str.casefold)
        else:
            room = self.current[1:]
            self.people_label.configure(text=f"People in #{room}")
            users = sorted(self.room_users.get(room, set()), key=str.casefold)
        for user in users:
            self.people.insert("end", user)
            if user.casefold() == self.app.user.casefold():
                self.people.itemconfigure("end", foreground="#0b57d0")

    def _refresh_typing(self) -> None:
        conv = self.conversations.get(self.current or "")
        now = time.monotonic()
        who = [] if conv is None else [u for u, t in conv.typing.items() if t > now]
        text = ""
        if len(who) == 1:
            text = f"{who[0]} is typing…"
        elif who:
            text = f"{', '.join(sorted(who))} are typing…"
        if str(self.typing_label.cget("text")) != text:
            self.typing_label.configure(text=text)

    def tick(self) -> None:
        """Called about once a second: expire typing notices."""
        self._refresh_typing()

    def _render(self) -> None:
        conv = self.conversations.get(self.current or "")
        if conv is None:
            self.title.configure(text="Not connected" if self.app.net is None else "")
        else:
            self.title.configure(text=("Room #" if conv.is_room else "Private with ")
                                 + conv.title)
        text = self.text
        text.configure(state="normal")
        text.delete("1.0", "end")
        me = self.app.user.casefold()
        for m in [] if conv is None else conv.messages:
            if "info" in m:
                text.insert("end", f"{m['info']}\n", "info")
                continue
            own = m["user"].casefold() == me
            extra = ("own",) if own else ()
            text.insert("end", local_time(m["ts"])[:5] + "  ", ("time", *extra))
            text.insert("end", m["user"], ("ownname" if own else "name", *extra))
            text.insert("end", f"  {m['text']}\n", extra)
        for p in self.pending.values():
            if p.key == self.current:
                text.insert("end", f"sending…  {p.text}\n", "pending")
        text.configure(state="disabled")
        text.see("end")

    def shown_text(self) -> str:
        """What the message pane shows (for tests)."""
        return str(self.text.get("1.0", "end"))
