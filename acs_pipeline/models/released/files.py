"""Released files under a root: find them, import verified copies with a manifest under the
storage root, and load an imported copy back."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path, PurePosixPath

from acs_pipeline.io.storage import Storage, sha256_file
from acs_pipeline.models.released import (
    BENCHMARK_PROTOCOL,
    MANIFEST,
    PREFIX,
    RELEASED_FILES,
    RELEASED_MODELS,
)
from acs_pipeline.models.released.load import (
    LoadedRelease,
    ReleasedModel,
    ReleasedWeightsError,
    load_released,
)

__all__ = ["find_released", "import_released", "load_imported", "read_manifest"]


def find_released(source: Storage) -> dict[str, str]:
    """The released files at the top level of ``source``: model -> key (see the module doc).

    Raises :class:`ReleasedWeightsError` when two files claim one model.
    """
    found: dict[str, list[str]] = {}
    for rel in source.list(""):
        if "/" in rel:
            continue
        for model, names in RELEASED_FILES.items():
            if rel.lower() in names:
                found.setdefault(model, []).append(rel)
    ambiguous = {m: keys for m, keys in found.items() if len(keys) > 1}
    if ambiguous:
        raise ReleasedWeightsError(
            f"{source.root}: more than one released file per model: "
            + "; ".join(f"{m}: {', '.join(sorted(k))}" for m, k in sorted(ambiguous.items()))
        )
    return {m: found[m][0] for m in RELEASED_MODELS if m in found}


def _local_file(storage: Storage, rel: str, scratch: Path) -> Path:
    """A local path holding ``rel``: the file itself for local roots, else a download."""
    if not storage.is_s3:
        return Path(storage.uri(rel))
    return storage.get_file(rel, scratch / PurePosixPath(rel).name)


def read_manifest(target: Storage) -> dict[str, ReleasedModel]:
    """The imported released models recorded under ``target`` (empty when none)."""
    if not target.exists(MANIFEST):
        return {}
    data = json.loads(target.read_bytes(MANIFEST))
    return {name: ReleasedModel.from_dict(entry) for name, entry in data["models"].items()}


def import_released(
    source: Storage, target: Storage, *, scratch: Path | None = None
) -> list[ReleasedModel]:
    """Verify every released file under ``source`` and copy it to ``target`` under
    ``models/released/<model>/<file>`` with a manifest (``models/released/manifest.json``).

    Each file is loaded into its module (allow-listed, strict) before it is copied; a copy whose
    SHA-256 is already recorded is not uploaded again. Raises :class:`ReleasedWeightsError` when
    ``source`` holds none of the documented file names.
    """
    found = find_released(source)
    if not found:
        listed = [k for k in source.list("") if "/" not in k][:20]
        expected = "; ".join(f"{m}: {', '.join(n)}" for m, n in RELEASED_FILES.items())
        raise ReleasedWeightsError(
            f"{source.root}: no released weights found (expected {expected}); top-level files: "
            f"{listed or 'none'}"
        )
    previous = read_manifest(target)
    imported: list[ReleasedModel] = []
    for model, rel in found.items():
        with tempfile.TemporaryDirectory(prefix="acs-released-", dir=scratch) as tmp:
            path = _local_file(source, rel, Path(tmp))
            info = load_released(
                model, path, source_uri=source.uri(rel), protocol=BENCHMARK_PROTOCOL
            ).info
            stored = f"{PREFIX}/{model}/{PurePosixPath(rel).name}"
            old = previous.get(model)
            same = (
                old is not None
                and old.sha256 == info.sha256
                and old.stored_rel == stored
                and target.exists(stored)
                and target.size(stored) == info.bytes
            )
            if not same:
                target.put_file(stored, path)
            imported.append(ReleasedModel.from_dict({**info.to_dict(), "stored_rel": stored}))
    manifest = {"source": source.root, "models": {m.name: m.to_dict() for m in imported}}
    target.write_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return imported


def load_imported(
    target: Storage, model: str, *, scratch: Path | None = None, protocol: str | None = None
) -> LoadedRelease | None:
    """Load the imported copy of released ``model`` from ``target`` to predict under
    ``protocol`` (default: the authors'); None when the manifest does not list it. The copy must
    still have the SHA-256 recorded at import."""
    entry = read_manifest(target).get(model)
    if entry is None:
        return None
    with tempfile.TemporaryDirectory(prefix="acs-released-", dir=scratch) as tmp:
        path = _local_file(target, entry.stored_rel, Path(tmp))
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ReleasedWeightsError(
                f"{target.uri(entry.stored_rel)}: SHA-256 {digest[:16]}... differs from the "
                f"{entry.sha256[:16]}... recorded at import; run the import again"
            )
        loaded = load_released(model, path, source_uri=entry.source_uri, protocol=protocol)
    loaded.info = ReleasedModel.from_dict(
        {**loaded.info.to_dict(), "stored_rel": entry.stored_rel, "file_name": entry.file_name}
    )
    return loaded
