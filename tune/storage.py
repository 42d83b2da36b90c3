"""Where a study's files live, local or a URI (s3://, gs://, ...), through one set of helpers:
the path join, existence, reading, writing (atomic on a local path: a reader never sees half a
file) and listing. pyarrow's filesystems reach URIs (Ray Tune uses the same); local paths use
the os module directly."""
from __future__ import annotations

import os
import re
from typing import Optional

from tune.errors import StudyError


def is_uri(path: str) -> bool:
    """s3://, gs://, hdfs://, ... - storage every node of a cluster can reach by construction."""
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path or "")) and not path.startswith("file://")


def join_storage(storage_path: str, name: str) -> str:
    """``name`` (may hold os.sep: a relative path) under a storage path, local or URI."""
    if is_uri(storage_path):
        return storage_path.rstrip("/") + "/" + name.replace(os.sep, "/")
    return os.path.join(storage_path, name)


def fs(path: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI; a URI pyarrow cannot open is
    one StudyError line."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a bad URI
        raise StudyError(f"storage_path={path!r} is invalid ({' '.join(str(e).split())[:200]}); allowed: "
                         f"a local directory or a URI pyarrow can open (s3://bucket/path, gs://bucket/path)") from None


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.exists(path)
    import pyarrow.fs

    filesystem, p = fs(path)
    return filesystem.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def read_bytes(path: str) -> Optional[bytes]:
    """The file's bytes, or None when it is missing or unreadable."""
    try:
        if not is_uri(path):
            with open(path, "rb") as f:
                return f.read()
        filesystem, p = fs(path)
        with filesystem.open_input_stream(p) as f:
            return f.read()
    except OSError:
        return None


def read_text(path: str) -> Optional[str]:
    """The file's text, or None when it is missing, unreadable or not UTF-8."""
    data = read_bytes(path)
    try:
        return None if data is None else data.decode()
    except UnicodeDecodeError:
        return None


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file: atomically on a local path (a temporary file renamed over it)."""
    if is_uri(path):
        filesystem, p = fs(path)
        with filesystem.open_output_stream(p) as f:
            f.write(data)
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def listing(path: str) -> dict[str, int]:
    """Every file under ``path``, recursively: {path relative to it (os.sep): size}; {} when absent."""
    import pyarrow.fs

    filesystem, root = fs(path)
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    return {os.path.relpath(i.path, root): i.size for i in infos if i.type == pyarrow.fs.FileType.File}


def subfolders(path: str) -> list[str]:
    """The names of the folders directly under ``path``; [] when it is absent."""
    if not is_uri(path):
        return [n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n))] if os.path.isdir(path) else []
    import pyarrow.fs

    filesystem, p = fs(path)
    return [i.base_name for i in filesystem.get_file_info(pyarrow.fs.FileSelector(p, allow_not_found=True))
            if i.type == pyarrow.fs.FileType.Directory]
