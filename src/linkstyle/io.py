"""Artifact I/O: Parquet for tables, NPZ for arrays, JSON for small summaries.

Writers go to a temporary name in the destination folder, fsync and rename it into place, so
an interrupted job never leaves a file that looks complete; a failed write (full disk, no
permission) removes its temporary file and says what to do. Each artifact records the stage
that made it and the digest of the config sections that stage reads (an :class:`Origin`);
readers check that record, the columns or arrays they use and their types, and raise
:class:`ArtifactError` naming the file, what is wrong, and the command that remakes it. A
wrong file is refused where it is read, never analysed as if it were right.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import LinkstyleError

#: Where the origin record lives: a Parquet schema metadata key, an NPZ array, a JSON key.
ARTIFACT_KEY = "linkstyle_artifact"


class ArtifactError(LinkstyleError):
    """An artifact that cannot be written, or is missing, unreadable or not what its reader expects."""


@dataclass(frozen=True)
class Origin:
    """The stage that makes an artifact, the config sections it reads and their digest, and the
    command that remakes the artifact (for error messages). ``recorded_as``: older names of the stage
    that artifacts made before a rename record, accepted by readers (registry.Stage.recorded_as).
    ``wildcards``: which of the stage's artifacts this is (classifier, shard, ...), as text, so that a
    file of another shard or classifier copied into place is refused."""

    stage: str
    sections: tuple[str, ...]
    digest: str
    remake: str
    recorded_as: tuple[str, ...] = ()
    wildcards: tuple[tuple[str, str], ...] = ()

    def record(self) -> dict[str, Any]:
        made = {"stage": self.stage, "sections": list(self.sections), "digest": self.digest}
        if self.wildcards:
            made["wildcards"] = dict(self.wildcards)
        return made


@dataclass(frozen=True)
class Array:
    """What a reader needs of one NPZ array.

    ``dtype``: a numpy dtype name ('uint8', 'int64') or a kind letter ('f' any float, 'i' any
    signed integer, 'U' text). ``shape``: one entry per axis, an int (that size), a name (a size
    that every array using the name must share, e.g. 'n' rows) or None (any size).
    """

    dtype: str
    shape: tuple[int | str | None, ...]
    optional: bool = False


#: Column kinds of tables: 'i' signed integer, 'f' float, 'b' bool, 'str' text, 'category'.
Columns = Mapping[str, str]


# ----------------------------------------------------------------------------- errors


def artifact_error(path: str | Path, problem: str, origin: Origin | None = None) -> ArtifactError:
    """An error naming the file, what is wrong with it, and (when known) how to remake it."""
    text = f"{path}: {problem}"
    if origin is not None:
        text += (
            f". Stage '{origin.stage}' makes this file: delete it and rerun the workflow, "
            f"or remake it with `{origin.remake}`"
        )
    return ArtifactError(text)


def missing_error(path: str | Path, origin: Origin | None = None) -> ArtifactError:
    maker = f"stage '{origin.stage}'" if origin is not None else "an earlier stage"
    text = f"missing input {path}; {maker} makes it: run `snakemake {path}` (or the whole workflow)"
    if origin is not None:
        text += f", or `{origin.remake}`"
    return ArtifactError(text)


#: errno -> what to do about it, for messages about files that cannot be written or read.
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space, or set results_dir to a folder on a larger filesystem",
    errno.EDQUOT: "the disk quota is exceeded: free space, or set results_dir to a folder with more quota",
    errno.EACCES: "permission denied: set results_dir to a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted: set results_dir to a folder you can write to",
    errno.EROFS: "the filesystem is read-only: set results_dir to a writable folder",
    errno.ENOTDIR: "part of the path is a file, not a folder: set results_dir (or run) to a path of folders",
    errno.EEXIST: "part of the path is a file, not a folder: set results_dir (or run) to a path of folders",
    errno.EISDIR: "the path is a folder: remove it or choose another results_dir",
    errno.EIO: "an input/output error: the filesystem or disk is failing; check it, then rerun",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter results_dir or run name",
}
#: OSErrors the CLI reports as one message instead of a traceback.
USER_ERRNOS = frozenset(_OS_ADVICE)


class UntrustedFile(LinkstyleError):
    """A weights file whose digest is not the one the config pins: it is never loaded."""


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file, read in 4 MiB chunks (network pickles are gigabytes)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | Path, expected: str | None, key: str) -> None:
    """Before a file is unpickled or loaded: stop unless it is the file ``key`` (a config key) pins.

    A pickle runs code while it loads, so a file that is not the expected one must never reach the
    loader. ``expected`` None: nothing pinned, nothing checked."""
    if not expected:
        return
    actual = file_sha256(path)
    if actual != expected.lower():
        raise UntrustedFile(
            f"{key}: {path} has SHA-256 {actual}, but the config pins {expected.lower()}; it was not loaded "
            f"(a pickle runs code when loaded). Check where the file came from; if you trust it, set {key} to its digest"
        )


def os_error_message(exc: OSError, path: str | Path | None = None, action: str = "write") -> str:
    """'cannot write X: No space left on device; <what to do>' for any OSError."""
    where = path if path is not None else exc.filename
    reason = exc.strerror or str(exc)
    advice = _OS_ADVICE.get(exc.errno or 0, "")
    return f"cannot {action} {where}: {reason}" + (f"; {advice}" if advice else "")


# ----------------------------------------------------------------------------- atomic writes

_HOST = (socket.gethostname() or "host").replace(".", "-")
_UMASK = os.umask(0)
os.umask(_UMASK)


def _temp_prefix(path: Path) -> str:
    """Temporary names carry host and pid, so a later writer can tell which ones were abandoned."""
    return f".{path.name}.{_HOST}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned_temps(path: Path) -> None:
    """Temporary files of ``path`` left by killed writers on this host (their pid is gone).

    They are never taken as output; removing them when the file is written again keeps a
    resumed run from accumulating half-written shards. Files of other hosts are left alone.
    """
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        parts = tmp.name[len(path.name) + 2 :].split(".")
        if len(parts) >= 3 and parts[0] == _HOST and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            tmp.unlink(missing_ok=True)


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some filesystems cannot fsync a folder; the file itself is synced
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; fsync and rename it onto ``path`` only on success.

    Any OSError (full disk, no permission, a file where a folder should be) becomes an
    :class:`ArtifactError` that names ``path`` and says what to do; nothing is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=f".tmp{suffix}", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # as a plain open() would: readable by the group on shared disks
        os.close(fd)
    except OSError as exc:
        raise ArtifactError(os_error_message(exc, path) + "; nothing was written") from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent, directory=True)
    except OSError as exc:
        raise ArtifactError(
            os_error_message(exc, path) + "; the partial file was removed and finished artifacts are kept, so "
            "rerunning the workflow continues where it stopped"
        ) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- checks


def _named(wildcards: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in wildcards.items())


def check_origin(path: Path, recorded: Any, origin: Origin | None) -> None:
    """Was ``path`` made by ``origin.stage``, for the same wildcards, with the current config? (Nothing to
    check without an origin.)"""
    if origin is None:
        return
    if not isinstance(recorded, Mapping) or "stage" not in recorded or "digest" not in recorded:
        raise artifact_error(path, "records no producing stage and config digest (written by another tool or an "
                                   "older linkstyle)", origin)
    if recorded["stage"] != origin.stage and recorded["stage"] not in origin.recorded_as:
        raise artifact_error(path, f"was made by stage '{recorded['stage']}', but stage '{origin.stage}' makes the "
                                   "file expected here (a file copied to the wrong place?)", origin)
    # Files written before wildcards were recorded (2026-12-06) carry none and are taken on trust.
    made_for = recorded.get("wildcards")
    if origin.wildcards and isinstance(made_for, Mapping) and made_for != dict(origin.wildcards):
        raise artifact_error(path, f"was made for {_named(made_for)}, but this is the place of "
                                   f"{_named(dict(origin.wildcards))} (a file copied from another one?)", origin)
    if recorded["digest"] != origin.digest:
        sections = ", ".join(origin.sections) or "the config"
        raise artifact_error(
            path,
            f"was made with other settings of {sections} than the current config (config digest "
            f"{recorded['digest']}, now {origin.digest}), so it does not belong to this run",
            origin,
        )


def _exists(path: Path, origin: Origin | None) -> None:
    if not path.is_file():
        if path.exists():
            raise artifact_error(path, "is not a file", origin)
        raise missing_error(path, origin)


def _dtype_ok(dtype: np.dtype, spec: str) -> bool:
    if len(spec) == 1:
        return dtype.kind == spec or (spec == "U" and dtype.kind == "S")
    return dtype == np.dtype(spec)


def check_arrays(
    path: str | Path,
    arrays: Mapping[str, np.ndarray],
    spec: Mapping[str, Array],
    origin: Origin | None = None,
    dims: Mapping[str, int] | None = None,
) -> None:
    """Names, dtypes and shapes of ``arrays`` against ``spec``; named sizes must agree across arrays
    (and with ``dims``, sizes known from other files)."""
    bound: dict[str, tuple[int, str]] = {k: (v, "the other inputs of this stage") for k, v in (dims or {}).items()}
    absent = [name for name, a in spec.items() if name not in arrays and not a.optional]
    if absent:
        raise artifact_error(path, f"has no array {', '.join(map(repr, absent))} (it holds {', '.join(sorted(arrays)) or 'none'})", origin)
    for name, a in spec.items():
        if name not in arrays:
            continue
        x = arrays[name]
        if not _dtype_ok(x.dtype, a.dtype):
            raise artifact_error(path, f"array '{name}' has dtype {x.dtype}, expected {_dtype_name(a.dtype)}", origin)
        if x.ndim != len(a.shape):
            raise artifact_error(path, f"array '{name}' has shape {x.shape}, expected {len(a.shape)} axes {_shape_text(a.shape)}", origin)
        for axis, (size, want) in enumerate(zip(x.shape, a.shape)):
            if isinstance(want, int) and size != want:
                raise artifact_error(path, f"array '{name}' has shape {x.shape}, expected {_shape_text(a.shape)}", origin)
            if isinstance(want, str):
                if want in bound and bound[want][0] != size:
                    expected, source = bound[want]
                    raise artifact_error(
                        path, f"array '{name}' has {size} along axis {axis} ('{want}'), but {want}={expected} in {source} "
                              "(truncated or mixed-up arrays)", origin)
                bound.setdefault(want, (size, f"array '{name}'"))


def _dtype_name(spec: str) -> str:
    return {"f": "a float type", "i": "an integer type", "u": "an unsigned integer type", "U": "text", "b": "bool"}.get(spec, spec)


def _shape_text(shape: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def _column_ok(field_type: Any, spec: str) -> bool:
    import pyarrow as pa

    t = pa.types
    return {
        "i": t.is_signed_integer,
        "f": t.is_floating,
        "b": t.is_boolean,
        "str": lambda x: t.is_string(x) or t.is_large_string(x) or t.is_string_view(x),
        "category": t.is_dictionary,
    }[spec](field_type)


# ----------------------------------------------------------------------------- Parquet


_EMPTY_DTYPES = {"i": "int64", "f": "float64", "b": "bool", "str": "string", "category": "string"}


def empty_table(columns: Columns) -> pd.DataFrame:
    """A table with no rows whose columns have the kinds of ``columns``, so that readers checking
    the schema accept it (an empty pandas column would otherwise default to float or object)."""
    return pd.DataFrame({name: pd.Series(dtype=_EMPTY_DTYPES[kind]) for name, kind in columns.items()})


def write_parquet(df: pd.DataFrame, path: str | Path, origin: Origin | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if origin is not None:
        meta = dict(table.schema.metadata or {})
        meta[ARTIFACT_KEY.encode()] = json.dumps(origin.record()).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path, ".parquet") as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)  # readers verify them: a flipped bit is an error
    return Path(path)


def read_parquet(
    path: str | Path,
    columns: list[str] | None = None,
    *,
    origin: Origin | None = None,
    schema: Columns | None = None,
) -> pd.DataFrame:
    """Read a table; with ``origin``/``schema``, check who made it and that it has these columns and kinds."""
    import pyarrow.parquet as pq

    path = Path(path)
    _exists(path, origin)
    try:
        file_schema = pq.read_schema(path)
        file_schema.names  # noqa: B018 - decodes the field names: a damaged footer fails here
    except Exception as exc:  # noqa: BLE001 - a damaged file makes the parser fail in many ways; all mean "corrupted"
        raise artifact_error(path, f"cannot be read as a Parquet table ({_first_line(exc)}): it is corrupted or truncated", origin) from exc
    check_origin(path, _json_or_none((file_schema.metadata or {}).get(ARTIFACT_KEY.encode())), origin)
    wanted = dict(schema or {})
    for col in columns or []:
        wanted.setdefault(col, "")
    absent = [c for c in wanted if c not in file_schema.names]
    if absent:
        raise artifact_error(path, f"has no column {', '.join(map(repr, absent))} (it has {', '.join(file_schema.names)})", origin)
    for col, kind in wanted.items():
        if kind and not _column_ok(file_schema.field(col).type, kind):
            raise artifact_error(path, f"column '{col}' has type {file_schema.field(col).type}, expected {_dtype_name(kind) if len(kind) == 1 else kind}", origin)
    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True).to_pandas()
    except Exception as exc:  # noqa: BLE001 - as above (damaged pages, checksums, pandas metadata)
        raise artifact_error(path, f"cannot be read as a Parquet table ({_first_line(exc)}): it is corrupted or truncated", origin) from exc


# ----------------------------------------------------------------------------- NPZ


def write_npz(path: str | Path, origin: Origin | None = None, **arrays: Any) -> Path:
    """Uncompressed by default: sweep images are small and loaded often; metadata strings become arrays."""
    out = {k: np.asarray(v) for k, v in arrays.items()}
    if origin is not None:
        out[ARTIFACT_KEY] = np.array(json.dumps(origin.record()))
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **out)
    return Path(path)


class NpzWriter:
    """An NPZ written slice by slice, so that a job's largest output never sits in memory whole.

    Each declared array goes to its own ``.npy`` part beside ``path`` (temporary names that
    :func:`atomic_path` cleans up after a killed writer); :meth:`close` packs the parts into the
    NPZ atomically, as :func:`write_npz` would have written it. Use it as a context manager: on
    an error the parts are removed and nothing is written.
    """

    def __init__(self, path: str | Path, origin: Origin | None = None) -> None:
        self.path = Path(path)
        self.origin = origin
        self._parts: dict[str, tuple[Path, int, int]] = {}  # name -> (part file, header bytes, bytes per row)
        self._small: dict[str, np.ndarray] = {}

    def declare(self, name: str, shape: Sequence[int], dtype: Any) -> None:
        """Reserve array ``name``; its rows are then filled by :meth:`write`, in any order."""
        dtype = np.dtype(dtype)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._parts:
                _remove_abandoned_temps(self.path)  # parts of a killed earlier attempt
            fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(self.path), suffix=f".tmp-{name}.npy", dir=self.path.parent)
            with os.fdopen(fd, "wb") as fh:
                np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                          "fortran_order": False, "shape": tuple(int(d) for d in shape)})
                header = fh.tell()
                fh.truncate(header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        except OSError as exc:
            raise ArtifactError(os_error_message(exc, self.path) + "; nothing was written") from exc
        self._parts[name] = (Path(tmp), header, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)

    def write(self, name: str, rows: slice, values: np.ndarray) -> None:
        part, header, row_bytes = self._parts[name]
        data = np.ascontiguousarray(values)
        with open(part, "r+b") as fh:
            fh.seek(header + rows.start * row_bytes)
            fh.write(data.tobytes())

    def put(self, name: str, values: Any) -> None:
        """A small array, kept in memory until :meth:`close`."""
        self._small[name] = np.asarray(values)

    def close(self) -> Path:
        import zipfile

        small = dict(self._small)
        if self.origin is not None:
            small[ARTIFACT_KEY] = np.array(json.dumps(self.origin.record()))
        with atomic_path(self.path, ".npz") as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, (part, _, _) in self._parts.items():
                    zf.write(part, arcname=f"{name}.npy")
                for name, values in small.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                        np.lib.format.write_array(fh, values, allow_pickle=False)
        self._discard()
        return self.path

    def _discard(self) -> None:
        for part, _, _ in self._parts.values():
            part.unlink(missing_ok=True)
        self._parts.clear()

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self._discard()


def read_npz(
    path: str | Path,
    *,
    origin: Origin | None = None,
    arrays: Mapping[str, Array] | None = None,
    dims: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Read every array; with ``origin``/``arrays``, check who made the file and the arrays' dtypes and shapes."""
    path = Path(path)
    _exists(path, origin)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise artifact_error(path, "holds a single .npy array, not NPZ arrays (a wrong file in this place?)", origin)
        with loaded as data:
            out = {k: data[k] for k in data.files}
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, header and array parsing of a damaged file fail in many ways
        raise artifact_error(path, f"cannot be read as NPZ arrays ({_first_line(exc)}): it is corrupted or truncated", origin) from exc
    recorded = out.pop(ARTIFACT_KEY, None)
    check_origin(path, _json_or_none(str(recorded) if recorded is not None else None), origin)
    if arrays is not None:
        check_arrays(path, out, arrays, origin, dims)
    return out


# ----------------------------------------------------------------------------- JSON and others


def write_json(data: Mapping[str, Any], path: str | Path, origin: Origin | None = None) -> Path:
    payload = dict(data)
    if origin is not None:
        payload[ARTIFACT_KEY] = origin.record()
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(_plain(payload), indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_json(path: str | Path, *, origin: Origin | None = None, keys: Sequence[str] = ()) -> Any:
    """Read a JSON file; with ``origin``/``keys``, check who made it and that it has these keys."""
    path = Path(path)
    _exists(path, origin)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise artifact_error(path, f"is not valid JSON ({_first_line(exc)}): it is corrupted or truncated", origin) from exc
    record = data.pop(ARTIFACT_KEY, None) if isinstance(data, dict) else None
    check_origin(path, record, origin)
    absent = [k for k in keys if not isinstance(data, dict) or k not in data]
    if absent:
        raise artifact_error(path, f"has no entry {', '.join(map(repr, absent))}", origin)
    return data


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _json_or_none(text: str | bytes | None) -> Any:
    """A recorded origin, or None when it is absent or damaged (then the origin check says so)."""
    try:
        return json.loads(text) if text else None
    except ValueError:  # includes UnicodeDecodeError
        return None


def _first_line(exc: BaseException, limit: int = 120) -> str:
    """'Type: first sentence' of an exception, short enough for a one-paragraph message."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    first = text[0].split(". ")[0]
    return f"{type(exc).__name__}: {first if len(first) <= limit else first[:limit] + '...'}"


def _plain(obj: Any) -> Any:
    """numpy scalars and arrays to JSON types; NaN to None."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
