"""On-disk format, atomic writes and integrity checks for :class:`~pinsage_ray.index.HNSWIndex`.

A saved index is a directory::

    index.bin       hnswlib's own graph file (``Index.save_index``)
    ids.npy         the caller's int64 ids, position i -> id   (or ``ids.parquet``, column
                    ``id``, for string ids)
    manifest.json   format_version, dim, count, space, M, ef_construction, ef, recall_at_k,
                    k_for_recall, build_seconds, search ('hnsw' or 'exact'; absent in indexes
                    saved before exact search: 'hnsw'), ids_file and the sha256 of both
                    data files

hnswlib trusts its input file completely: a corrupted ``index.bin`` (a wrong neighbour id, a
truncated link list) can crash the whole process at load or query time. Everything here
therefore runs *before* hnswlib sees the file: the manifest is parsed and type-checked, both
data files are hashed, and the ``index.bin`` header and link lists are walked in numpy
(:func:`check_index_file`) so that even a file whose checksum was recomputed after corruption
is rejected with an :class:`IndexIntegrityError` instead of a segfault.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1
INDEX_FILE = "index.bin"
MANIFEST_FILE = "manifest.json"
#: ``manifest.json["kind"]`` of a :class:`~pinsage_ray.index.partitioned.PartitionedIndex`.
PARTITIONED_KIND = "partitioned"
IDS_NPY = "ids.npy"
IDS_PARQUET = "ids.parquet"

# hnswlib (0.7/0.8) HierarchicalNSW::saveIndex header: offsetLevel0_, max_elements_,
# cur_element_count, size_data_per_element_, label_offset_, offsetData_ (size_t), maxlevel_
# (int), enterpoint_node_ (uint32), maxM_, maxM0_, M_ (size_t), mult_ (double),
# ef_construction_ (size_t). Little-endian x86-64 / arm64 layout.
_HEADER = struct.Struct("<QQQQQQiIQQQdQ")

_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,),
    "dim": (int,),
    "count": (int,),
    "space": (str,),
    "M": (int,),
    "ef_construction": (int,),
    "ef": (int,),
    "k_for_recall": (int,),
    "build_seconds": (int, float),
    "ids_file": (str,),
    "sha256": (dict,),
}


class IndexIntegrityError(ValueError):
    """A saved index directory is missing a file, is inconsistent or is corrupted."""


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed in ``block``-byte reads."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def write_ids(ids: np.ndarray, directory: Path) -> str:
    """Write ids (int64 or object array of str) into ``directory``; returns the file name."""
    if ids.dtype == np.int64:
        np.save(directory / IDS_NPY, ids, allow_pickle=False)
        return IDS_NPY
    table = pa.table({"id": pa.array(ids.tolist(), type=pa.string())})
    pq.write_table(table, directory / IDS_PARQUET)
    return IDS_PARQUET


def read_ids(path: Path, count: int) -> np.ndarray:
    """Read ids written by :func:`write_ids`; checks the count and that ids are unique."""
    try:
        if path.name == IDS_NPY:
            ids = np.load(path, allow_pickle=False)
            if ids.dtype != np.int64 or ids.ndim != 1:
                raise IndexIntegrityError(
                    f"{path}: expected a 1-D int64 array, got dtype={ids.dtype} shape={ids.shape}"
                )
        else:
            table = pq.read_table(path)
            if table.column_names != ["id"] or not pa.types.is_string(table.schema.field("id").type):
                raise IndexIntegrityError(f"{path}: expected one string column 'id', got {table.schema}")
            if table.column("id").null_count:
                raise IndexIntegrityError(f"{path}: column 'id' contains nulls")
            ids = np.array(table.column("id").to_pylist(), dtype=object)
    except IndexIntegrityError:
        raise
    except Exception as exc:  # numpy / arrow parse errors on a damaged file
        raise IndexIntegrityError(f"{path}: cannot read ids ({type(exc).__name__}: {exc})") from exc
    if len(ids) != count:
        raise IndexIntegrityError(f"{path}: holds {len(ids)} ids but manifest count is {count}")
    if len(set(ids.tolist())) != count:
        raise IndexIntegrityError(f"{path}: ids are not unique")
    return ids


def read_manifest(directory: Path) -> dict[str, Any]:
    """Parse and type-check ``manifest.json``; raises :class:`IndexIntegrityError`."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise IndexIntegrityError(f"{path}: manifest is missing; {directory} is not a saved HNSWIndex")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexIntegrityError(f"{path}: manifest is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise IndexIntegrityError(f"{path}: manifest must be a JSON object, got {type(manifest).__name__}")
    if manifest.get("kind") == PARTITIONED_KIND:
        raise IndexIntegrityError(f"{directory} is a partitioned index (one HNSW index per "
                                  "partition); load it with pinsage_ray.index.load_index")
    for key, types in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise IndexIntegrityError(
                f"{path}: field {key!r} is {value!r}; expected {' or '.join(t.__name__ for t in types)}"
            )
    if manifest["format_version"] != FORMAT_VERSION:
        raise IndexIntegrityError(
            f"{path}: format_version {manifest['format_version']} is not supported "
            f"(this library reads version {FORMAT_VERSION})"
        )
    if manifest["space"] not in ("cosine", "ip", "l2"):
        raise IndexIntegrityError(f"{path}: unknown space {manifest['space']!r}")
    if manifest.get("search", "hnsw") not in ("hnsw", "exact"):  # absent: saved before exact search
        raise IndexIntegrityError(f"{path}: search {manifest['search']!r} is not 'hnsw' or 'exact'")
    if manifest["ids_file"] not in (IDS_NPY, IDS_PARQUET):
        raise IndexIntegrityError(f"{path}: ids_file {manifest['ids_file']!r} is not ids.npy/ids.parquet")
    for key in ("dim", "count", "M", "ef"):
        if manifest[key] < 1:
            raise IndexIntegrityError(f"{path}: field {key!r} must be >= 1, got {manifest[key]}")
    return manifest


def verify_checksums(directory: Path, manifest: dict[str, Any]) -> None:
    """Check that index.bin and the ids file exist and match the manifest's sha256."""
    for name in (INDEX_FILE, manifest["ids_file"]):
        path = directory / name
        expected = manifest["sha256"].get(name)
        if not isinstance(expected, str):
            raise IndexIntegrityError(f"{directory / MANIFEST_FILE}: no sha256 recorded for {name}")
        if not path.is_file():
            raise IndexIntegrityError(f"{path}: file is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise IndexIntegrityError(
                f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...); "
                "the file is corrupted or truncated - rebuild or restore the index"
            )


def check_index_file(path: Path, dim: int, count: int, M: int) -> None:
    """Structurally validate an hnswlib ``index.bin`` without letting hnswlib parse it.

    Checks the header against the manifest (dim, count, M), that the file length equals what
    the header and link lists imply, that labels are exactly ``0..count-1`` and that every
    neighbour id on every level is ``< count``.

    Raises:
        IndexIntegrityError: naming ``path`` and the first inconsistency found.
    """

    def fail(msg: str) -> IndexIntegrityError:
        return IndexIntegrityError(f"{path}: {msg}")

    size = path.stat().st_size
    if size < _HEADER.size:
        raise fail(f"{size} bytes is shorter than the {_HEADER.size}-byte hnswlib header")
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    (off0, max_el, n, per_el, label_off, data_off, maxlevel, entry,
     max_m, max_m0, m, _mult, _efc) = _HEADER.unpack(buf[: _HEADER.size].tobytes())
    if off0 != 0 or m != M or max_m != M or max_m0 != 2 * M:
        raise fail(f"header M={m} (maxM={max_m}, maxM0={max_m0}) does not match manifest M={M}")
    if n != count or n > max_el:
        raise fail(f"header holds {n} elements (capacity {max_el}) but manifest count is {count}")
    header_dim = (label_off - data_off) // 4
    if data_off != max_m0 * 4 + 4 or (label_off - data_off) % 4 or per_el != label_off + 8:
        raise fail("header offsets are inconsistent (not an hnswlib float32 index)")
    if header_dim != dim:
        raise fail(f"header says dim={header_dim} but manifest dim is {dim}")
    if not 0 <= maxlevel < 64 or entry >= n:
        raise fail(f"header maxlevel={maxlevel} / entry point={entry} out of range")
    level0_end = _HEADER.size + n * per_el
    if size < level0_end + 4 * n:
        raise fail(f"{size} bytes, but {n} elements need at least {level0_end + 4 * n} (truncated)")
    level0 = buf[_HEADER.size : level0_end].reshape(n, per_el)
    links = np.ascontiguousarray(level0[:, :data_off]).view(np.uint32)
    labels = np.ascontiguousarray(level0[:, label_off : label_off + 8]).view(np.uint64).ravel()
    _check_links(links, max_m0, n, fail, "level 0")
    if not np.array_equal(np.sort(labels), np.arange(n, dtype=np.uint64)):
        raise fail("labels are not the positions 0..count-1")
    # Upper levels: per element a uint32 byte-size, then `levels` link blocks of maxM+1 uint32.
    # The tail is ~4 bytes per element plus the (rare, ~1/M) upper-level lists: small enough to copy.
    tail, block = buf[level0_end:].tobytes(), max_m * 4 + 4
    del buf, level0
    offset, upper, unpack = 0, [], struct.Struct("<I").unpack_from
    for _ in range(n):
        if offset + 4 > len(tail):
            raise fail("truncated inside the upper-level link lists")
        (nbytes,) = unpack(tail, offset)
        offset += 4
        if nbytes:
            if nbytes % block or nbytes // block > maxlevel or offset + nbytes > len(tail):
                raise fail(f"upper-level link list of {nbytes} bytes at offset {level0_end + offset} is invalid")
            upper.append(tail[offset : offset + nbytes])
            offset += nbytes
    if offset != len(tail):
        raise fail(f"{len(tail) - offset} unexpected trailing bytes after the last link list")
    if upper:
        lists = np.frombuffer(b"".join(upper), dtype=np.uint32).reshape(-1, max_m + 1)
        _check_links(lists, max_m, n, fail, "upper-level")


def _check_links(links: np.ndarray, max_links: int, n: int, fail: Callable, where: str) -> None:
    counts = links[:, 0] & 0xFFFF  # hnswlib keeps the count in the low 2 bytes
    if (counts > max_links).any():
        raise fail(f"{where} link count above {max_links}")
    used = np.arange(links.shape[1] - 1)[None, :] < counts[:, None]
    if (links[:, 1:][used] >= n).any():
        raise fail(f"{where} neighbour id >= count {n} (corrupted graph)")


def atomic_write_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_dir)`` and atomically move ``tmp_dir`` to ``target``.

    The temporary directory is created next to ``target`` (same filesystem, so ``os.replace``
    is a rename). An existing ``target`` is replaced only if it is empty or is itself a saved
    index (holds ``manifest.json``), so a mistyped path can never wipe an unrelated directory;
    it is moved aside first and restored if the final rename fails.
    """
    target = Path(target)
    if target.exists() and not (target.is_dir() and (not any(target.iterdir()) or (target / MANIFEST_FILE).is_file())):
        raise FileExistsError(
            f"{target} exists and is not a saved HNSWIndex; refusing to overwrite it - pick another path"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        for root, _, names in os.walk(tmp):  # a partitioned index nests one dir per part
            for name in names:
                with open(os.path.join(root, name), "rb") as fh:
                    os.fsync(fh.fileno())
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (pretty-printed, sorted keys)."""
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")


def is_uri(path: Any) -> bool:
    """Whether ``path`` is a URI (``s3://``, ``gs://``, ``file://``) rather than a local path."""
    return "://" in os.fspath(path)


def check_replaceable(path: str | Path) -> None:
    """Refuse (``FileExistsError``) to replace ``path`` (local or a URI) when it exists, is
    not empty and is not a saved index (no ``manifest.json``): a mistyped path must never
    wipe an unrelated directory."""
    import pyarrow.fs as pafs

    from pinsage_ray import _io

    fs, final = _io.resolve(path)
    if _io.exists(fs, final):
        entries = fs.get_file_info(pafs.FileSelector(final))
        if entries and not _io.exists(fs, _io.join(final, MANIFEST_FILE)):
            raise FileExistsError(f"{path} exists and is not a saved HNSWIndex; refusing to "
                                  "overwrite it - pick another path")


def upload_index_dir(write: Callable[[Path], None], uri: str) -> None:
    """Run ``write(local_tmp_dir)`` and publish the files at ``uri``.

    Same refusal as :func:`atomic_write_dir`: an existing ``uri`` that is neither empty nor
    a saved index is never overwritten. The files go to a temp prefix next to ``uri`` and are
    then copied into place with ``manifest.json`` last, after the old manifest was deleted
    (:func:`pinsage_ray._io.publish_by_copy`), so a reader sees a complete index or none.
    """
    import pyarrow.fs as pafs

    from pinsage_ray import _io

    check_replaceable(uri)
    fs, _ = _io.resolve(uri)
    with tempfile.TemporaryDirectory(prefix="pinsage-index-") as local:
        write(Path(local))
        with _io.atomic_directory(uri, overwrite=True) as tmp:
            pafs.copy_files(local, tmp, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)


@contextlib.contextmanager
def downloaded_index_dir(uri: str) -> Iterator[Path]:
    """Yield a local temp copy of the index directory at ``uri`` (removed afterwards).

    Raises:
        FileNotFoundError: nothing at ``uri``.
    """
    import pyarrow.fs as pafs

    from pinsage_ray import _io

    fs, remote = _io.resolve(uri)
    if fs.get_file_info(remote).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{uri} is not a directory; nothing to load")
    with tempfile.TemporaryDirectory(prefix="pinsage-index-") as local:
        pafs.copy_files(remote, local, source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        yield Path(local)
