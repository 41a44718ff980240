"""Atomic writes and sha256 of files, for every package (torch-free, Python 3.6).

A file is written to a temporary file in the same folder and renamed over the target, so a
crash or a full disk never leaves half a file where a good one was: checkpoints, weights,
reports, ONNX bundles, TensorRT engines and stats all go through `atomic_write_bytes`.
"""

import hashlib
import json
import os
import tempfile


def atomic_write_bytes(path, data):
    """Write `data` to `path` atomically (parents created); returns `path`."""
    folder = os.path.dirname(os.path.abspath(str(path)))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    name = os.path.basename(str(path))
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def publish(tmp, target):
    """Rename a finished temp file into place with ordinary permissions: mkstemp makes files
    owner-only, but reports, weights, bundles and engines are shared (volumes, read-only
    mounts)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(str(tmp), 0o666 & ~umask)
    os.replace(str(tmp), str(target))


def atomic_write_json(path, obj, sort_keys=True, default=None):
    """`obj` as indented JSON (keys sorted unless told otherwise), written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=default) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
