"""Reading py-spy's raw output (collapsed stacks, `record --format raw --threads`): each sample put
under a role (which thread, doing what), seconds of CPU or of GIL held per role, the top costs.

A raw line is `thread (TID)[: NAME];root frame;...;leaf frame COUNT`. Roles are recognised by the
function names on the stack, so they follow occystrap's code: when a stage function is renamed,
update ROLES (samples that match no rule land in the fallback role of their thread, and the top-costs
table shows where they went).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

ThreadKind = Literal["main", "worker"]


@dataclass(frozen=True)
class Role:
    name: str
    thread: ThreadKind
    functions: tuple[str, ...]  # a stack with a frame whose function ends with one of these; () = fallback


# First match wins, so a stage's own work comes before the hand-off code that calls it.
ROLES = (
    Role("stage raw: hash + write as served", "worker", ("BlobStages._raw_work",)),
    Role("stage inflate", "worker", ("BlobStages._inflate_work",)),
    Role("stage plain: hash + write inflated", "worker", ("BlobStages._plain_work",)),
    Role("stage hand-off: channel get/put", "worker", ("_consume",)),
    Role("worker: other (sink calls, waking the loop)", "worker", ()),
    Role("main: event loop (network, feeding stages)", "main", ("BaseEventLoop._run_once",)),
    Role("main: start-up, imports, exit", "main", ()),
)
ROLE_NAMES = [r.name for r in ROLES]

# Python frames in which a thread sleeps. py-spy asks the OS whether a thread runs, and a thread
# caught waking up in one of these still counts as active: such samples are waiting, not CPU.
WAITS = frozenset(
    {"Condition.wait", "Event.wait", "Queue.get", "Thread.join"}
    | {"EpollSelector.select", "PollSelector.select", "SelectSelector.select"}
)
_WORKER_ROOT = "Thread._bootstrap"
_IMPORTLIB = "<frozen importlib"
_LINE = re.compile(r":\d+\)$")
_ADDRESS = re.compile(r"^0x[0-9a-f]+ ")
_ABI = re.compile(r"\.cpython-\d+[^.]*")


@dataclass(frozen=True)
class Frame:
    function: str
    where: str  # file (Python), or library / C source (native)

    @property
    def native(self) -> bool:
        return ".so" in self.where or self.where.endswith((".c", ".h", ".cc", ".cpp", ".rs"))

    def __str__(self) -> str:
        return f"{self.function} ({self.where})"


def parse_frame(text: str) -> Frame:
    text = _ADDRESS.sub("? ", _LINE.sub(")", text))
    function, _, where = text.rpartition(" (")
    where = _ABI.sub("", where.rstrip(")"))
    return Frame(function or text, where.rsplit("/", 1)[-1] if where.endswith(".so") else where)


@dataclass(frozen=True)
class Sample:
    thread: str  # "TID" (py-spy names a thread only once Python's threading module knows it)
    frames: tuple[Frame, ...]  # root to leaf
    count: int

    @property
    def kind(self) -> ThreadKind:
        return "worker" if any(f.function == _WORKER_ROOT for f in self.frames) else "main"

    @property
    def waiting(self) -> bool:
        return any(f.function in WAITS for f in self.frames)

    @property
    def role(self) -> str:
        for role in ROLES:
            if role.thread != self.kind:
                continue
            if not role.functions or any(f.function.endswith(role.functions) for f in self.frames):
                return role.name
        raise AssertionError("every thread kind has a fallback role")

    @property
    def importing(self) -> str:
        """The top-level package whose import is running ('' if none): importlib's own frames say
        nothing, so start-up costs are told by what is being imported."""
        if not any(f.where.startswith(_IMPORTLIB) for f in self.frames):
            return ""
        inner = self.frames[[f.where.startswith(_IMPORTLIB) for f in self.frames].index(True) :]
        modules = [f.where for f in inner if f.function == "<module>" and f.where.endswith(".py")]
        # No module code running yet: importlib is finding, reading or compiling one.
        return modules[-1].split("/", 1)[0].removesuffix(".py") if modules else "(importlib itself)"

    @property
    def cost(self) -> tuple[str, str]:
        """(what: the leaf frame, or the import under way; via: the innermost Python frame above it)."""
        if self.importing:
            return f"import {self.importing}", ""
        leaf = self.frames[-1]
        python = [f for f in self.frames[:-1] if not f.native]
        return str(leaf), str(python[-1]) if python else ""


def parse_raw(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        if not frames:
            continue  # a thread py-spy saw without a stack (starting or ending)
        tid = thread.removeprefix("thread (").split(")", 1)[0]
        samples.append(Sample(tid, tuple(parse_frame(f) for f in frames), int(count)))
    return samples


def busy(samples: Iterable[Sample]) -> list[Sample]:
    return [s for s in samples if not s.waiting]


def by_role(samples: Iterable[Sample]) -> Counter[str]:
    out: Counter[str] = Counter()
    for s in samples:
        out[s.role] += s.count
    return out


def top_costs(samples: Sequence[Sample], n: int) -> list[tuple[str, str, int]]:
    """(what, via, samples) as in Sample.cost, most samples first."""
    out: Counter[tuple[str, str]] = Counter()
    for s in samples:
        out[s.cost] += s.count
    return [(leaf, via, count) for (leaf, via), count in out.most_common(n)]


def main_thread_samples(samples: Iterable[Sample]) -> int:
    """Samples of the main thread: with --idle, one per tick while the process lived."""
    return sum(s.count for s in samples if s.kind == "main")
