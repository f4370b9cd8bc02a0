"""Where the package's shipped files are: ``config/`` presets, ``models/`` checkpoints, launch and RViz files.

One lookup for all of them (:func:`share_candidates`), in this order: the source checkout (the repository root
above this package, only when it is one: ``package.xml`` and ``setup.py`` beside the package, so a stray ``models/``
or ``config/`` folder in an install's site-packages never shadows the shipped files), the installed ament share
directory (``ament_index_python``, a sourced ROS 2 workspace), the share directory pip wrote setup.py's
``data_files`` to (the distribution's RECORD: ``~/.local/share/...`` for ``pip install --user``, the ``--prefix``
given, ``/usr/local/share/...`` for Debian's system Python, whose ``sys.prefix`` is ``/usr``; an install trial found
``--user`` and ``--prefix`` installs without their model), and ``<sys.prefix>/share/mtl3d_perception``.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

PACKAGE = "mtl3d_perception"


def checkout_root(package_dir: Path | None = None) -> Path | None:
    """The source checkout holding ``package_dir`` (default: this package), or None for an installed package: the
    folder above it when ``package.xml`` and ``setup.py`` are there (an install's parent is site-packages)."""
    root = (package_dir or Path(__file__).resolve().parent).parent
    return root if (root / "package.xml").is_file() and (root / "setup.py").is_file() else None


def share_candidates(*parts: str) -> list[Path]:
    """``<root>/<parts...>`` for every place shipped files can be, in search order, without duplicates.

    Nothing is checked for existence: callers pick the first that holds what they need, and name every
    candidate when none does.
    """
    roots = [root] if (root := checkout_root()) is not None else []
    try:  # a sourced ROS 2 workspace
        from ament_index_python.packages import get_package_share_directory

        roots.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # ament_index_python absent, the package not installed through ament, AMENT_PREFIX_PATH unset
        pass
    if (installed := installed_share()) is not None:
        roots.append(installed)
    roots.append(Path(sys.prefix) / "share" / PACKAGE)
    return list(dict.fromkeys(root.joinpath(*parts) for root in roots))


def installed_share() -> Path | None:
    """The ``share/mtl3d_perception`` folder of the installed distribution, located through its RECORD (where pip
    wrote ``package.xml`` under whatever scheme it used), or None: not installed by pip, or an editable install
    (whose RECORD lists no data files; its checkout is found first)."""
    try:
        files = metadata.distribution(PACKAGE).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix().endswith(f"share/{PACKAGE}/package.xml"):
            return Path(f.locate()).resolve().parent
    return None


def shipped_file(*parts: str) -> str:
    """Where a shipped file (``docs/replay.md``, ``config/mtl3d.rviz``) is on this machine, for messages and reports
    that point a user to it: the first of :func:`share_candidates` that exists, else its path in the repository
    (an install trial: installed users were sent to ``docs/replay.md``, relative to nothing they had)."""
    return next((str(p) for p in share_candidates(*parts) if p.exists()), "/".join(parts))
