"""transformers' generic model tests (`ModelTesterMixin`, `ConfigTester`), from the installed version's sdist.

The generic suite lives in transformers' `tests/` folder, which the wheel does not install. The source
distribution of the installed version does ship `tests/test_modeling_common.py` and
`tests/test_configuration_common.py`; this module downloads that sdist once with pip into a cache outside the
repository (`$RETROMAE_CACHE`, default `~/.cache/retromae-hf/`), unpacks those two files unmodified into a small
package there, and imports them. Nothing of transformers' test code is ever copied into this repository.

The two files import three helpers from folders of transformers' test tree that the sdist does not ship. The
package gets small stand-ins written here (see `STAND_INS`): they make the imports resolve and add no test.

Run as a script to fetch the suite ahead of the tests (what `.ci/run` does):

    python tests/transformers_generic_suite.py
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

SUITE_FILES = ("test_modeling_common.py", "test_configuration_common.py")
PACKAGE = "transformers_generic_tests"
# Modules the two files import from parts of transformers' test tree that the sdist leaves out, each with a
# stand-in. `ExportTesterMixin` (tests/exporters/) adds the export tests to `ModelTesterMixin`, so those are not
# run here (docs/conformance.md says so); `GenerationTesterMixin` is only checked against (our models do not
# generate); `config_common_kwargs` is only read by `ConfigTester.check_config_arguments_init`, which composite
# configs such as `RetroMAEConfig` skip.
STAND_INS = {
    "exporters/test_export.py": (
        '"""Stand-in: tests/exporters/ is not in the sdist, so its export tests are not part of this run."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "generation/test_utils.py": (
        '"""Stand-in: tests/generation/ is not in the sdist; RetroMAE models do not generate."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "utils/test_configuration_utils.py": (
        '"""Stand-in: tests/utils/ is not in the sdist. Only configs without sub-configs read this dict."""\n\n'
        "config_common_kwargs = {}\n"
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("RETROMAE_CACHE", Path.home() / ".cache" / "retromae-hf"))


def installed_version() -> str:
    import transformers

    return transformers.__version__


def download_sdist(version: str, timeout: float = 300) -> Path:
    """The transformers sdist of `version` in the cache, downloaded by pip when it is not there yet.

    Raises:
        RuntimeError: pip could not download it (offline, no such release, ...), with pip's last words.
    """
    folder = cache_root() / "sdist"
    archive = folder / f"transformers-{version}.tar.gz"
    if archive.exists():
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    # Few retries and a short timeout: offline, the tests skip in seconds instead of waiting on the network.
    command += ["--no-build-isolation", "--retries", "1", "--timeout", "15"]
    command += ["--dest", str(folder), f"transformers=={version}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"pip download of transformers=={version} failed: {error}") from error
    if done.returncode != 0 or not archive.exists():
        raise RuntimeError(
            f"pip download of the transformers=={version} source distribution failed: {done.stderr.strip()[-600:]}"
        )
    return archive


def stage(version: str) -> Path:
    """Unpack the two generic test files of the `version` sdist into an importable package; returns its parent."""
    root = cache_root() / f"generic-tests-{version}"
    package = root / PACKAGE
    if all((package / name).exists() for name in SUITE_FILES):
        return root
    archive = download_sdist(version)
    # Staged beside the final place, then renamed into it: a half-unpacked package is never importable.
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    with tarfile.open(archive) as sdist:
        for name in SUITE_FILES:
            member = sdist.getmember(f"transformers-{version}/tests/{name}")
            (staging / name).write_bytes(sdist.extractfile(member).read())
    for relative, text in STAND_INS.items():
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").write_text("")
        path.write_text(text)
    (staging / "__init__.py").write_text("")
    try:
        staging.rename(package)
    except OSError:  # another process staged it first
        if not all((package / name).exists() for name in SUITE_FILES):
            raise
    return root


def load() -> tuple[ModuleType, ModuleType]:
    """`(test_modeling_common, test_configuration_common)` of the installed transformers.

    Raises:
        RuntimeError: the suite cannot be had (no sdist, or the sdist's files need what this machine lacks).
    """
    version = installed_version()
    try:
        root = stage(version)
    except (OSError, KeyError, tarfile.TarError) as error:
        raise RuntimeError(f"could not unpack the generic tests of transformers {version}: {error}") from error
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
        configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    except ImportError as error:
        raise RuntimeError(
            f"transformers {version}'s generic tests do not import here ({error}); `pip install "
            "retromae-hf[test]` installs what they need"
        ) from error
    return modeling, configuration


if __name__ == "__main__":
    print(stage(installed_version()) / PACKAGE)
