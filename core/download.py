"""Optional download of the official weight files (huggingface_hub), into the models folder the loaders read.

* ``fetch(name, dest)`` writes ``dest/<filename>`` — ``dest`` is the folder itself (in ComfyUI the first
  registered path of the family's folder, which may be an ``extra_model_paths.yaml`` entry; in the CLI
  ``<models root>/<folder>``), never a sibling of it.
* Offline fails at once: ``HF_HUB_OFFLINE`` is honoured, and otherwise one short probe of the hub endpoint
  (``HF_ENDPOINT`` read at call time; one HTTP HEAD through the configured proxy, :data:`PROBE_TIMEOUT` seconds,
  no retries) runs before huggingface_hub is asked for anything. The error names the file, its URL and the folder to put it in.
* Nothing is left behind: huggingface_hub downloads into a temporary folder inside ``dest`` (its ``.cache``
  locks and metadata included), the file is moved into place and the temporary folder removed, also on failure.
* The table of official files is :data:`.sources.OFFICIAL`.
* A file that is already there counts only when it is readable (:func:`.checkpoint.problem`): an empty or
  truncated file is downloaded again (replaced only once the new copy is complete); a folder with the file's
  name is reported, never removed.
* Files without a Hugging Face mirror (Google-Drive-only releases) are listed with their page; ``fetch`` raises
  an error that names the file, the URL and the folder to put it in.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .checkpoint import problem
from .errors import DownloadError
from .sources import OFFICIAL, OfficialFile

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 3.0  # seconds for the one reachability probe of the hub
DEFAULT_ENDPOINT = "https://huggingface.co"


def spec(name: str) -> OfficialFile:
    """The entry of ``OFFICIAL`` called ``name``; an unknown name is a :class:`DownloadError` listing the known ones."""
    try:
        return OFFICIAL[name]
    except (KeyError, TypeError):
        raise DownloadError(f"unknown official file {name!r}; known files: {', '.join(OFFICIAL)}") from None


def _manual(spec: OfficialFile, dest: Path, why: str) -> DownloadError:
    return DownloadError(f"{why} Download '{spec.filename}' from {spec.url} and put it in '{dest}'.")


def endpoint() -> str:
    """The hub endpoint huggingface_hub would use (``HF_ENDPOINT`` read now, not at import)."""
    env = os.environ.get("HF_ENDPOINT", "").strip()
    if env:
        return env.rstrip("/")
    try:
        from huggingface_hub import constants
    except ImportError:
        return DEFAULT_ENDPOINT
    return str(getattr(constants, "ENDPOINT", DEFAULT_ENDPOINT)).rstrip("/")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value (huggingface_hub's reading: 1/ON/YES/TRUE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """One HTTP HEAD request to ``url`` (through the configured proxy, if any), ``timeout`` seconds, no retries:
    the reason when the hub cannot be reached, else None. Any HTTP answer of the hub counts as reachable; a
    proxy's gateway errors (502/503/504) do not."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "aware-restore"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):  # the hub endpoint (http/https)
            return None
    except urllib.error.HTTPError as exc:
        return f"{url} answered HTTP {exc.code} (a proxy cannot reach it)" if exc.code in (502, 503, 504) else None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url} cannot be reached ({type(reason).__name__}: {reason})"


def _present(spec: OfficialFile, target: Path) -> tuple[bool, str | None]:
    """(usable, problem): whether ``target`` already holds the file, else what is wrong with what is there."""
    if target.is_dir():
        if spec.repo_id is None and (target / "unet").is_dir() and (target / "controlnet").is_dir():
            return True, None  # the SeeSR release folder
        return False, f"'{target}' is a folder, not the file"
    if not target.exists():
        return False, None
    err = problem(target)
    return (True, None) if err is None else (False, f"'{target}' is unreadable ({err.kind})")


def fetch(name: str, dest: str | os.PathLike, timeout: float = PROBE_TIMEOUT) -> Path:
    """Make sure ``dest/<filename>`` of the official file ``name`` is there (downloading it when it is missing,
    empty or truncated) and return its path. ``dest`` is the models folder itself (e.g. ``models/daclip`` or the
    first ``daclip`` path of extra_model_paths.yaml)."""
    spec_ = spec(name)
    dest = Path(dest)
    target = dest / spec_.filename
    usable, issue = _present(spec_, target)
    if usable:
        return target
    if issue is not None and target.is_dir():
        raise DownloadError(f"{issue}: remove or rename it, then download '{spec_.filename}' again "
                            f"({spec_.url}).")
    if spec_.repo_id is None:
        why = "This file has no Hugging Face mirror, so it cannot be downloaded automatically."
        raise _manual(spec_, dest, f"{issue}. {why}" if issue else why)
    if issue is not None:
        log.warning("%s; downloading it again", issue)
    if offline():
        raise _manual(spec_, dest, "HF_HUB_OFFLINE is set, so nothing is downloaded.")
    hub = endpoint()
    unreachable = probe(hub, timeout)
    if unreachable is not None:
        raise _manual(spec_, dest, f"The Hugging Face hub is unreachable: {unreachable}.")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise _manual(spec_, dest, "huggingface_hub is not installed (pip install huggingface_hub).") from None
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".aware-restore-download-", dir=dest))
    try:
        try:
            got = hf_hub_download(spec_.repo_id, spec_.repo_file or spec_.filename, local_dir=tmp, endpoint=hub,
                                  etag_timeout=max(timeout, 1.0))
        except Exception as exc:  # every failure (HTTP, connection, disk) gets the manual advice
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise _manual(spec_, dest, f"The download failed ({type(exc).__name__}: {first}).") from exc
        got = Path(got)
        if not got.is_file() or got.stat().st_size == 0:
            raise _manual(spec_, dest, "The download finished without the file (or with an empty file).")
        os.replace(got, target)  # same filesystem: atomic, replaces an empty or truncated copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("downloaded %s -> %s", spec_.filename, target)
    return target
