"""Tag lists served in pages, as the distribution spec describes and Docker Hub, ghcr.io and
distribution 3 do it, for the fault proxy to impose (Debian's distribution 2.8 ignores `n` on
`/tags/list` and always answers the whole list; it pages only `_catalog`).

`GET /v2/NAME/tags/list?n=N&last=T` answers at most min(N, page_size) tags, in lexical order,
after T; when more remain, a `Link: <…?n=…&last=…>; rel="next"` header names the next page,
relative (distribution's form) or as an absolute URL (as some hosted registries send it).

    proxy.set_tag_pages(TagPages(page_size=2))
    ... the client must follow Link to see every tag ...
    assert [s.path for s in proxy.seen("/tags/list")][1].endswith("last=t1")
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlencode, urlsplit

LinkStyle = Literal["relative", "absolute"]
TAGS_LIST = re.compile(r"^/v2/(?P<name>.+)/tags/list$")


@dataclass
class TagPages:
    page_size: int = 2
    link: LinkStyle = "relative"

    def matches(self, method: str, path_qs: str) -> str | None:
        """The repository name when this is a tag-list GET, else None."""
        m = TAGS_LIST.match(urlsplit(path_qs).path)
        return m["name"] if method == "GET" and m else None

    def page(self, name: str, path_qs: str, all_tags: list[str], base_url: str) -> tuple[bytes, str | None]:
        """The body of this page and the Link header to the next one (None on the last)."""
        query = parse_qs(urlsplit(path_qs).query)
        wanted = int(query.get("n", [str(self.page_size)])[0] or self.page_size)
        size = max(1, min(wanted, self.page_size))
        last = query.get("last", [""])[0]
        ordered = sorted(all_tags)
        rest = [t for t in ordered if t > last] if last else ordered
        page, more = rest[:size], len(rest) > size
        body = json.dumps({"name": name, "tags": page}).encode()
        if not more:
            return body, None
        target = f"/v2/{name}/tags/list?{urlencode({'n': size, 'last': page[-1]})}"
        if self.link == "absolute":
            target = base_url + target
        return body, f'<{target}>; rel="next"'
