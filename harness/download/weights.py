"""fetch(spec, role): the verified local path of one released file of a model.

Order: files placed by hand (--weights-dir), then the cache, then each source of the
manifest in turn. A file is used only if its sha256 matches the manifest's pin or, for an
unpinned file, the hash recorded in the lock file at its first download (recorded only after
a look at its content: a torch file, or a JSON object for a config). One process at a time
works on a cached file: a second run waits, then finds the verified file.
"""
import logging
import os
from pathlib import Path

from harness.download import sources
from harness.download.errors import SourceError
from harness.download.lock import check_folder, exclusive, lock_entry, record_lock
from harness.download.settings import Patience, harness_home, is_offline, lock_file_for
from harness.download.verify import content_problem, move_aside, read_record, unchanged_since, write_record
from harness.errors import UserError
from harness.files import file_digest

logger = logging.getLogger(__name__)


def cache_path(spec, role, cache_dir=None):
    return harness_home(cache_dir) / "weights" / spec.id / spec.files[role].filename


def hand_placed_candidates(weights_dir, spec, filename):
    """Where a file placed by hand may lie: DIR/<model id>/, DIR/<authors' folder>/, DIR/."""
    root = Path(weights_dir).expanduser()
    folders = [root / spec.id]
    if spec.arch.get("release_folder"):
        folders.append(root / spec.arch["release_folder"])
    return [f / filename for f in folders] + [root / filename]


class _Expected:
    """The sha256 a file must have, and where that requirement comes from."""

    def __init__(self, spec, role, lock_file):
        self.spec, self.role, self.lock_file = spec, role, Path(lock_file)
        pinned = spec.files[role].sha256
        self.entry = None if pinned else lock_entry(self.lock_file, spec.id, role)
        self.sha256 = pinned or (self.entry or {}).get("sha256")
        if self.sha256 is None:
            check_folder(self.lock_file)  # before any download: the first hash will be written there

    @property
    def origin(self):
        if self.spec.files[self.role].sha256:
            return "weights_manifest.yaml"
        if self.entry:
            return (f"{self.lock_file.name} (first seen {self.entry.get('fetched_at')} "
                    f"from {self.entry.get('source')})")
        return None

    def lock_fix(self, cached):
        """How to get past a wrong locked hash: downloading again cannot, the lock is what refuses."""
        if not self.entry:
            return ""
        return (f"; the required sha256 is the one recorded under '{self.spec.id}: {self.role}:' in "
                f"{self.lock_file} at the first download: if that download was bad or the authors "
                f"re-released the file, delete that entry and the cached file {cached} (if present), "
                f"then run `harness download {self.spec.id}` again")

    def mismatch(self, sha):
        return self.sha256 is not None and sha != self.sha256

    def remember(self, path, sha, source, quiet, lock=True):
        """An unpinned file seen for the first time: check its content, then (lock=True) record its hash so
        that a change is refused later. lock=False leaves the recording to `lock_verified`, once the file
        has been read safely into its model. Raises SourceError ("content" or "mismatch")."""
        if self.sha256 is not None:
            return
        problem = content_problem(path, self.role, self.spec.files[self.role].git_blob)
        if problem:
            raise SourceError("content", f"the file {problem}")
        if not lock:
            return
        entry = record_lock(self.lock_file, self.spec.id, self.role, sha, Path(path).stat().st_size, source,
                            keep_existing=True)
        if entry["sha256"] != sha:  # another run, with another cache, locked its own copy first
            raise SourceError("mismatch", f"got sha256 {sha} but another run has just recorded "
                                          f"{entry['sha256']} in {self.lock_file}")
        self.sha256, self.entry = sha, entry
        if not quiet:
            logger.warning(f"warning: {self.spec.id} {self.role} is not pinned in the manifest; recorded its sha256 "
                           f"{sha} in {self.lock_file} (a different file will be refused from now on)")


def fetch(spec, role, *, cache_dir=None, weights_dir=None, verify=False, offline=None, quiet=False, lock=True):
    """Return the path of a verified copy of `spec.files[role]`, downloading it if needed.

    verify=True re-hashes a cached file instead of trusting its size, mtime and recorded hash.
    offline (default: $HARNESS_OFFLINE) never touches the network.
    lock=False: a file the manifest leaves unpinned is not locked here; the caller locks it with
    `lock_verified` once it has loaded into its model (a file refused later never poisons the lock).
    Raises UserError with the problem and the fix when no good copy can be had.
    """
    if role not in spec.files:
        raise UserError(f"model '{spec.id}' has no file '{role}' "
                        f"(it has: {', '.join(spec.files) or 'none: trained here, see harness mlspl'})")
    wfile = spec.files[role]
    lock_file = lock_file_for(spec.manifest_path)  # beside the manifest the entry came from
    looked = []
    if weights_dir and Path(weights_dir).expanduser().exists() and not Path(weights_dir).expanduser().is_dir():
        raise UserError(f"--weights-dir {weights_dir} is a file; pass the folder holding the hand-placed files "
                        f"(<folder>/{spec.id}/{wfile.filename}), or leave --weights-dir out")
    if weights_dir:
        found = _hand_placed(spec, role, weights_dir, _Expected(spec, role, lock_file), looked, quiet, lock)
        if found:
            return found
    dest = cache_path(spec, role, cache_dir)
    looked.append(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only cache: looked at, never written
        pass
    with exclusive(dest, quiet=quiet):
        # Read after the wait: the run that held the lock may have cached this file and locked its hash.
        expected = _Expected(spec, role, lock_file)
        moved = None
        if dest.is_file():
            moved = _check_cached(dest, expected, verify, quiet, lock)
            if moved is None:
                return dest
        if is_offline(offline):
            bad = f" (the cached copy failed verification and was moved to {moved})" if moved else ""
            raise UserError(f"offline: {spec.id} {role} ({wfile.filename}) is not on this machine{bad}; looked in "
                            f"{', '.join(map(str, looked))}; place it there by hand, or go online (no --offline, "
                            f"HARNESS_OFFLINE unset) and run `harness download {spec.id}`")
        return _download(spec, role, dest, expected, weights_dir, quiet, lock)


def lock_verified(spec, role, path, *, quiet=False):
    """Record the sha256 of `path` as the release of an unpinned file, once it has been read safely
    into its model; a pinned or already locked file is only checked against its hash."""
    lock_file = lock_file_for(spec.manifest_path)  # beside the manifest the entry came from
    expected = _Expected(spec, role, lock_file)
    record = read_record(path) or {}  # a cached file's download record; none for a hand-placed one
    sha = (record.get("sha256") if unchanged_since(path, record) else None) or file_digest(path)
    if expected.mismatch(sha):
        raise UserError(f"{path} has sha256 {sha} but {spec.id} {role} must have {expected.sha256} "
                        f"(from {expected.origin}); it is not the released file: remove or replace it")
    source = record.get("source") or f"weights-dir:{path}"
    try:
        expected.remember(path, sha, source, quiet)
    except SourceError as e:
        raise UserError(f"{path}: {e}; it is not the released file: remove or replace it")


def _hand_placed(spec, role, weights_dir, expected, looked, quiet, lock):
    filename = spec.files[role].filename
    candidates = hand_placed_candidates(weights_dir, spec, filename)
    for i, path in enumerate(candidates):
        looked.append(path)
        if not path.is_file():
            if os.path.lexists(path):  # said, not skipped in silence: the user put something there
                logger.warning(f"warning: ignoring {path}: it is {'a folder' if path.is_dir() else 'not a regular file'}"
                               f"; put the {role} file itself there")
            continue
        bare = i == len(candidates) - 1
        if bare and expected.sha256 is None:
            # DIR/checkpoint.pkl does not say which model it belongs to: only a known hash can tell.
            logger.warning(f"warning: ignoring {path}: its name does not say which model it is and no sha256 is "
                           f"known for {spec.id} {role}; move it to {candidates[0]}")
            continue
        sha = file_digest(path)
        if expected.mismatch(sha):
            raise UserError(f"{path} has sha256 {sha} but {spec.id} {role} must have {expected.sha256} "
                            f"(from {expected.origin}); it is not the released file: remove or replace it"
                            f"{expected.lock_fix(cache_path(spec, role))}")
        try:
            expected.remember(path, sha, f"weights-dir:{path}", quiet, lock)
        except SourceError as e:
            raise UserError(f"{path}: {e}; it is not the released file: remove or replace it")
        return path
    return None


def _check_cached(dest, expected, verify, quiet, lock):
    """None if the cached file is good; otherwise the path it was moved aside to."""
    record = read_record(dest) or {}
    want = expected.sha256 or record.get("sha256")
    source = record.get("source", "found in cache")
    if not verify and unchanged_since(dest, record) and want == record.get("sha256"):
        sha = want  # the same size and mtime as when it was hashed: trusted without reading it
    else:
        sha = file_digest(dest)
        if want is not None and sha != want:
            return _set_aside(dest, f"has sha256 {sha}, not {want}")
        if not unchanged_since(dest, record) or record.get("sha256") != sha:
            write_record(dest, sha, source)  # also gives an older record its mtime
    try:
        expected.remember(dest, sha, f"cache:{source}", quiet, lock)
    except SourceError as e:
        return _set_aside(dest, str(e))
    return None


def _set_aside(dest, why):
    moved = move_aside(dest)
    logger.warning(f"warning: cached {dest}: {why}; moved it to {moved}")
    return moved


def _download(spec, role, dest, expected, weights_dir, quiet, lock):
    wfile = spec.files[role]
    patience = Patience.from_env()
    failures = []
    for source in wfile.sources:
        where = sources.describe(source)
        part = sources.partial_path(dest, source)
        try:
            sources.download(source, dest, patience=patience, quiet=quiet)
            sha = file_digest(part)
            if expected.mismatch(sha):
                raise SourceError("hash", f"got sha256 {sha} but {expected.sha256} is required "
                                          f"(from {expected.origin})")
            expected.remember(part, sha, sources.as_text(source), quiet, lock)
        except SourceError as e:
            if e.kind in ("hash", "mismatch", "content") and part.exists():
                # never used: renamed so that nothing picks it up, kept for a look
                e = SourceError(e.kind, f"{e}; the file was moved to {move_aside(part, name_like=dest)}")
            failures.append((where, e))
            if not quiet:
                logger.warning(f"{spec.id} {role}: {where} failed: {e}")
            continue
        os.replace(part, dest)
        write_record(dest, sha, sources.as_text(source))
        _remove_partials(dest)
        return dest
    raise UserError(_failure_message(spec, role, failures, weights_dir, expected, dest))


def _remove_partials(dest):
    for stale in dest.parent.glob(dest.name + ".part-*"):
        stale.unlink(missing_ok=True)


def _failure_message(spec, role, failures, weights_dir, expected, dest):
    wfile = spec.files[role]
    kinds = {e.kind for _, e in failures}
    reasons = "; ".join(str(e) for _, e in failures)
    mirrors = [s["url"] for s in wfile.sources if s["type"] == "http"]
    folders = [f"https://drive.google.com/drive/folders/{s['folder_id']}"
               for s in wfile.sources if s["type"] == "gdrive_folder"]
    by_hand = (f"download it by hand ({', '.join(mirrors + folders) or 'see the manifest'}) and place it as "
               f"{Path(weights_dir or 'DIR') / spec.id / wfile.filename}, then pass --weights-dir "
               f"{weights_dir or 'DIR'}")
    head = f"cannot fetch {spec.id} {role} ({wfile.filename})"
    if kinds == {"network"}:
        head = f"no network: {head}"
        by_hand = "check the connection (or a proxy), or " + by_hand
    elif "quota" in kinds:
        head = f"{head}: Google Drive's download quota for it is used up" + (
            " and the mirror failed too" if mirrors else "")
    if "hash" in kinds:
        by_hand += expected.lock_fix(dest)
    return f"{head}: {reasons}; {by_hand}"
