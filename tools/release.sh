#!/usr/bin/env bash
# Cuts a release: tools/release.sh VERSION (e.g. 0.2.0).
#   1. refuses a working tree with uncommitted changes, a single header out of sync with parts/, and a version
#      already tagged at another commit;
#   2. sets the version in its one source (parts/core/config.hpp) and regenerates the single header;
#   3. turns CHANGELOG.md's Unreleased section into "## [VERSION] - DATE" (today in UTC, or SOURCE_DATE_EPOCH's day;
#      kept if the section exists);
#   4. writes dist/trainloop-VERSION.tar.gz (what the vcpkg port and the Conan recipe build from: the single header,
#      the CMake files and the license, under trainloop-VERSION/) and dist/trainloop-VERSION.tar.gz.sha512.
#      Deterministic: the same sources give the same bytes (sorted names, owner 0, mode 644/755, every mtime the
#      release date at 00:00 UTC, gzip without name or time);
#   5. points the vcpkg port (ports/trainloop/vcpkg.json, portfile.cmake) and the Conan recipe (conan/conandata.yml)
#      at that tarball, with its SHA512 and SHA256.
# Then commit, tag vVERSION, push, and attach the tarball to the GitHub release of that tag (the URL the port and the
# recipe download). Run again at the tag, it changes nothing and rebuilds the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
repository=trainloop/trainloop  # GitHub owner/name: the port, the recipe and the links name it

version=${1:-}
if ! [[ "$version" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$ ]]; then
  echo "usage: tools/release.sh MAJOR.MINOR.PATCH (got '${version}')" >&2
  exit 2
fi
if [ -n "$(git status --porcelain)" ]; then
  echo "release: the working tree has uncommitted changes; commit or stash them first:" >&2
  git status --short >&2
  exit 1
fi
python3 tools/amalgamate.py --check
# A published version is immutable: its tag's tarball is what the port and the recipe hash.
if tagged=$(git rev-parse -q --verify "refs/tags/v${version}^{commit}"); then
  if [ "$tagged" != "$(git rev-parse HEAD)" ]; then
    echo "release: v${version} is already tagged at ${tagged:0:12}, not this commit; release a new version" >&2
    exit 1
  fi
fi

python3 - "$version" "$repository" <<'EOF'
import datetime, gzip, hashlib, io, json, os, pathlib, re, subprocess, sys, tarfile

version, repository = sys.argv[1], sys.argv[2]
major, minor, patch = version.split(".")
root = pathlib.Path.cwd()


def rewrite(path, pattern, replacement, count=1):
    text = path.read_text()
    new, n = re.subn(pattern, replacement, text, count=count, flags=re.M)
    if n != count:
        sys.exit(f"release: {path}: expected {count} match(es) of {pattern!r}, found {n}")
    if new != text:
        path.write_text(new)


# 2. the version's one source, then the single header
config = root / "parts/core/config.hpp"
for name, value in (("MAJOR", major), ("MINOR", minor), ("PATCH", patch)):
    rewrite(config, rf"^#define TRAINLOOP_VERSION_{name} \d+$", f"#define TRAINLOOP_VERSION_{name} {value}")
rewrite(config, r'^#define TRAINLOOP_VERSION_STRING "[0-9.]+"$', f'#define TRAINLOOP_VERSION_STRING "{version}"')
subprocess.run([sys.executable, "tools/amalgamate.py"], check=True, stdout=subprocess.DEVNULL)

# 3. the changelog
changelog = root / "CHANGELOG.md"
text = changelog.read_text()
found = re.search(rf"^## \[{re.escape(version)}\] - (\d{{4}}-\d{{2}}-\d{{2}})$", text, re.M)
if found:
    date = found.group(1)
else:
    if not re.search(r"^## \[Unreleased\]$", text, re.M):
        sys.exit("release: CHANGELOG.md has no '## [Unreleased]' section to release")
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else datetime.datetime.now(datetime.timezone.utc)
    date = now.strftime("%Y-%m-%d")
    text = re.sub(r"^## \[Unreleased\]$", f"## [Unreleased]\n\n## [{version}] - {date}", text, count=1, flags=re.M)
    base = f"https://github.com/{repository}"
    text = re.sub(r"^\[Unreleased\]: .*$", f"[Unreleased]: {base}/compare/v{version}...HEAD\n[{version}]: {base}/releases/tag/v{version}",
                  text, count=1, flags=re.M)
    changelog.write_text(text)
mtime = int(datetime.datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc).timestamp())

# 4. the tarball: regular files only, in sorted order, with fixed metadata
files = ["CMakeLists.txt", "LICENSE", "cmake/TrainloopInstall.cmake", "cmake/trainloop.pc.in",
         "cmake/trainloopConfig.cmake.in", "cmake/trainloopHelpers.cmake", "single_include/trainloop.hpp"]
prefix = f"trainloop-{version}"
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
    dirs = sorted({str(pathlib.PurePosixPath(f).parent) for f in files} - {"."})
    for entry in [prefix] + [f"{prefix}/{d}" for d in dirs]:
        info = tarfile.TarInfo(entry)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
        tar.addfile(info)
    for name in sorted(files):
        data = (root / name).read_bytes()
        info = tarfile.TarInfo(f"{prefix}/{name}")
        info.size, info.mode, info.mtime = len(data), 0o644, mtime
        tar.addfile(info, io.BytesIO(data))
packed = io.BytesIO()
with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0, compresslevel=9) as gz:
    gz.write(raw.getvalue())
archive = packed.getvalue()
dist = root / "dist"
dist.mkdir(exist_ok=True)
tarball = dist / f"{prefix}.tar.gz"
tarball.write_bytes(archive)
sha512 = hashlib.sha512(archive).hexdigest()
sha256 = hashlib.sha256(archive).hexdigest()
(dist / f"{prefix}.tar.gz.sha512").write_text(f"{sha512}  {prefix}.tar.gz\n")

# 5. the port and the recipe
url = f"https://github.com/{repository}/releases/download/v{version}/{prefix}.tar.gz"
manifest_path = root / "ports/trainloop/vcpkg.json"
manifest = json.loads(manifest_path.read_text())
if manifest.get("version") != version:
    manifest["version"] = version
    manifest.pop("port-version", None)  # a new upstream version starts the port's own revisions again
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
rewrite(root / "ports/trainloop/portfile.cmake", r"^(\s*SHA512 )[0-9a-f]+$", rf"\g<1>{sha512}")
conandata = root / "conan/conandata.yml"
entry = f'  "{version}":\n    url: "{url}"\n    sha256: "{sha256}"\n'
text = conandata.read_text()
text = re.sub(rf'^  "{re.escape(version)}":\n    url: .*\n    sha256: .*\n', "", text, flags=re.M)
if not re.search(r"^sources:\n", text, re.M):
    sys.exit("release: conan/conandata.yml has no 'sources:' mapping")
conandata.write_text(text.replace("sources:\n", "sources:\n" + entry, 1))

print(f"release: {tarball.relative_to(root)} ({len(archive)} bytes)\n  sha512 {sha512}\n  sha256 {sha256}")
print(f"release: the port and the recipe now download {url}")
EOF
echo "release: changed files:"; git status --short
echo "release: next: git commit -am 'Release ${version}' && git tag v${version} && git push --follow-tags," \
     "then attach dist/trainloop-${version}.tar.gz to the GitHub release v${version}"
