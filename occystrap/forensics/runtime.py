"""An OCI runtime-spec config.json for an image, as `runc spec` and `umoci unpack` make it.

The defaults (capabilities, rlimits, mounts, namespaces, masked and read-only paths, device
cgroup) are `runc spec`'s; the process comes from the image config the way umoci converts it:
args = Entrypoint + Cmd, the image's Env over runc's defaults, cwd = WorkingDir or "/", the
user resolved from the image's own passwd and group files, HOME from passwd unless Env sets
it, Volumes as tmpfs mounts, Labels (and the image's os, architecture…) as annotations.
"""

from __future__ import annotations

from typing import Any

from occystrap.forensics.imageconfig import ImageConfig
from occystrap.forensics.users import ExecUser

OCI_VERSION = "1.0.2"
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm")
DEFAULT_ARGS = ("sh",)
CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]
MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"],
    },
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": _NOSUID_NOEXEC_NODEV},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*_NOSUID_NOEXEC_NODEV, "ro"]},
    {
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": [*_NOSUID_NOEXEC_NODEV, "relatime", "ro"],
    },
)
VOLUME_OPTIONS = ["rw", "nosuid", "nodev", "noexec", "relatime"]
ANNOTATION = "org.opencontainers.image."


def runtime_config(
    image: ImageConfig,
    user: ExecUser,
    *,
    hostname: str,
    readonly: bool = False,
    terminal: bool = False,
) -> dict[str, Any]:
    """The config.json document (rootfs at "rootfs" beside it)."""
    env = _env(image, user)
    process: dict[str, Any] = {
        "terminal": terminal,
        "user": _user(user),
        "args": image.args or list(DEFAULT_ARGS),
        "env": env,
        "cwd": image.workdir or "/",
        "capabilities": {
            name: list(CAPABILITIES) for name in ("bounding", "effective", "permitted", "ambient")
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    }
    mounts = [dict(m) for m in MOUNTS]
    mounts += [
        {"destination": v, "type": "tmpfs", "source": "none", "options": list(VOLUME_OPTIONS)}
        for v in image.volumes
    ]
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": "rootfs", "readonly": readonly},
        "hostname": hostname,
        "mounts": mounts,
        "annotations": _annotations(image),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def _env(image: ImageConfig, user: ExecUser) -> list[str]:
    env = {}
    for item in DEFAULT_ENV:
        name, _, value = item.partition("=")
        env[name] = value
    env.update(image.env_map())  # the image's value wins, in runc's place for names it has too
    if user.home and "HOME" not in env:
        env["HOME"] = user.home
    return [f"{k}={v}" for k, v in env.items()]


def _user(user: ExecUser) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        out["additionalGids"] = list(user.additional_gids)
    return out


def _annotations(image: ImageConfig) -> dict[str, str]:
    out = dict(image.labels)
    out[ANNOTATION + "os"] = image.os
    out[ANNOTATION + "architecture"] = image.architecture
    for key, value in (
        ("author", image.author),
        ("created", image.created),
        ("stopSignal", image.stop_signal),
        ("exposedPorts", ",".join(image.exposed_ports)),
    ):
        if value:
            out[ANNOTATION + key] = value
    return out
