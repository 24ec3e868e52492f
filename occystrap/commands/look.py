"""Looking before fetching: list-tags and inspect (stdout only; no progress display)."""

from __future__ import annotations

import json
from typing import Any

import click

from occystrap.commands.common import Context, echo_bytes, registry_options, run, wrap_errors
from occystrap.errors import ManifestError, UsageError
from occystrap.model import Artifact, Image, Node, load_json


@click.command("list-tags")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of one tag a line.")
@registry_options
@wrap_errors
def list_tags(image: str, as_json: bool, **opts: Any) -> None:
    """Print every tag of IMAGE's repository on stdout, one a line, sorted.

    IMAGE may also be a local layout (oci:DIR, docker-archive:FILE, a path).

    \b
    Examples:
      occystrap list-tags 127.0.0.1:5000/team/app
      occystrap list-tags --json library/busybox | jq '.[-5:]'
    """
    from occystrap import locations

    where = locations.parse(image)
    opts["quiet"] = True

    async def body(ctx: Context) -> None:
        from occystrap.commands.endpoints import open_source

        if where.is_local:
            from occystrap.sources.layout import LayoutSource

            assert where.path is not None
            source = LayoutSource(where.path)
            tags = sorted(str(r) for r in source.references())
            await source.aclose()
        else:
            source_, ref = await open_source(ctx, where)
            tags = sorted(await source_.tags(ref))
        if as_json:
            click.echo(json.dumps(tags))
        elif tags:
            click.echo("\n".join(tags))

    run(opts, body)


def config_summary(config_bytes: bytes, what: str) -> dict[str, Any]:
    doc = load_json(config_bytes, f"config of {what}")
    if not isinstance(doc, dict):
        raise ManifestError(f"config of {what} is not an object")
    inner_raw = doc.get("config")
    inner: dict[str, Any] = inner_raw if isinstance(inner_raw, dict) else {}
    return {
        "os": doc.get("os"),
        "architecture": doc.get("architecture"),
        "variant": doc.get("variant"),
        "created": doc.get("created"),
        "entrypoint": inner.get("Entrypoint"),
        "cmd": inner.get("Cmd"),
    }


def describe(node: Node) -> dict[str, Any]:
    """A node for --json: an image's manifest, config and layers; an artifact's blobs."""
    out: dict[str, Any] = {
        "digest": node.manifest.digest,
        "media_type": node.manifest.media_type,
        "platform": str(node.platform) if node.platform else None,
    }
    if isinstance(node, Image):
        out["kind"] = "image"
        out["config"] = {
            "digest": node.config.digest,
            "size": node.config.size,
            "media_type": node.config.media_type,
            **config_summary(node.config_bytes, str(node.reference)),
        }
        out["layers"] = [
            {"digest": l.descriptor.digest, "size": l.descriptor.size, "media_type": l.descriptor.media_type}
            for l in node.layers
        ]
        out["size"] = sum(l.descriptor.size for l in node.layers)
    elif isinstance(node, Artifact):
        out["kind"] = "artifact"
        out["artifact_type"] = node.artifact_type
        out["subject"] = node.subject.digest if node.subject else None
        out["blobs"] = [{"digest": d.digest, "size": d.size, "media_type": d.media_type} for d in node.blobs]
        out["size"] = sum(d.size for d in node.blobs)
    else:
        out["kind"] = "index"
    return out


@click.command("inspect")
@click.argument("image")
@click.option("--raw", is_flag=True, help="Print the exact manifest (or index) bytes the registry serves.")
@click.option("--config", "config", is_flag=True, help="Print the exact config bytes (for --platform).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@registry_options
@wrap_errors
def inspect(image: str, raw: bool, config: bool, as_json: bool, **opts: Any) -> None:
    """Describe IMAGE[:TAG] without fetching its layers: digest, platforms, layers, config.

    For an index, the platforms are listed and the one --platform picks is described.
    IMAGE may be a registry reference or a local layout (oci:DIR[:REF],
    docker-archive:FILE[:REF], oci-archive:FILE[:REF], or a path).

    \b
    Examples:
      occystrap inspect 127.0.0.1:5000/team/app:v1
      occystrap inspect --platform linux/arm64 --json busybox:1.36
      occystrap inspect --raw busybox | jq .
      occystrap inspect --config busybox | jq .config.Cmd
      occystrap inspect mirror/:127.0.0.1:5000/team/app:v1
    """
    from occystrap import locations

    if raw and config:
        raise UsageError("--raw and --config each print exact bytes; pick one")
    where = locations.parse(image)
    opts["quiet"] = True

    async def body(ctx: Context) -> None:
        from occystrap.commands.endpoints import open_source
        from occystrap.resolve import resolve

        source, ref = await open_source(ctx, where)
        if raw:
            echo_bytes((await source.manifest(ref)).data)
            return
        found = await resolve(source, ref, ctx.platform, ctx.limits.resolves)
        node = found.nodes[0]
        if config:
            if not isinstance(node, Image):
                raise ManifestError(f"{ref} is not an image: it has no image config")
            echo_bytes(node.config_bytes)
            return
        out: dict[str, Any] = {
            "reference": str(ref),
            "digest": found.top.digest,
            "media_type": found.top.media_type,
        }
        if found.is_index:
            out["platforms"] = [
                {
                    "platform": str(e.platform) if e.platform else None,
                    "digest": e.digest,
                    "size": e.size,
                    "kind": "attestation" if e.platform and not e.platform.runnable else "manifest",
                }
                for e in found.entries
            ]
        detail = describe(node)
        out["manifest"] = {key: detail.pop(key) for key in ("digest", "media_type", "platform")}
        out.update(detail)
        if as_json:
            click.echo(json.dumps(out, indent=2))
        else:
            click.echo("\n".join(inspect_lines(out)))

    run(opts, body)


def inspect_lines(out: dict[str, Any]) -> list[str]:
    lines = [out["reference"], f"  digest:     {out['digest']}", f"  media type: {out['media_type']}"]
    m = out
    if "platforms" in out:
        lines.append("  platforms:")
        lines.extend(f"    {p['platform'] or '-':<20} {p['digest']}" for p in out["platforms"])
        chosen = out["manifest"]
        lines.append(f"  {chosen['platform']} manifest: {chosen['digest']} ({chosen['media_type']})")
    if m["kind"] == "artifact":
        lines.append(
            f"  artifact:   {m['artifact_type']}" + (f" (refers to {m['subject']})" if m["subject"] else "")
        )
        lines.append(f"  blobs ({len(m['blobs'])}, {m['size']} bytes):")
        lines.extend(f"    {b['digest']}  {b['size']:>12}  {b['media_type']}" for b in m["blobs"])
        return lines
    if m["kind"] == "index":
        return lines
    c = m["config"]
    plat = "/".join(str(x) for x in (c["os"], c["architecture"], c["variant"]) if x)
    lines.append(f"  config:     {c['digest']} ({c['size']} bytes)")
    lines.append(f"    platform:   {plat}")
    lines.append(f"    created:    {c['created']}")
    lines.append(f"    entrypoint: {json.dumps(c['entrypoint'])}")
    lines.append(f"    cmd:        {json.dumps(c['cmd'])}")
    lines.append(f"  layers ({len(m['layers'])}, {m['size']} bytes):")
    lines.extend(f"    {l['digest']}  {l['size']:>12}  {l['media_type']}" for l in m["layers"])
    return lines
