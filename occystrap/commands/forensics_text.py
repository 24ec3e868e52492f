"""How the forensics commands' answers look: text for people, tab-separated lines for scripts.

Pure functions of the library's results (their JSON forms, for diff). Every name and line of
text comes from an untrusted layer, so control characters are escaped: no terminal escape
sequence gets through, and a record stays on one line.
"""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from occystrap.forensics.history import Event, PathRecord, Version
    from occystrap.forensics.search import Match

_SHOWN = {i: f"\\x{i:02x}" for i in (*range(32), 127)}
_SCRIPT = {**_SHOWN, ord("\\"): "\\\\", ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"}


def shown(text: str) -> str:
    """A name from a layer, safe on a terminal (no escape sequences) and on one line."""
    return text.translate(_SHOWN)


def field(text: str) -> str:
    """A tab-separated field: backslash, tab, newline and control characters escaped."""
    return text.translate(_SCRIPT)


# -- files -------------------------------------------------------------------------------------

_TYPE_BITS = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


def version_text(v: Version) -> str:
    """mode, owner, size (device numbers for a device): as `ls -l` shows them."""
    size = f"{v.device[0]},{v.device[1]}" if v.device else str(v.size)
    mode = stat.filemode(_TYPE_BITS.get(v.file_type, stat.S_IFREG) | v.mode)
    return f"{mode} {v.uid:>5} {v.gid:>5} {size:>10}"


def link_text(v: Version) -> str:
    if v.type == "symlink":
        return f" -> {shown(v.target or '')}"
    if v.type == "hardlink":
        return f" link to {shown(v.target or '')}"
    return ""


def record_line(r: PathRecord) -> str:
    line = f"{version_text(r.version)} L{r.version.layer:<3} {shown(r.path)}{link_text(r.version)}"
    if not r.present:
        gone = next(e for e in reversed(r.history) if e.action == "deleted")
        line += f"  [deleted in L{gone.layer}: {gone.cause}]"
    return line


def event_line(e: Event) -> str:
    if e.version is None:
        return f"    L{e.layer:<3} deleted   by {shown(e.by or '')} ({e.cause})"
    return f"    L{e.layer:<3} {e.action:<9} {version_text(e.version)}{link_text(e.version)}"


def files_text(records: list[PathRecord], history: bool, layer: int | None) -> str:
    lines = []
    for r in records:
        line = record_line(r)
        if layer is not None:  # what that layer did last to the path: Added, Modified, Deleted
            action = [e.action for e in r.history if e.layer == layer][-1]
            line = f"{action[0].upper()} {line}"
        lines.append(line)
        if history:
            lines.extend(event_line(e) for e in r.history)
    return "\n".join(lines)


# -- search ------------------------------------------------------------------------------------


def match_line(m: Match) -> str:
    if m.kind == "content":
        head = f"L{m.layer:<3} {shown(m.path)}:{m.line}: {shown(m.text or '')}"
    else:
        head = f"L{m.layer:<3} {'deleted' if m.type == 'whiteout' else m.type:<8} {shown(m.path)}"
    if m.present:
        return head
    if m.type == "whiteout":
        return f"{head}  [written again later]"
    return f"{head}  [not in the final filesystem]"


def match_fields(m: Match) -> str:
    """layer, digest, present|absent, type, path [, line, offset, text]: one line, tabs between."""
    out = [str(m.layer), m.digest, "present" if m.present else "absent", m.type, field(m.path)]
    if m.kind == "content":
        out += [str(m.line), str(m.offset), field(m.text or "")]
    return "\t".join(out)


# -- diff --------------------------------------------------------------------------------------


def diff_text(doc: dict[str, Any], layers_a: int, layers_b: int) -> str:
    from occystrap.ui.units import human, short

    layers = doc["layers"]
    lines = [
        f"layers: A has {layers_a}, B has {layers_b}; "
        f"the bottom {layers['common_base']} in common, {len(layers['shared'])} shared in all"
    ]
    for side, key in (("A", "only_a"), ("B", "only_b")):
        for r in layers[key]:
            lines.append(f"  only in {side}: L{r['index']:<3} {short(r['diff_id'])}  {human(r['size'])}")
    if doc["config"]:
        lines.append("config:")
        lines.extend(f"  {line}" for line in config_lines(doc["config"]))
    files = doc["files"]
    counts = {c: sum(1 for f in files if f["change"] == c) for c in ("added", "removed", "changed")}
    lines.append(f"files: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed")
    for f in files:
        letter = {"added": "A", "removed": "D", "changed": "M"}[f["change"]]
        detail = ", ".join(change_detail(name, f["a"], f["b"]) for name in f["fields"])
        lines.append(f"  {letter} {shown(f['path'])}" + (f" ({detail})" if detail else ""))
    return "\n".join(lines)


def change_detail(name: str, a: dict[str, Any], b: dict[str, Any]) -> str:
    return name if name == "content" else f"{name} {shown(str(a.get(name)))} -> {shown(str(b.get(name)))}"


def config_lines(config: dict[str, Any]) -> list[str]:
    def q(value: Any) -> str:
        return shown(json.dumps(value))

    out = []
    for group in ("env", "labels"):
        changes = config.get(group, {})
        out += [f"{group} {shown(k)}: added {q(v)}" for k, v in changes.get("added", {}).items()]
        out += [f"{group} {shown(k)}: removed {q(v)}" for k, v in changes.get("removed", {}).items()]
        out += [
            f"{group} {shown(k)}: {q(v['a'])} -> {q(v['b'])}" for k, v in changes.get("changed", {}).items()
        ]
    return out + [
        f"{k}: {q(config[k]['a'])} -> {q(config[k]['b'])}"
        for k in ("entrypoint", "cmd", "user", "workdir")
        if k in config
    ]
