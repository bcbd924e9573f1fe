"""Storage helpers shared by every on-disk artefact (graph directories, runs, indexes).

All paths go through :mod:`pyarrow.fs`, so a local path, ``file://`` URI or ``s3://bucket/key``
works wherever a path is accepted (a cluster reads the graph from shared storage). Directories
are written atomically: everything goes into a sibling temp directory that is renamed into place
only when complete, so a crash never leaves a half-written artefact under the final name.

``.npy`` files can be read whole or by row range (header parsed, then one ranged read), so a
graph shard loads only its own CSR rows even from object storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.fs as pafs

logger = logging.getLogger(__name__)

_CHUNK = 8 << 20


def resolve(path: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path_within_it)`` for a local path or a URI (``s3://``...)."""
    text = os.fspath(path)
    if "://" in text:
        return pafs.FileSystem.from_uri(text)
    return pafs.LocalFileSystem(), os.path.abspath(text)


def uri_for(like: str | os.PathLike, path: str) -> str:
    """``path`` (a path inside the filesystem ``resolve(like)`` returns, such as the temp
    directory :func:`atomic_directory` yields) as a string that another process can
    :func:`resolve` to the same place: ``like``'s scheme (and query) around it for a URI,
    the path itself for a local one."""
    text = os.fspath(like)
    if "://" not in text:
        return path
    scheme, query = text.split("://", 1)[0], text.partition("?")[2]
    return f"{scheme}://{path.lstrip('/') if scheme != 'file' else path}" + (
        f"?{query}" if query else "")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yield a temp directory path; on success it replaces ``path``, on error it is removed.

    Args:
        path: final directory (local or URI).
        overwrite: replace an existing directory. Without it an existing target is an error.

    Yields:
        The temp directory path (same filesystem as ``path``) to write into.
    """
    fs, final = resolve(path)
    if exists(fs, final) and not overwrite:
        raise FileExistsError(
            f"{final!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it "
            "or choose another directory."
        )
    parent = final.rstrip("/").rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{final.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    fs.create_dir(tmp, recursive=True)
    try:
        yield tmp
    except BaseException:
        fs.delete_dir(tmp)
        raise
    if not isinstance(fs, pafs.LocalFileSystem):  # object stores cannot rename a directory
        publish_by_copy(fs, tmp, final)
        return
    old = None
    if exists(fs, final):
        old = f"{final.rstrip('/')}.old-{uuid.uuid4().hex[:8]}"
        fs.move(final, old)
    fs.move(tmp, final)
    if old is not None:
        fs.delete_dir(old)


def _is_manifest(path: str) -> bool:
    return path.rsplit("/", 1)[-1].endswith("manifest.json")


def publish_by_copy(fs: pafs.FileSystem, tmp: str, final: str) -> None:
    """Replace directory ``final`` by ``tmp`` where directories cannot be renamed (S3, GCS).

    Not atomic as a whole, but readers never see a mix: every artefact is read through its
    manifest (``manifest.json`` / ``_manifest.json``), which is deleted first from the old
    directory and copied last into the new one, so the manifest is the commit point. A crash
    in between leaves a directory without a manifest (reported as missing, rewritten by the
    next run), never a manifest over files it does not describe. ``tmp`` is removed.
    """
    if exists(fs, final):
        for info in fs.get_file_info(pafs.FileSelector(final, recursive=True)):
            if info.type == pafs.FileType.File and _is_manifest(info.path):
                fs.delete_file(info.path)
        fs.delete_dir(final)
    files = [i.path for i in fs.get_file_info(pafs.FileSelector(tmp, recursive=True))
             if i.type == pafs.FileType.File]
    base = tmp.rstrip("/") + "/"
    for src in sorted(files, key=lambda f: (_is_manifest(f), -f.count("/"), f)):
        fs.copy_file(src, final.rstrip("/") + "/" + src[len(base):])
    fs.delete_dir(tmp)


class _HashingWriter:
    """File-like wrapper that hashes and counts what is written through it."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def write(self, data: bytes | memoryview) -> int:
        self.stream.write(data)
        self.sha.update(data)
        self.nbytes += len(data)
        return len(data)


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> dict:
    with fs.open_output_stream(path) as out:
        out.write(data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def write_npy(fs: pafs.FileSystem, path: str, array: np.ndarray) -> dict:
    """Write ``array`` as ``.npy``; return ``{"sha256", "bytes", "dtype", "shape"}``."""
    array = np.ascontiguousarray(array)
    with fs.open_output_stream(path) as out:
        writer = _HashingWriter(out)
        np.lib.format.write_array(writer, array, allow_pickle=False)
    return {
        "sha256": writer.sha.hexdigest(),
        "bytes": writer.nbytes,
        "dtype": str(array.dtype),
        "shape": list(array.shape),
    }


def _read_header(f: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    if fortran:
        raise ValueError("Fortran-ordered .npy files are not supported")
    return shape, dtype, f.tell()


def read_npy(fs: pafs.FileSystem, path: str, *, mmap: bool = True) -> np.ndarray:
    """Read a whole ``.npy`` file (memory-mapped when local and ``mmap``)."""
    if mmap and isinstance(fs, pafs.LocalFileSystem):
        return np.load(path, mmap_mode="r", allow_pickle=False)
    with fs.open_input_file(path) as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def read_npy_rows(fs: pafs.FileSystem, path: str, start: int, stop: int) -> np.ndarray:
    """Read rows ``[start, stop)`` of a C-ordered ``.npy`` file with one ranged read."""
    with fs.open_input_file(path) as f:
        shape, dtype, offset = _read_header(f)
        if not 0 <= start <= stop <= shape[0]:
            raise ValueError(f"{path}: rows [{start}, {stop}) outside [0, {shape[0]})")
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        f.seek(offset + start * row)
        buf = f.read((stop - start) * row)
    return np.frombuffer(buf, dtype=dtype).reshape((stop - start, *shape[1:])).copy()


def sha256_of(fs: pafs.FileSystem, path: str) -> str:
    sha = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            sha.update(chunk)
    return sha.hexdigest()


def verify_file(fs: pafs.FileSystem, path: str, expected: dict, fix: str, *,
                error: type[Exception] = ValueError) -> None:
    """Check ``path`` against what a manifest recorded when it was written.

    Checks that the file exists, has ``expected["bytes"]`` bytes and, when the manifest has
    one, the ``expected["sha256"]`` (reads the whole file). A truncated file fails the size
    check; a bit flip that still parses fails the hash.

    Raises:
        error: with a message naming ``path``, what differs and ``fix`` (what to do).
    """
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise error(f"{path}: file is missing; {fix}")
    if not isinstance(expected, dict):
        raise error(f"{path}: its manifest entry is not an object; {fix}")
    if "bytes" in expected and info.size != expected["bytes"]:
        raise error(f"{path}: {info.size} bytes but {expected['bytes']} were written "
                    f"(truncated or replaced); {fix}")
    if "sha256" in expected and sha256_of(fs, path) != expected["sha256"]:
        raise error(f"{path}: sha256 differs from the one recorded when it was written "
                    f"(corrupted); {fix}")


def parquet_bytes(table: Any) -> bytes:
    """A pyarrow table serialised as a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_parquet(fs: pafs.FileSystem, path: str, table: Any) -> dict:
    """Write a pyarrow table as Parquet; return ``{"sha256", "bytes"}`` for a manifest."""
    return write_bytes(fs, path, parquet_bytes(table))


def write_json(fs: pafs.FileSystem, path: str, obj: Any) -> dict:
    data = json.dumps(obj, indent=2, sort_keys=True, default=_json_default).encode()
    return write_bytes(fs, path, data)


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
