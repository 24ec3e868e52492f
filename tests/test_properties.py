"""Property tests (hypothesis) for the pure parts: references, WWW-Authenticate, tar paths, whiteouts.

Each property is checked against an independent statement of the rule (a
renderer, a lexical model, or tests.support.images.merge_layers), never against
a copy of the code under test. Example counts stay modest: the file runs in
well under a minute.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from occystrap import reference
from occystrap.errors import BadReferenceError, UnsafeArchiveError
from occystrap.expand import OPAQUE, WHITEOUT, TreeWriter, apply_layer, clean_name, link_escapes
from occystrap.registry import auth
from tests.support import images
from tests.support.images import Entry

FAST = settings(max_examples=300, deadline=None)
FS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# =====================================================================================
# References
# =====================================================================================

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
_separator = st.sampled_from([".", "_", "__", "-", "--"])
component = st.builds(
    lambda first, rest: first + "".join(s + a for s, a in rest),
    _alnum,
    st.lists(st.tuples(_separator, _alnum), max_size=2),
)
_label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,6}[A-Za-z0-9])?", fullmatch=True)
_port = st.integers(1, 65535).map(lambda p: f":{p}")
_domain = st.builds(lambda labels: ".".join(labels), st.lists(_label, min_size=2, max_size=3))
host = st.one_of(
    st.builds(lambda d, p: d + p, _domain, st.one_of(st.just(""), _port)),
    st.builds(lambda label, p: label + p, _label, _port),  # a bare name is a host only with a port
    st.builds(lambda p: "localhost" + p, st.one_of(st.just(""), _port)),
    st.builds(lambda a, b, p: f"127.{a}.{b}.1{p}", st.integers(0, 255), st.integers(0, 255), _port),
    st.sampled_from(["[::1]", "[::1]:5000", "[2001:db8::1]:443", "[fe80::1]"]),
    st.sampled_from(["docker.io", "index.docker.io", "registry-1.docker.io"]),
)
tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
digest = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}")


@st.composite
def image_names(draw: st.DrawFn) -> tuple[str, str | None]:
    """A valid IMAGE[:TAG][@DIGEST] and the optional separate TAG argument."""
    h = draw(st.one_of(st.none(), host))
    parts = draw(st.lists(component, min_size=1, max_size=3))
    if h is None and len(parts) > 1 and "." in parts[0]:
        h = "docker.io"  # without a host, a first component with a dot would be read as one (as Docker does)
    path = "/".join(parts)
    name = f"{h}/{path}" if h else path
    inline_tag = draw(st.one_of(st.none(), tag))
    inline_digest = draw(st.one_of(st.none(), digest))
    if inline_tag:
        name += f":{inline_tag}"
    if inline_digest:
        name += f"@{inline_digest}"
    arg: str | None = None
    choice = draw(st.sampled_from(["none", "tag", "digest"]))
    if choice == "tag" and not inline_tag:
        arg = draw(tag)
    elif choice == "digest" and not inline_digest:
        arg = draw(digest)
    return name, arg


def _familiar_string(ref: reference.Reference) -> str:
    out = ref.familiar_name
    if ref.tag:
        out += f":{ref.tag}"
    if ref.digest:
        out += f"@{ref.digest}"
    return out


@FAST
@given(image_names())
@example(("library/a/b", "v1"))  # Docker keeps library/ when more than one component follows it
@example(("docker.io/a.b/c", None))  # a Hub namespace that looks like a host
@example(("docker.io/localhost/x", None))
def test_reference_round_trips(case: tuple[str, str | None]) -> None:
    name, arg = case
    ref = reference.parse(name, arg)
    # The canonical string parses back to the same reference.
    assert reference.parse(str(ref)) == ref
    assert str(reference.parse(str(ref))) == str(ref)
    # So does the familiar form docker shows (and that goes into RepoTags).
    assert reference.parse(_familiar_string(ref)) == ref
    if ref.repo_tag:
        again = reference.parse(ref.repo_tag)
        assert (again.registry, again.repository, again.tag) == (ref.registry, ref.repository, ref.tag)
    # Normalization: one spelling for Docker Hub, official images under library/.
    assert ref.registry not in ("index.docker.io", "registry-1.docker.io")
    if ref.registry == "docker.io":
        assert "/" in ref.repository
        assert ref.api_host == "registry-1.docker.io"
    assert ref.tag is not None or ref.digest is not None
    assert ref.reference == (ref.digest or ref.tag)


@FAST
@given(
    st.one_of(
        st.text(max_size=40),
        st.text("abc:/@.-_[]0123456789ABCsha256 ", max_size=40),
        st.builds(
            lambda c, junk, i: c[0][:i] + junk + c[0][i:],
            image_names(),
            st.text(max_size=3),
            st.integers(0, 60),
        ),
    ),
    st.one_of(st.none(), st.text(max_size=12), tag, digest),
)
def test_reference_parse_never_crashes(name: str, arg: str | None) -> None:
    try:
        ref = reference.parse(name, arg)
    except BadReferenceError:
        return
    # Whatever parses is a reference the rest of the program can use.
    assert reference.parse(str(ref)) == ref
    assert isinstance(ref.is_loopback, bool)
    assert ref.api_host and ref.familiar_name and ref.full_name


# =====================================================================================
# WWW-Authenticate
# =====================================================================================

_param_key = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,8}", fullmatch=True)
_param_value = st.text(st.characters(min_codepoint=32, max_codepoint=126) | st.just("\t"), max_size=16)
_ows = st.sampled_from(["", " ", "  ", "\t"])
_scheme = st.sampled_from(["Bearer", "Basic", "bearer", "BASIC", "Negotiate", "NewAuth", "Digest"])


@st.composite
def _render_value(draw: st.DrawFn, value: str) -> str:
    token_ok = value != "" and not any(c in value for c in ' \t,"')
    if token_ok and draw(st.booleans()):
        return value
    out = []
    for ch in value:
        # quoted-pair: \" and \\ must be escaped; any other character may be.
        if ch in '"\\' or draw(st.integers(0, 9)) == 0:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@st.composite
def challenge_headers(draw: st.DrawFn) -> tuple[str, list[tuple[str, dict[str, str]]]]:
    """A WWW-Authenticate value with 1-3 challenges, and what it says."""
    expected: list[tuple[str, dict[str, str]]] = []
    rendered: list[str] = []
    count = draw(st.integers(1, 3))
    for i in range(count):
        scheme = draw(_scheme)
        keys = draw(st.lists(_param_key, max_size=4, unique_by=str.lower))
        if scheme.lower() == "bearer" and not keys:
            keys = ["realm"]
        params = {k: draw(_param_value) for k in keys}
        order = draw(st.permutations(list(params)))
        parts = []
        for k in order:
            parts.append(f"{k}{draw(_ows)}={draw(_ows)}{draw(_render_value(params[k]))}")
        sep = [f"{draw(_ows)},{draw(_ows)}" for _ in parts]
        text = scheme
        if parts:
            text += (
                " "
                + draw(_ows)
                + "".join(p + (sep[j] if j < len(parts) - 1 else "") for j, p in enumerate(parts))
            )
        rendered.append(text)
        expected.append((scheme.lower(), {k.lower(): v for k, v in params.items()}))
        del i
    joined = rendered[0]
    for r in rendered[1:]:
        joined += f"{draw(_ows)},{draw(_ows)}{r}"
    return draw(_ows) + joined + draw(_ows), expected


@FAST
@given(challenge_headers())
@example(
    (
        'Negotiate, Bearer realm="https://a/t",service="s"',
        [("negotiate", {}), ("bearer", {"realm": "https://a/t", "service": "s"})],
    )
)
def test_www_authenticate_round_trips(case: tuple[str, list[tuple[str, dict[str, str]]]]) -> None:
    header, expected = case
    got = [(c.scheme, c.params) for c in auth.parse_challenges(header)]
    assert got == expected, header


@FAST
@given(st.text(max_size=60))
def test_www_authenticate_never_crashes(header: str) -> None:
    for challenge in auth.parse_challenges(header):
        assert challenge.scheme == challenge.scheme.lower()
        assert all(k == k.lower() for k in challenge.params)


# =====================================================================================
# Tar member paths
# =====================================================================================

_path_part = st.sampled_from(["a", "b", "..", ".", "", "c.d", "...", "..a", "a..", " "])
member_names = st.one_of(
    st.builds(
        lambda lead, parts: lead + "/".join(parts),
        st.sampled_from(["", "/", "./", "//"]),
        st.lists(_path_part, max_size=5),
    ),
    st.text(max_size=20),
)


@FAST
@given(member_names)
def test_clean_name_never_escapes(name: str) -> None:
    parts = name.split("/")
    hostile = name.startswith("/") or "\0" in name or ".." in parts
    try:
        cleaned = clean_name(name)
    except UnsafeArchiveError:
        assert hostile, f"{name!r} refused but harmless"
        return
    assert not hostile, f"{name!r} accepted"
    assert not cleaned.startswith("/")
    assert ".." not in cleaned.split("/")
    assert cleaned == "" or all(p not in ("", ".") for p in cleaned.split("/"))
    # Same file as the tar means, relative to any root.
    assert posixpath.normpath(posixpath.join("/root", name)) == posixpath.normpath(
        posixpath.join("/root", cleaned)
    )


@FAST
@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4).map("/".join),
    st.one_of(
        st.builds(
            lambda lead, parts: lead + "/".join(parts),
            st.sampled_from(["", "/", "./"]),
            st.lists(_path_part, max_size=6),
        ),
        st.text("./ab", max_size=12),
    ),
)
def test_link_escapes_matches_lexical_walk(name: str, target: str) -> None:
    """A relative symlink escapes when following it lexically ever leaves the root, at any step."""
    escapes = link_escapes(name, target)
    if target.startswith("/"):
        assert not escapes  # absolute targets are resolved inside the image's own root
        return
    root = "/r0/r1/r2/r3/r4/r5/r6/r7/r8/r9/root"
    current = posixpath.dirname(posixpath.join(root, name))
    left = False
    for part in target.split("/"):
        current = posixpath.normpath(posixpath.join(current, part)) if part else current
        if current != root and not current.startswith(root + "/"):
            left = True
    assert escapes == left, (name, target)


# --- hostile layers never write outside the root --------------------------------------

_hostile_part = st.sampled_from(["a", "b", "..", ".", "x"])
_hostile_path = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "", "", "/", "./"]),
    st.lists(_hostile_part, min_size=1, max_size=3),
)
_link_target = st.one_of(
    _hostile_path,
    st.sampled_from(
        ["/", "/etc/passwd", "../outside/sentinel", "..", "../..", "a/../..", ".", "a/../../outside"]
    ),
)


@st.composite
def hostile_members(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    """(kind, name, link target) triples: files, dirs, symlinks, hardlinks, whiteouts."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink", "whiteout", "opaque"]))
        path = draw(_hostile_path)
        if kind == "whiteout":
            parent, _, last = path.rpartition("/")
            path = f"{parent}/{WHITEOUT}{last}" if parent else f"{WHITEOUT}{last}"
            kind = "file"
        elif kind == "opaque":
            path = f"{path}/{OPAQUE}"
            kind = "file"
        out.append((kind, path, draw(_link_target) if kind in ("symlink", "hardlink") else ""))
    return out


def _raw_tar(members: list[tuple[str, str, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, target in members:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                data = b"payload " + name.encode()
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            ti.linkname = target
            tf.addfile(ti)
    return buf.getvalue()


def _snapshot(path: Path) -> dict[str, tuple[int, int, bytes | str]]:
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for sub, dirs, files in os.walk(path):
        for n in dirs + files:
            p = Path(sub) / n
            st_ = os.lstat(p)
            body: bytes | str = b""
            if stat.S_ISREG(st_.st_mode):
                body = p.read_bytes()
            elif stat.S_ISLNK(st_.st_mode):
                body = os.readlink(p)
            out[str(p.relative_to(path))] = (st_.st_mode, st_.st_mtime_ns, body)
    return out


@contextmanager
def _jail() -> Iterator[tuple[Path, Path]]:
    """(root to extract into, jail around it holding a sentinel that must never change)."""
    with tempfile.TemporaryDirectory() as tmp:
        jail = Path(tmp) / "jail"
        root = jail / "r1" / "root"
        root.mkdir(parents=True)
        (jail / "outside").mkdir()
        (jail / "outside" / "sentinel").write_bytes(b"untouched")
        (jail / "passwd").write_bytes(b"untouched")
        try:
            yield root, jail
        finally:
            for sub, dirs, _files in os.walk(tmp):
                for d in dirs:
                    p = Path(sub) / d
                    if not p.is_symlink():
                        os.chmod(p, 0o700)


@FS
@given(st.lists(hostile_members(), min_size=1, max_size=3), st.booleans())
@example([[("file", ".wh..", "")]], False)  # "whiteout of ." once removed the whole root
@example([[("dir", "a/a", ""), ("file", "a", "")]], False)  # a file replacing a dir in one layer
@example([[("symlink", "a", "/"), ("file", "a/x", "")]], False)  # writing through a symlink
def test_hostile_layers_never_write_outside_the_root(
    layers: list[list[tuple[str, str, str]]], keep: bool
) -> None:
    with _jail() as (root, jail):
        outside_before = {k: v for k, v in _snapshot(jail).items() if not k.startswith("r1/root")}
        writer = TreeWriter(root, keep_whiteouts=keep)
        for members in layers:
            try:
                apply_layer(io.BytesIO(_raw_tar(members)), [writer])
            except UnsafeArchiveError:
                break  # refused: fine, as long as nothing escaped (checked below)
        writer.finish()
        outside_after = {k: v for k, v in _snapshot(jail).items() if not k.startswith("r1/root")}
        assert outside_after == outside_before
        assert (jail / "r1" / "root").is_dir() and not (jail / "r1" / "root").is_symlink()
        for sub, dirs, files in os.walk(root):
            for n in dirs + files:
                p = Path(sub) / n
                rel = str(p.relative_to(root))
                if p.is_symlink():
                    assert not link_escapes(rel, os.readlink(p)), (rel, os.readlink(p))
                else:
                    real = os.path.realpath(p)
                    assert real.startswith(str(root.resolve()) + "/"), (rel, real)


# =====================================================================================
# Whiteouts and opaque directories against the model
# =====================================================================================

NAMESPACE = ["a", "b", "c", "a/x", "a/y", "b/x", "a/x/z", "a/x/w"]
_FILE_MODES = [0o644, 0o600, 0o755]
_DIR_MODES = [0o755, 0o700, 0o555, 0o750]
_CONTENTS = [b"", b"one\n", b"two\n", b"3" * 5000]
_SYMLINK_TARGETS = ["x", "a/x/z", "/etc/passwd", "."]


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@st.composite
def layer_specs(draw: st.DrawFn) -> list[Entry]:
    """One well-formed layer: parents listed before children, at most one entry per path."""
    chosen: dict[str, Entry] = {}
    wh: list[Entry] = []
    for path in draw(st.lists(st.sampled_from(NAMESPACE), max_size=6, unique=True)):
        kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "hardlink", "whiteout", "opaque"]))
        mtime = draw(st.integers(1_000_000_000, 1_700_000_000))
        if kind == "file":
            chosen[path] = images.file(
                path, draw(st.sampled_from(_CONTENTS)), draw(st.sampled_from(_FILE_MODES)), mtime
            )
        elif kind == "dir":
            chosen[path] = images.directory(path, draw(st.sampled_from(_DIR_MODES)), mtime)
        elif kind == "symlink":
            targets = _SYMLINK_TARGETS + (["../b"] if "/" in path else [])
            chosen[path] = images.symlink(path, draw(st.sampled_from(targets)), mtime)
        elif kind == "hardlink":
            # To a file this layer ships (placed before the link below).
            files = sorted(p for p, e in chosen.items() if e.kind == "file")
            if files:
                chosen[path] = images.hardlink(path, draw(st.sampled_from(files)), mtime)
        elif kind == "whiteout":
            wh.append(images.whiteout(path))
        else:
            wh.append(images.opaque(path))
    # Every parent of anything in the layer is a directory of the layer.
    needed = {_parent(e.path) for e in [*chosen.values(), *wh]} - {""}
    for p in sorted(needed):
        while p:
            old = chosen.get(p)
            if old is None or old.kind != "dir":
                chosen[p] = images.directory(p, draw(st.sampled_from(_DIR_MODES)))
            p = _parent(p)
    # A link whose target turned into a directory above is dropped (a dir cannot be hardlinked).
    for p, e in list(chosen.items()):
        if e.kind == "hardlink" and chosen.get(e.target, e).kind != "file":
            del chosen[p]
    entries = list(chosen.values()) + wh
    order = draw(st.permutations(entries))
    # Tar order: any, except that a directory comes before what is in it and a link after its target.
    emitted: list[Entry] = []
    done: set[str] = set()

    def emit(e: Entry) -> None:
        if e.path in done:
            return
        parent = _parent(e.path)
        if parent and parent in chosen:
            emit(chosen[parent])
        if e.kind == "hardlink":
            emit(chosen[e.target])
        done.add(e.path)
        emitted.append(e)

    for e in order:
        emit(e)
    return emitted


def _expected(merged: dict[str, Entry]) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for path, e in merged.items():
        if e.kind == "dir":
            out[path] = ("dir", e.mode, e.mtime)
        elif e.kind == "symlink":
            out[path] = ("symlink", e.target, e.mtime)
        elif e.kind == "hardlink":
            out[path] = ("file", e.content, e.mode, None)  # shares the target's inode and mtime
        else:
            out[path] = ("file", e.content, e.mode, e.mtime)
    return out


def _actual(root: Path, hardlinks: set[str]) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for sub, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(sub) / n
            rel = str(p.relative_to(root))
            st_ = os.lstat(p)
            if stat.S_ISDIR(st_.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st_.st_mode), int(st_.st_mtime))
            elif stat.S_ISLNK(st_.st_mode):
                out[rel] = ("symlink", os.readlink(p), int(st_.st_mtime))
            else:
                mtime = None if rel in hardlinks else int(st_.st_mtime)
                out[rel] = ("file", p.read_bytes(), stat.S_IMODE(st_.st_mode), mtime)
    return out


@st.composite
def layer_stacks(draw: st.DrawFn) -> list[list[Entry]]:
    stack: list[list[Entry]] = []
    for _ in range(draw(st.integers(1, 4))):
        stack.append(draw(layer_specs()))
    return stack


@FS
@given(layer_stacks())
@example(
    [
        [images.directory("a"), images.file("a/y", b"lower\n")],
        # The same layer lists `a/` before `.wh.a`: the whiteout still removes the lower a/y.
        [images.directory("a"), images.file("a/x", b"upper\n"), images.whiteout("a")],
    ]
)
@example(
    [
        [images.directory("a"), images.file("a/y", b"lower\n")],
        [images.directory("a"), images.file("a/x", b"upper\n"), images.opaque("a")],
    ]
)
@example(
    [
        [images.directory("a"), images.file("a/y", b"lower\n")],
        # ".wh." and ".wh.." name nothing: they must not delete their own directory.
        [images.directory("a"), images.file("a/.wh.", b""), images.file("a/.wh..", b"")],
    ]
)
@example(
    [
        [images.directory("a", mode=0o700), images.file("a/x", b"x")],
        # A file replacing a directory must not get the old directory's mode and mtime.
        [images.file("a", b"now a file", mode=0o644, mtime=1_000_000_000)],
    ]
)
def test_whiteouts_match_the_model(stack: list[list[Entry]]) -> None:
    merged = images.merge_layers(stack)
    expected = _expected(merged)
    hardlinks = {p for p, e in merged.items() if e.kind == "hardlink"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        root.mkdir()
        writer = TreeWriter(root, keep_whiteouts=False)
        for layer in stack:
            apply_layer(io.BytesIO(images.make_tar(layer)), [writer])
        writer.finish()
        try:
            actual = _actual(root, hardlinks)
        finally:
            for sub, dirs, _files in os.walk(root):
                for d in dirs:
                    if not (Path(sub) / d).is_symlink():
                        os.chmod(Path(sub) / d, 0o700)
    assert actual == expected


@pytest.mark.parametrize("keep", [True, False])
def test_layer_unpacked_as_is_keeps_whiteout_files(keep: bool) -> None:
    """With keep_whiteouts the markers are plain files (the layers/<hex>/ view); without, they act."""
    layer = [images.directory("a"), images.whiteout("a/x"), images.opaque("a"), images.file("a/y", b"y")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writer = TreeWriter(root, keep_whiteouts=keep)
        apply_layer(io.BytesIO(images.make_tar(layer)), [writer])
        writer.finish()
        names = sorted(p.name for p in (root / "a").iterdir())
    assert names == ([".wh..wh..opq", ".wh.x", "y"] if keep else ["y"])
