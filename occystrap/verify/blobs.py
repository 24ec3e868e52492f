"""verify: every blob file re-hashed (digest and size), every layer decompressed and checked
against its diff_id; a few at once under the CPU limiter (hashlib, ISA-L and zstd release
the GIL, so each worker thread really runs on its own core)."""

from __future__ import annotations

import anyio

from occystrap.errors import IntegrityError
from occystrap.layout.store import CHUNK
from occystrap.streamcheck import BlobCheck
from occystrap.ui.units import human
from occystrap.verify.result import CORRUPT, DIFF_ID, DIGEST, MISSING, SIZE, Problem
from occystrap.verify.state import BlobOutcome, Claim, State, digest_of_name


class _Stopped(Exception):
    pass


def check_blob(v: State, claim: Claim) -> BlobOutcome:
    name = claim.name
    size = v.store.size(name)
    if size is None and name in v.base:
        return BlobOutcome(name, False, 0, False, None)  # a delta leaves it to its base: not a problem
    if size is None:
        return BlobOutcome(name, False, 0, False, Problem(name, f"missing ({claim.referrers()})", MISSING))
    if claim.digest is not None and not claim.digest.startswith("sha256:"):
        msg = f"cannot check digest {claim.digest}: only sha256 is supported"
        return BlobOutcome(name, True, 0, False, Problem(name, msg, DIGEST))
    want_plain = bool(claim.diff_ids)
    # The file's own size, so the check never stops early: the claims judge the size.
    check = BlobCheck(
        claim.digest or "sha256:", size, None, None, (lambda data: None) if want_plain else None
    )
    corrupt: str | None = None
    try:
        reader = v.store.open(name)
        try:
            while chunk := reader.read(CHUNK):
                if v.stop.is_set():
                    raise _Stopped
                check.feed_raw(chunk)
                if want_plain and corrupt is None:
                    try:
                        check.feed_plain(check.inflate(chunk)[0])
                    except IntegrityError as exc:
                        corrupt = str(exc)
        finally:
            reader.close()
        if want_plain and corrupt is None:
            try:
                check.end_of_stream()
            except IntegrityError as exc:
                corrupt = str(exc)
    except OSError as exc:
        return BlobOutcome(name, True, check.seen, False, Problem(name, f"unreadable: {exc}", MISSING))
    return BlobOutcome(name, True, check.seen, want_plain, judge(claim, check, corrupt))


def judge(claim: Claim, check: BlobCheck, corrupt: str | None) -> Problem | None:
    """The first thing wrong with a blob: size (truncation), digest, decompression, diff_id."""
    name, seen = claim.name, check.seen
    for claimed, who in claim.sizes.items():
        if claimed != seen:
            hint = " (truncated)" if seen < claimed else ""
            return Problem(name, f"is {seen} bytes, {who} should be {claimed}{hint}", SIZE)
    got = check.raw_digest()
    if claim.digest is not None and got != claim.digest:
        return Problem(name, f"content hashes to {got}, not {claim.digest} ({claim.referrers()})", DIGEST)
    if not claim.diff_ids:
        return None
    if corrupt is not None:
        return Problem(name, f"does not decompress: {corrupt} ({claim.referrers()})", CORRUPT)
    diff = check.plain_digest()
    for diff_id, who in claim.diff_ids.items():
        if diff_id != diff:
            return Problem(name, f"uncompresses to {diff}, but the config says {diff_id} for {who}", DIFF_ID)
    return None


async def check_blobs(v: State, limiter: anyio.CapacityLimiter) -> tuple[int, int, int]:
    for name in v.store.blob_names():
        if name not in v.claims:
            v.claims[name] = Claim(name, digest_of_name(name))
    claims = [v.claims[n] for n in sorted(v.claims)]
    # Largest first, so the last worker to finish is not the one left with the big layer.
    order = sorted(claims, key=lambda c: -(v.store.size(c.name) or 0))
    if not v.store.parallel:
        limiter = anyio.CapacityLimiter(1)  # a compressed tarball reads in order only
    outcomes: dict[str, BlobOutcome] = {}

    async def one(claim: Claim) -> None:
        async with limiter:
            outcome = await anyio.to_thread.run_sync(check_blob, v, claim)
        outcomes[claim.name] = outcome
        if outcome.present:
            v.note(f"checked {outcome.name} ({human(outcome.size)})")

    try:
        async with anyio.create_task_group() as tg:
            for claim in order:
                tg.start_soon(one, claim)
    finally:
        v.stop.set()  # threads still hashing (Ctrl-C) give up at their next chunk
    blobs = total = diff_ids = 0
    for c in claims:
        outcome = outcomes[c.name]
        if outcome.present:
            blobs += 1
            total += outcome.size
            diff_ids += outcome.decompressed and outcome.problem is None
        if outcome.problem is not None:
            v.problems.append(outcome.problem)
    return blobs, total, diff_ids
