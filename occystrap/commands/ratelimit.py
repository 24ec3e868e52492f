"""ratelimit: what is left of a registry's pull quota, asked with a HEAD that does not spend it."""

from __future__ import annotations

import json
from typing import Any

import click

from occystrap.commands.common import Context, parse_ref, registry_options, run, wrap_errors
from occystrap.errors import NotFoundError


@click.command("ratelimit")
@click.argument("image", default="ratelimitpreview/test")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a line.")
@registry_options
@wrap_errors
def ratelimit_cmd(image: str, as_json: bool, **opts: Any) -> None:
    """Print what IMAGE's registry says is left of its pull quota: limit, remaining, window.

    One HEAD request for IMAGE[:TAG]'s manifest, which Docker Hub does not count as a pull,
    with the same credentials a fetch would use (Docker Hub's quota is per account when
    logged in, else per address). The registry's ratelimit-* (Docker Hub) or RateLimit-*
    (IETF draft) headers are read; a registry that sends none has no quota to report.
    IMAGE defaults to ratelimitpreview/test, the image Docker documents for this check.

    \b
    Examples:
      occystrap ratelimit
      occystrap ratelimit library/busybox
      occystrap ratelimit --json ghcr.io/org/app:v1 | jq .remaining
    """
    ref = parse_ref(image, None)
    opts["quiet"] = True

    async def body(ctx: Context) -> None:
        client = await ctx.client()
        found = await client.head_manifest(ref)
        quota = client.budget.quotas.get(ref.registry)
        if found is None and quota is None:
            raise NotFoundError(f"{ref} not found on {ref.registry}")
        if as_json:
            doc = {
                "registry": ref.registry,
                "limit": quota.limit if quota else None,
                "remaining": quota.remaining if quota else None,
                "window": quota.window if quota else None,
                "reset": quota.reset if quota else None,
                "source": quota.source if quota else None,
            }
            click.echo(json.dumps(doc))
        elif quota is None:
            click.echo(f"{ref.registry}: no pull rate limit reported")
        else:
            charged = f" (charged to {quota.source})" if quota.source else ""
            click.echo(f"{ref.registry}: {quota.describe()}{charged}")

    run(opts, body)
