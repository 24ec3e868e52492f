"""Remove each integrity and safety check in turn and prove a test notices: `make mutants`.

Every entry of MUTATIONS names a check, the exact source text that makes it (file and
snippet), what replaces it, and the tests that must fail without it. For each mutation the
project is copied to a scratch directory, the snippet replaced there (never in the working
tree), and only those tests run, with CI=true. A mutation is *killed* when every one of its
tests fails; it *survives* when any of them passes. A snippet that is not found exactly once
stops the run before anything is mutated: the code moved, so the list must follow it.

    python tools/mutants.py                 # all of them
    python tools/mutants.py blob-digest     # only these
    python tools/mutants.py --list          # names, checks and tests

Exit status: 0 when every mutation is killed, 1 when any survives, 2 when the list no longer
matches the code or the tests fail on the unmutated copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("occystrap", "tests", "pyproject.toml")
CLAIMS = "tests/test_integrity_claims.py::"
EDGES = "tests/test_registry_edges.py::"
HOSTILE = "tests/test_extracted.py::test_hostile_layers_are_refused"
HELD = "tests/test_held_first.py::"
# One mutation's tests should take seconds; a mutant that hangs is stopped and counted as caught.
TIMEOUT = 600


@dataclass(frozen=True)
class Edit:
    path: str
    snippet: str
    replacement: str


@dataclass(frozen=True)
class Mutation:
    name: str
    removes: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]


def _if_false(path: str, condition: str) -> Edit:
    """`if <condition>:` becomes `if False:` (the check never fires)."""
    return Edit(path, f"if {condition}:", "if False:")


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "blob-digest",
        "BlobCheck.finish: the sha256 of a blob against its descriptor",
        (_if_false("occystrap/streamcheck.py", "got != self.digest"),),
        (
            CLAIMS + "test_blob_with_a_changed_gzip_mtime_is_refused[fetch-to-tarfile]",
            CLAIMS + "test_blob_with_a_changed_gzip_mtime_is_refused[fetch-to-extracted]",
            CLAIMS + "test_recreate_image_refuses_a_tampered_blob[mtime]",
            CLAIMS + "test_tarfile_to_extracted_refuses_a_tampered_blob[mtime]",
            CLAIMS + "test_copy_of_a_blob_with_a_changed_gzip_mtime_never_lands",
            CLAIMS + "test_push_of_a_tampered_blob_never_lands",
        ),
    ),
    Mutation(
        "diff-id",
        "BlobCheck.finish: the uncompressed layer's sha256 against the config's diff_id",
        (_if_false("occystrap/streamcheck.py", "self.diff_id is not None and diff != self.diff_id"),),
        ("tests/test_fetch_tarfile.py::test_diff_id_mismatch_is_refused",),
    ),
    Mutation(
        "blob-oversize",
        "BlobCheck.feed_raw: more bytes than the descriptor's size stop the blob",
        (_if_false("occystrap/streamcheck.py", "self._seen > self.size"),),
        ("tests/test_pipeline.py::test_an_oversized_blob_fails_in_the_raw_stage",),
    ),
    Mutation(
        "config-digest-resolve",
        "resolve.small_blob: the config's digest and size as fetched",
        (_if_false("occystrap/resolve.py", "digests.of(data) != desc.digest or len(data) != desc.size"),),
        (CLAIMS + "test_small_blob_checks_the_config_digest",),
    ),
    Mutation(
        "config-digest-model",
        "model.build_image: the config bytes against the manifest's config descriptor",
        (
            _if_false(
                "occystrap/model.py",
                "digests.of(config_bytes) != config.digest or len(config_bytes) != config.size",
            ),
        ),
        (CLAIMS + "test_build_image_checks_the_config_against_the_manifest",),
    ),
    Mutation(
        "config-digest-both",
        "both config checks at once (each alone is backed by the other)",
        (
            _if_false("occystrap/resolve.py", "digests.of(data) != desc.digest or len(data) != desc.size"),
            _if_false(
                "occystrap/model.py",
                "digests.of(config_bytes) != config.digest or len(config_bytes) != config.size",
            ),
        ),
        (CLAIMS + "test_config_that_does_not_match_its_digest_is_refused",),
    ),
    Mutation(
        "pinned-manifest",
        "RegistryClient.manifest: a manifest asked for by digest must hash to it",
        (_if_false("occystrap/registry/client.py", 'target.startswith("sha256:") and digest != target'),),
        (
            CLAIMS + "test_manifest_pinned_by_digest_must_hash_to_it",
            "tests/test_client_errors.py::test_manifest_pinned_by_digest_must_match",
        ),
    ),
    Mutation(
        "manifest-cap-declared",
        "read_capped: a manifest whose Content-Length is over the cap is refused unread",
        (_if_false("occystrap/registry/client.py", "length is not None and length > MAX_MANIFEST_BYTES"),),
        ("tests/test_client_errors.py::test_manifest_over_the_cap_is_refused[content-length]",),
    ),
    Mutation(
        "manifest-cap-streamed",
        "read_capped: a manifest body growing over the cap is cut off",
        (_if_false("occystrap/registry/client.py", "len(body) > MAX_MANIFEST_BYTES"),),
        ("tests/test_client_errors.py::test_manifest_over_the_cap_is_refused[streamed]",),
    ),
    Mutation(
        "upload-blob-digest",
        "Uploader._landed: the digest the registry says it stored a blob under is the blob's",
        (_if_false("occystrap/registry/upload.py", "got and got != desc.digest"),),
        (CLAIMS + "test_a_destination_that_says_it_stored_other_content_is_not_trusted[blob]",),
    ),
    Mutation(
        "upload-manifest-digest",
        "Uploader.put_manifest: the digest the registry says it stored a manifest under is its own",
        (_if_false("occystrap/registry/upload.py", "stored != ours"),),
        (CLAIMS + "test_a_destination_that_says_it_stored_other_content_is_not_trusted[manifest]",),
    ),
    Mutation(
        "redirect-https-to-http",
        "Transport.follow: a redirect from HTTPS down to plain HTTP is refused",
        (
            _if_false(
                "occystrap/registry/transport.py",
                'url.startswith("https://") and target.startswith("http://")',
            ),
        ),
        (
            "tests/test_client_errors.py::test_redirect_from_https_to_plain_http_is_refused[blob]",
            "tests/test_client_errors.py::test_redirect_from_https_to_plain_http_is_refused[manifest]",
        ),
    ),
    Mutation(
        "redirect-drops-credentials",
        "Transport.follow: credentials never follow a redirect to another host",
        (_if_false("occystrap/registry/transport.py", "urlsplit(target).netloc != origin_netloc"),),
        (
            "tests/test_client_errors.py::test_redirect_to_another_host_drops_authorization[basic]",
            "tests/test_client_errors.py::test_redirect_to_another_host_drops_authorization[bearer]",
            "tests/test_security.py::test_redirect_to_another_host_never_carries_credentials[basic-other-name]",
            "tests/test_security.py::test_redirect_to_another_host_never_carries_credentials[bearer-other-port]",
            "tests/test_security.py::test_resumed_redirected_blob_never_carries_credentials[basic]",
        ),
    ),
    Mutation(
        "reuse-rehash",
        "verified_or_removed: a blob on disk is reused only after re-hashing (size alone kept)",
        (
            Edit(
                "occystrap/sinks/base.py",
                "got, got_size = digests.of_file(path)",
                "got, got_size = digest, path.stat().st_size",
            ),
        ),
        (CLAIMS + "test_merged_directory_reuses_a_same_size_tampered_blob_only_after_rehashing",),
    ),
    Mutation(
        "tarball-complete-rehash",
        "InPlace.complete: a layer the progress file calls complete is re-hashed",
        (
            Edit(
                "occystrap/sinks/inplace.py",
                "if digests.of_chunks(self.read(digest, size))[0] == digest:",
                "if True:",
            ),
        ),
        (CLAIMS + "test_tarball_layer_that_the_progress_file_calls_complete_is_rehashed",),
    ),
    Mutation(
        "resume-refetch",
        "engine: a resumed prefix that fails its check is fetched again from byte 0",
        (
            Edit(
                "occystrap/engine.py",
                "if offset == 0 or not isinstance(target, Resumable):\n                    raise",
                "if True:\n                    raise",
            ),
        ),
        (
            CLAIMS + "test_resumed_prefix_that_fails_its_check_is_fetched_again[fetch-to-tarfile]",
            CLAIMS + "test_resumed_prefix_that_fails_its_check_is_fetched_again[fetch-to-extracted]",
        ),
    ),
    Mutation(
        "catalog-lock",
        "DirectorySink: the file lock around reading and rewriting catalog.json and the indexes",
        (Edit("occystrap/sinks/directory.py", "with FileLock(str(self.root / LOCK)):", "if True:"),),
        (CLAIMS + "test_catalog_lock_keeps_both_of_two_concurrent_writers",),
    ),
    Mutation(
        "blob-lock",
        "DirectorySink: one writer per blob (a second one is told Busy and waits)",
        (
            Edit(
                "occystrap/sinks/directory.py",
                "        try:\n            lock.acquire()\n        except Timeout:\n            raise Busy",
                "        try:\n            pass\n        except Timeout:\n            raise Busy",
            ),
        ),
        (CLAIMS + "test_blob_lock_makes_a_second_writer_wait_then_reuse",),
    ),
    Mutation(
        "transfer-limit",
        "engine: -j N bounds the blobs in flight (limits.transfers)",
        (
            Edit(
                "occystrap/engine.py",
                "async with self.limits.transfers:",
                "async with anyio.CapacityLimiter(1000):",
            ),
        ),
        (
            CLAIMS + "test_blobs_in_flight_never_exceed_the_parallel_limit[fetch-to-tarfile]",
            CLAIMS + "test_blobs_in_flight_never_exceed_the_parallel_limit[copy]",
        ),
    ),
    Mutation(
        "largest-first",
        "engine: blobs are moved largest first",
        (
            Edit(
                "occystrap/engine.py",
                "todo.sort(key=lambda j: j.layer.descriptor.size, reverse=True)",
                "pass",
            ),
        ),
        (
            CLAIMS + "test_largest_blob_goes_first[fetch-to-tarfile]",
            CLAIMS + "test_largest_blob_goes_first[copy]",
        ),
    ),
    Mutation(
        "tar-dotdot",
        "expand.clean_name: '..' in a member name",
        (_if_false("occystrap/expand.py", 'any(p == ".." for p in parts)'),),
        (HOSTILE + "[dotdot]",),
    ),
    Mutation(
        "tar-absolute",
        "expand.clean_name: an absolute member name",
        (_if_false("occystrap/expand.py", 'name.startswith("/")'),),
        (HOSTILE + "[absolute]",),
    ),
    Mutation(
        "tar-symlink-escape",
        "TreeWriter.apply: a relative symlink climbing above the root",
        (_if_false("occystrap/expand.py", "link_escapes(rel, member.linkname)"),),
        (HOSTILE + "[symlink-out]",),
    ),
    Mutation(
        "tar-through-symlink",
        "TreeWriter._host_path: nothing is written through a symlink",
        (
            Edit(
                "occystrap/expand.py",
                "if stat.S_ISLNK(st.st_mode):\n                raise UnsafeArchiveError",
                "if False:\n                raise UnsafeArchiveError",
            ),
        ),
        (CLAIMS + "test_absolute_symlink_is_never_written_through",),
    ),
    Mutation(
        "tags-link-pagination",
        "listing.next_page: the tag list follows the registry's Link header",
        (Edit("occystrap/registry/listing.py", "if not link or 'rel=\"next\"' not in link:", "if True:"),),
        (
            EDGES + "test_tag_list_follows_link_pagination[relative]",
            EDGES + "test_tag_list_follows_link_pagination[absolute]",
        ),
    ),
    Mutation(
        "tag-list-shape",
        "listing.tags_page: a tag list that is not a list of tags is a manifest error, not a crash",
        (
            _if_false(
                "occystrap/registry/listing.py",
                "not isinstance(doc, dict) or not isinstance(page, list | None)",
            ),
        ),
        ("tests/test_exit_codes.py::test_exit_code[list-tags-7-tags-not-a-list]",),
    ),
    Mutation(
        "challenge-on-resource",
        "Authenticator.refused: a 401 challenge first met on a resource (not on /v2/) is answered",
        (
            Edit(
                "occystrap/registry/authflow.py",
                "if host.challenge is None:\n            host.challenge = pick_challenge(header)",
                "if False:\n            host.challenge = pick_challenge(header)",
            ),
        ),
        (EDGES + "test_challenge_only_on_the_resource",),
    ),
    Mutation(
        "insecure-http-fallback",
        "Authenticator.ping: an --insecure-registry that does not speak TLS is tried over plain HTTP",
        (_if_false("occystrap/registry/authflow.py", 'insecure and host.base_url.startswith("https://")'),),
        (EDGES + "test_insecure_registry_falls_back_from_https_to_http",),
    ),
    Mutation(
        "keep-going",
        "mirror --keep-going: a failure is narrowed down to its images, the others are mirrored",
        (Edit("occystrap/mirror/run.py", "if err is None or not keep_going:", "if True:"),),
        (EDGES + "test_keep_going_when_a_blob_fails_mid_fetch[merged]",),
    ),
    Mutation(
        "reserve-counts-in-flight",
        "Budget.spend: the GETs in flight count against the pull-quota reserve until they report",
        (
            Edit(
                "occystrap/registry/budget.py",
                "if quota.remaining - in_flight - 1 >= self.reserve:",
                "if quota.remaining - 1 >= self.reserve:",
            ),
        ),
        ("tests/test_budget.py::test_a_get_whose_reply_counts_only_itself_still_holds_the_reserve",),
    ),
    Mutation(
        "destination-config-digest",
        "DestinationFirst: a config read from a registry DEST is used only when it hashes right",
        (
            Edit(
                "occystrap/sources/destfirst.py",
                "return data if digests.of(data) == desc.digest else None",
                "return data",
            ),
        ),
        (HELD + "test_a_config_the_destination_holds_wrongly_comes_from_the_source",),
    ),
    Mutation(
        "destination-per-repository",
        "DestinationFirst: what a registry DEST holds is known per repository, not by digest alone",
        (Edit("occystrap/sources/destfirst.py", 'return f"{ref.registry}/{ref.repository}"', 'return ""'),),
        (HELD + "test_what_one_repository_holds_does_not_answer_for_another",),
    ),
    Mutation(
        "wrappers-pass-referrers",
        "HeldFirst: an incremental mirror's source wrapper passes the referrers API on",
        (Edit("occystrap/sources/heldfirst.py", "async def referrers(", "async def _referrers("),),
        (HELD + "test_both_wrappers_pass_the_referrers_api_on",),
    ),
    Mutation(
        "help-example",
        "a command's help loses its worked example (the usage line still names the command)",
        (
            Edit(
                "occystrap/commands/local.py",
                "    \\b\n    Example:\n      occystrap recreate-image mirror/ busybox latest busybox.tar\n",
                "",
            ),
        ),
        ("tests/test_mirror.py::test_every_command_help_has_an_example",),
    ),
)


def _find_all(mutations: Sequence[Mutation]) -> list[str]:
    """Problems: snippets not found exactly once in the working tree's files."""
    problems = []
    for m in mutations:
        for e in m.edits:
            path = ROOT / e.path
            text = path.read_text() if path.exists() else ""
            found = text.count(e.snippet)
            if found != 1:
                where = "not found" if found == 0 else f"found {found} times"
                problems.append(f"{m.name}: {e.path}: snippet {where}: {e.snippet!r}")
    return problems


def _scratch() -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="occystrap-mutants-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, scratch / name, ignore=ignore)
        else:
            shutil.copy2(src, scratch / name)
    return scratch


def _env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    # The scratch copy first on the path, ahead of the editable install of the working tree;
    # no bytecode, so a same-size edit within one second is never served from a stale .pyc.
    env.update(CI="true", PYTHONPATH=str(scratch), PYTHONDONTWRITEBYTECODE="1")
    return env


def _imports_from(scratch: Path) -> str:
    probe = subprocess.run(
        [sys.executable, "-c", "import occystrap; print(occystrap.__file__)"],
        cwd=scratch,
        env=_env(scratch),
        capture_output=True,
        text=True,
        check=True,
    )
    return probe.stdout.strip()


@dataclass(frozen=True)
class Outcome:
    failed: tuple[str, ...]  # the tests that failed (killed the mutant)
    passed: tuple[str, ...]  # the tests that passed (let it survive)
    error: str | None  # the run itself went wrong (collection error, nothing ran)
    seconds: float
    reasons: tuple[str, ...] = ()  # pytest's one-line summary of each failure


def _run_tests(scratch: Path, tests: Sequence[str]) -> Outcome:
    report = scratch / "report.xml"
    report.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-rf",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                *tests,
            ],
            cwd=scratch,
            env=_env(scratch),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return Outcome(tuple(tests), (), None, time.monotonic() - started)
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1) or not report.exists():
        output = (proc.stdout + proc.stderr)[-3000:]
        return Outcome((), (), f"pytest exited {proc.returncode}:\n{output}", seconds)
    failed: list[str] = []
    passed: list[str] = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        if skipped:
            return Outcome((), (), f"{name} was skipped", seconds)
        (failed if bad else passed).append(name)
    if len(failed) + len(passed) != len(tests):
        return Outcome((), (), f"ran {len(failed) + len(passed)} tests, {len(tests)} were named", seconds)
    reasons = tuple(line for line in proc.stdout.splitlines() if line.startswith("FAILED "))
    return Outcome(tuple(failed), tuple(passed), None, seconds, reasons)


def _apply(scratch: Path, mutation: Mutation) -> dict[Path, str]:
    """Edit the scratch copy; returns the files' texts as they were, to restore."""
    before: dict[Path, str] = {}
    for e in mutation.edits:
        target = scratch / e.path
        text = target.read_text()
        before.setdefault(target, text)
        assert text.count(e.snippet) == 1, (mutation.name, e.path)
        mutated = text.replace(e.snippet, e.replacement)
        compile(mutated, str(target), "exec")  # a mutant must still be Python
        target.write_text(mutated)
    return before


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these mutations (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    parser.add_argument("--show", action="store_true", help="print why each test failed (pytest's summary)")
    args = parser.parse_args(argv)

    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(unknown)}; --list shows them")
    chosen = [known[n] for n in args.names] if args.names else list(MUTATIONS)
    if args.list:
        for m in chosen:
            print(f"{m.name}: removes {m.removes}")
            for e in m.edits:
                print(f"    {e.path}: {e.snippet!r} -> {e.replacement!r}")
            for t in m.tests:
                print(f"    killed by {t}")
        return 0

    problems = _find_all(chosen)
    if problems:
        print("mutants: the code moved; update tools/mutants.py:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2

    scratch = _scratch()
    try:
        where = _imports_from(scratch)
        if not where.startswith(str(scratch)):
            print(f"mutants: the scratch copy imports occystrap from {where}", file=sys.stderr)
            return 2
        tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
        print(f"unmutated: {len(tests)} tests ...", flush=True)
        base = _run_tests(scratch, tests)
        if base.error or base.failed:
            print(
                f"mutants: the tests fail without any mutation: {base.error or base.failed}", file=sys.stderr
            )
            return 2
        print(f"unmutated: {len(base.passed)} passed ({base.seconds:.0f} s)\n", flush=True)

        survivors = 0
        broken = 0
        width = max(len(m.name) for m in chosen)
        for m in chosen:
            before = _apply(scratch, m)
            try:
                out = _run_tests(scratch, m.tests)
            finally:
                for path, text in before.items():
                    path.write_text(text)
            if out.error:
                broken += 1
                verdict = f"ERROR     {out.error}"
            elif out.passed:
                survivors += 1
                verdict = f"SURVIVED  {len(out.passed)} of {len(m.tests)} tests passed: " + ", ".join(
                    t.rsplit("::", 1)[1] for t in out.passed
                )
            else:
                verdict = f"killed    by {len(out.failed)}/{len(m.tests)} tests"
            print(f"{m.name:<{width}}  {verdict}  ({out.seconds:.0f} s)", flush=True)
            if args.show:
                for reason in out.reasons:
                    print(f"    {reason[:300]}", flush=True)
        print(
            f"\n{len(chosen)} mutations: {len(chosen) - survivors - broken} killed, "
            f"{survivors} survived, {broken} errors"
        )
        if broken:
            return 2
        return 1 if survivors else 0
    finally:
        if args.keep:
            print(f"scratch copy kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
