"""A small image that really runs: the host's static busybox, a named user, a known motd.

There is no internet here, so no busybox image to pull; Debian's `busybox-static` gives a
statically linked /bin/busybox, which runs in any root filesystem. The config sets every
field a runtime takes from an image (Entrypoint, Cmd, Env, WorkingDir, User), and the
default command prints something that depends on each of them, so one run judges whether a
consumer (docker, podman, runc on a generated bundle) honoured them all.

    image = build_runnable_image(fmt="oci")
    out = docker.run(tag)               # == RUNNABLE_DEFAULT_OUTPUT
    out = docker.run(tag, "cat /etc/motd")   # Cmd replaced, Entrypoint (sh -c) kept
"""

from __future__ import annotations

import platform
import struct
from pathlib import Path

from tests.support.images import BuiltImage, Compression, Format, build_image, directory, file, symlink

HOST_BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "echo", "cat", "id", "ls", "pwd", "env")

RUNNABLE_USER = "app"
RUNNABLE_UID = 1000
RUNNABLE_GID = 1000
RUNNABLE_HOME = "/home/app"
RUNNABLE_MOTD = "hello from the occystrap runnable test image\n"
RUNNABLE_GREETING = "greetings-from-env"
RUNNABLE_ENV = ("PATH=/bin", f"GREETING={RUNNABLE_GREETING}")
RUNNABLE_ENTRYPOINT = ("/bin/sh", "-c")
# Each line proves one config field: the file from layer 2, User (by name, resolved through
# the image's own /etc/passwd), WorkingDir and Env.
RUNNABLE_CMD = ('cat /etc/motd && id -un && id -u && pwd && echo "$GREETING"',)
RUNNABLE_DEFAULT_OUTPUT = (
    f"{RUNNABLE_MOTD}{RUNNABLE_USER}\n{RUNNABLE_UID}\n{RUNNABLE_HOME}\n{RUNNABLE_GREETING}\n"
)

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


class NoStaticBusybox(RuntimeError):
    pass


def _is_static_elf(data: bytes) -> bool:
    """True for an ELF executable without a PT_INTERP program header (no dynamic loader needed)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only: all the hosts we run on
        return False
    endian = "<" if data[5] == 1 else ">"
    (phoff,) = struct.unpack_from(endian + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def host_busybox(path: Path = HOST_BUSYBOX) -> bytes:
    """The host's busybox, checked to be static: a dynamic one (Debian's `busybox`, not
    `busybox-static`) would fail inside the image with a bare 'no such file or directory'."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise NoStaticBusybox(f"{path} is missing (apt-get install busybox-static)") from e
    if not _is_static_elf(data):
        raise NoStaticBusybox(f"{path} is not a static ELF executable (apt-get install busybox-static)")
    return data


def host_architecture() -> str:
    """The GOARCH name of this machine: the copied busybox only runs on it."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


def build_runnable_image(
    fmt: Format = "docker",
    compression: Compression = "gzip",
    busybox: Path = HOST_BUSYBOX,
    motd: str = RUNNABLE_MOTD,
) -> BuiltImage:
    """Two layers: busybox and its applet links; then /etc (passwd, group, motd) and the home dir.

    Deterministic for a given host busybox. No layer replaces a directory by a file (dockerd's
    vfs driver fails on that shape).
    """
    layer1 = [
        directory("bin"),
        file("bin/busybox", host_busybox(busybox), mode=0o755),
        *(symlink(f"bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS),
        directory("tmp", mode=0o1777),
    ]
    passwd = (
        "root:x:0:0:root:/root:/bin/sh\n"
        f"{RUNNABLE_USER}:x:{RUNNABLE_UID}:{RUNNABLE_GID}::{RUNNABLE_HOME}:/bin/sh\n"
    )
    group = f"root:x:0:\n{RUNNABLE_USER}:x:{RUNNABLE_GID}:\n"
    home = RUNNABLE_HOME.lstrip("/")
    layer2 = [
        directory("etc"),
        file("etc/passwd", passwd.encode()),
        file("etc/group", group.encode()),
        file("etc/motd", motd.encode()),
        directory("root", mode=0o700),
        directory("home"),
        directory(home, uid=RUNNABLE_UID, gid=RUNNABLE_GID),
        file(f"{home}/.profile", b"export PS1='$ '\n", uid=RUNNABLE_UID, gid=RUNNABLE_GID),
    ]
    config = {
        "Entrypoint": list(RUNNABLE_ENTRYPOINT),
        "Cmd": list(RUNNABLE_CMD),
        "Env": list(RUNNABLE_ENV),
        "WorkingDir": RUNNABLE_HOME,
        "User": RUNNABLE_USER,
        "Labels": {"org.opencontainers.image.title": "occystrap-runnable"},
    }
    return build_image(
        [layer1, layer2],
        fmt=fmt,
        compression=compression,
        arch=host_architecture(),
        extra_config={"config": config},
    )


__all__ = [
    "BUSYBOX_APPLETS",
    "RUNNABLE_CMD",
    "RUNNABLE_DEFAULT_OUTPUT",
    "RUNNABLE_ENTRYPOINT",
    "RUNNABLE_ENV",
    "RUNNABLE_GID",
    "RUNNABLE_GREETING",
    "RUNNABLE_HOME",
    "RUNNABLE_MOTD",
    "RUNNABLE_UID",
    "RUNNABLE_USER",
    "NoStaticBusybox",
    "build_runnable_image",
    "host_architecture",
    "host_busybox",
]
