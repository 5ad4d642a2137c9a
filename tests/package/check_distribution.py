#!/usr/bin/env python3
"""Checks every way trainloop is distributed, as far as this machine can (neither vcpkg nor Conan is installed here).

  check_distribution.py release     tools/release.sh twice (two clones): identical bytes; the port's SHA512 and the
                                    recipe's SHA256 are the tarball's; the committed port matches the tagged release
  check_distribution.py install     `cmake --install` of the release tarball with exactly the options the vcpkg port
                                    passes for each feature set, checked file by file against the documented layout
  check_distribution.py consumers   find_package, add_subdirectory, FetchContent (file URL + SHA512) and pkg-config
                                    consumers configure, build and run (torch-free; `--torch` with LibTorch)
  check_distribution.py recipes     vcpkg.json and portfile.cmake as vcpkg reads them; conanfile.py imported with a
                                    minimal stand-in for the `conan` module: validate, source (the tarball, its
                                    SHA256 checked), package, package_info; its test_package built and run against
                                    the packaged folder as CMakeDeps would describe it

Every check works in a scratch folder under WORK (default: a temporary folder), removed afterwards.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types

ROOT = pathlib.Path(__file__).resolve().parents[2]
PORT = ROOT / "ports" / "trainloop"
CONAN = ROOT / "conan"
CONSUMER = ROOT / "tests" / "package" / "consumer"
GENERATOR = ["-G", "Ninja"] if shutil.which("ninja") else []  # for the consumer and test-package builds


class CheckFailed(Exception):
    pass


def require(condition, message):
    if not condition:
        raise CheckFailed(message)


def run(*command, cwd=None, env=None):
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"failed ({result.returncode}): {' '.join(map(str, command))}\n{result.stdout[-4000:]}")
    return result.stdout


def version_of_header(header):
    return re.search(r'^#define TRAINLOOP_VERSION_STRING "([0-9.]+)"$', header.read_text(), re.M).group(1)


def version_of(tree):
    return version_of_header(tree / "parts" / "core" / "config.hpp")


def next_patch(version):
    major, minor, patch = version.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


def cut_release(work, name, ref=None):
    """Clones the repository and runs tools/release.sh there; returns (clone, tarball). At a tag (ref), it re-cuts
    that tag's version; at HEAD, the next patch version (the current one may be tagged at an earlier commit), dated
    by HEAD's commit time so that two cuts agree."""
    clone = work / name
    run("git", "clone", "--quiet", ROOT, clone)
    env = dict(os.environ)
    if ref:
        run("git", "-c", "advice.detachedHead=false", "checkout", "--quiet", ref, cwd=clone)
        version = version_of(clone)
    else:
        version = next_patch(version_of(clone))
        env["SOURCE_DATE_EPOCH"] = run("git", "log", "-1", "--format=%ct", cwd=clone).strip()
    run("bash", "tools/release.sh", version, cwd=clone, env=env)
    tarball = clone / "dist" / f"trainloop-{version}.tar.gz"
    require(tarball.is_file(), f"release.sh did not write {tarball}")
    return clone, tarball


def sha(path, algorithm):
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def port_sha512(port_dir):
    found = re.search(r"^\s*SHA512 ([0-9a-f]+)$", (port_dir / "portfile.cmake").read_text(), re.M)
    require(found, f"{port_dir / 'portfile.cmake'} has no SHA512 line")
    return found.group(1)


def conan_sources(conan_dir):
    """conandata.yml's sources, parsed for the one shape release.sh writes (no YAML library needed)."""
    sources, current = {}, None
    for line in (conan_dir / "conandata.yml").read_text().splitlines():
        if m := re.match(r'^  "([0-9.]+)":$', line):
            current = sources.setdefault(m.group(1), {})
        elif m := re.match(r'^    (url|sha256): "([^"]+)"$', line):
            require(current is not None, f"conandata.yml: {line!r} outside a version")
            current[m.group(1)] = m.group(2)
        elif line.strip() and not line.startswith("#") and line != "sources:":
            raise CheckFailed(f"conandata.yml: unexpected line {line!r}")
    return sources


# --- release ----------------------------------------------------------------------------------------------------------

def check_release(work):
    clone_a, tarball_a = cut_release(work, "a")
    clone_b, tarball_b = cut_release(work, "b")
    require(tarball_a.read_bytes() == tarball_b.read_bytes(), "two releases of the same tree differ in their bytes")
    version = version_of(clone_a)
    digest = sha(tarball_a, "sha512")
    require((clone_a / "dist" / f"{tarball_a.name}.sha512").read_text() == f"{digest}  {tarball_a.name}\n",
            "the .sha512 file does not hold the tarball's SHA512")
    require(port_sha512(clone_a / "ports" / "trainloop") == digest, "the port's SHA512 is not the tarball's")
    manifest = json.loads((clone_a / "ports" / "trainloop" / "vcpkg.json").read_text())
    require(manifest["version"] == version, f"vcpkg.json's version {manifest['version']} is not {version}")
    entry = conan_sources(clone_a / "conan").get(version)
    require(entry and entry["sha256"] == sha(tarball_a, "sha256"), "conandata.yml's SHA256 is not the tarball's")
    require(entry["url"] == f"https://github.com/trainloop/trainloop/releases/download/v{version}/{tarball_a.name}",
            f"conandata.yml's URL {entry['url']} is not the release asset's")
    portfile = (clone_a / "ports" / "trainloop" / "portfile.cmake").read_text()
    require("releases/download/v${VERSION}/trainloop-${VERSION}.tar.gz" in portfile,
            "the port does not download the release asset of its version")
    with tarfile.open(tarball_a) as tar:
        names = sorted(tar.getnames())
        for member in tar.getmembers():
            require(member.uid == 0 and member.gid == 0 and member.uname == "" and member.gname == "",
                    f"{member.name}: owner is not 0 (uid {member.uid}, user '{member.uname}')")
    expected = [f"trainloop-{version}{suffix}" for suffix in
                ["", "/CMakeLists.txt", "/LICENSE", "/cmake", "/cmake/TrainloopInstall.cmake", "/cmake/trainloop.pc.in",
                 "/cmake/trainloopConfig.cmake.in", "/cmake/trainloopHelpers.cmake", "/single_include",
                 "/single_include/trainloop.hpp"]]
    require(names == expected, f"the tarball holds {names}, expected {expected}")
    print(f"release {version}: {len(tarball_a.read_bytes())} bytes, identical twice, sha512 {digest[:16]}...")

    # A version tagged at another commit is refused: its published tarball must not change.
    published = json.loads((PORT / "vcpkg.json").read_text())["version"]
    tag = run("git", "tag", "--list", f"v{published}", cwd=ROOT).strip()
    if tag and run("git", "rev-parse", f"{tag}^{{commit}}", cwd=ROOT) != run("git", "rev-parse", "HEAD", cwd=ROOT):
        clone = work / "refused"
        run("git", "clone", "--quiet", ROOT, clone)
        refused = subprocess.run(["bash", "tools/release.sh", published], cwd=clone, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        require(refused.returncode != 0 and f"v{published} is already tagged" in refused.stdout,
                f"release.sh {published} away from its tag was not refused: {refused.stdout[-400:]}")
        print(f"release: re-releasing {published} away from its tag is refused")

    # The committed port and recipe name the published release: rebuilding it from its tag gives their hashes.
    committed = json.loads((PORT / "vcpkg.json").read_text())["version"]
    tags = run("git", "tag", "--list", f"v{committed}", cwd=ROOT).split()
    if not tags:
        print(f"release: no tag v{committed} in this clone; the committed port's SHA512 was not rebuilt (fetch tags)")
        return
    _, tagged = cut_release(work, "tagged", ref=f"v{committed}")
    require(sha(tagged, "sha512") == port_sha512(PORT),
            f"ports/trainloop/portfile.cmake's SHA512 is not that of the v{committed} release rebuilt from its tag")
    require(conan_sources(CONAN)[committed]["sha256"] == sha(tagged, "sha256"),
            f"conan/conandata.yml's SHA256 for {committed} is not that of the release rebuilt from its tag")
    print(f"release: the committed port and recipe match v{committed} rebuilt from its tag")


# --- install ----------------------------------------------------------------------------------------------------------

def port_feature_options():
    """The feature -> CMake option mapping and the fixed options, read from the portfile as vcpkg would pass them."""
    text = (PORT / "portfile.cmake").read_text()
    block = re.search(r"vcpkg_check_features\((.*?)\)", text, re.S).group(1)
    mapping = dict(re.findall(r"^\s+([a-z0-9-]+) (TRAINLOOP_WITH_[A-Z_]+)$", block, re.M))
    configure = re.search(r"vcpkg_cmake_configure\((.*?)\n\)", text, re.S).group(1)
    fixed = re.findall(r"^\s+(-D\S+)$", configure, re.M)
    return mapping, fixed


def feature_sets():
    manifest = json.loads((PORT / "vcpkg.json").read_text())
    features = manifest["features"]
    sets = [[]]  # --no-default-features: the torch-free Engine
    sets.append(sorted(manifest["default-features"]))
    for name in sorted(features):
        if name not in manifest["default-features"]:
            sets.append(sorted(set(manifest["default-features"]) | {name}))
    return sets


def extract(tarball, into):
    with tarfile.open(tarball) as tar:
        tar.extractall(into)
    (tree,) = [p for p in into.iterdir() if p.is_dir()]
    return tree


def staged_install(source, build, prefix, options):
    run("cmake", "-S", source, "-B", build, "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_INSTALL_PREFIX={prefix}", *options)
    run("cmake", "--install", build)


def check_install(work):
    _, tarball = cut_release(work, "release")
    source = extract(tarball, work / "src")
    mapping, fixed = port_feature_options()
    require(set(mapping) == set(json.loads((PORT / "vcpkg.json").read_text())["features"]),
            f"the portfile maps features {sorted(mapping)}, vcpkg.json declares others")
    version = version_of_header(source / "single_include" / "trainloop.hpp")
    for features in feature_sets():
        options = [f"-D{option}={'ON' if feature in features else 'OFF'}" for feature, option in mapping.items()]
        name = "-".join(features) or "core"
        prefix = work / f"prefix-{name}"
        staged_install(source, work / f"build-{name}", prefix, options + fixed)
        files = sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*") if p.is_file() or p.is_symlink())
        expected = sorted(["include/trainloop.hpp", "share/doc/trainloop/LICENSE", "share/pkgconfig/trainloop.pc",
                           "share/trainloop/trainloopConfig.cmake", "share/trainloop/trainloopConfigVersion.cmake",
                           "share/trainloop/trainloopTargets.cmake", "share/trainloop/trainloopHelpers.cmake"])
        require(files == expected, f"[{name}] installed {files}, expected {expected}")
        require((prefix / "include/trainloop.hpp").read_bytes() == (source / "single_include/trainloop.hpp").read_bytes(),
                f"[{name}] the installed header is not the release's single_include/trainloop.hpp")
        require((prefix / "share/doc/trainloop/LICENSE").read_bytes() == (source / "LICENSE").read_bytes(),
                f"[{name}] the installed license differs")
        torch = "torch" in features
        defines = ([] if torch else ["TRAINLOOP_WITH_TORCH=0"]) + \
                  (["TRAINLOOP_WITH_AMP=1"] if "amp" in features else []) + \
                  (["TRAINLOOP_WITH_DISTRIBUTED=1"] if "distributed" in features else []) + \
                  (["TRAINLOOP_WITH_IMAGE_IO=1"] if "image-io" in features else [])
        image_io = "image-io" in features
        targets = (prefix / "share/trainloop/trainloopTargets.cmake").read_text()
        found = re.search(r'INTERFACE_COMPILE_DEFINITIONS "([^"]*)"', targets)
        require((found.group(1).split(";") if found else []) == defines,
                f"[{name}] exported definitions {found.group(1) if found else 'none'}, expected {defines or 'none'}")
        links = re.search(r'INTERFACE_LINK_LIBRARIES "([^"]*)"', targets)
        expected_links = ("torch;ZLIB::ZLIB" if torch else "") + (";libjpeg-turbo::turbojpeg;PNG::PNG" if image_io else "")
        require((links.group(1) if links else "") == expected_links,
                f"[{name}] exported links {links.group(1) if links else 'none'}")
        check_version_file(prefix / "share/trainloop/trainloopConfigVersion.cmake", version, name)
        pc = (prefix / "share/pkgconfig/trainloop.pc").read_text()
        require(f"Version: {version}\n" in pc, f"[{name}] trainloop.pc's version is not {version}")
        cflags = re.search(r"^Cflags: (.*)$", pc, re.M).group(1).split()
        require(cflags[0] == "-I${includedir}" and [f[2:] for f in cflags if f.startswith("-DTRAINLOOP")] == defines,
                f"[{name}] trainloop.pc's Cflags {cflags} do not carry {defines}")
        libs = re.search(r"^Libs: (.*)$", pc, re.M).group(1).split()
        require(("-ltorch" in libs and "-lz" in libs) if torch else libs == [], f"[{name}] trainloop.pc's Libs: {libs}")
        require(("-lturbojpeg" in libs and "-lpng" in libs) == image_io, f"[{name}] trainloop.pc's Libs: {libs}")
        print(f"install [{name}]: {len(files)} files as documented; definitions {defines or 'none'}")


def check_version_file(path, version, name):
    """Asks the version file what find_package would: a 32-bit consumer of this 64-bit install is still served (a
    header-only package is architecture-independent), the same minor version is, the next one is not."""
    major, minor, _ = version.split(".")
    def ask(requested, pointer_size):
        script = path.parent / "ask-version.cmake"
        parts = requested.split(".")
        script.write_text(f'cmake_minimum_required(VERSION 3.16)\nset(PACKAGE_FIND_VERSION "{requested}")\nset(PACKAGE_FIND_VERSION_MAJOR {parts[0]})\n'
                          f'set(PACKAGE_FIND_VERSION_MINOR {parts[1]})\nset(PACKAGE_FIND_VERSION_PATCH 0)\n'
                          f'set(CMAKE_SIZEOF_VOID_P {pointer_size})\ninclude("{path}")\n'
                          'message("${PACKAGE_VERSION}|${PACKAGE_VERSION_COMPATIBLE}|${PACKAGE_VERSION_UNSUITABLE}")\n')
        try:
            return run("cmake", "-P", script).strip().split("|")
        finally:
            script.unlink()
    found, compatible, unsuitable = ask(f"{major}.{minor}", 4)
    require(found == version and compatible == "TRUE" and unsuitable not in ("TRUE", "1"),
            f"[{name}] a 32-bit consumer asking for {major}.{minor} got version {found}, compatible '{compatible}', "
            f"unsuitable '{unsuitable}'")
    _, compatible, _ = ask(f"{major}.{int(minor) + 1}", 8)
    require(compatible != "TRUE", f"[{name}] the version file accepts {major}.{int(minor) + 1}")


# --- consumers --------------------------------------------------------------------------------------------------------

def build_and_run(name, source, build, options):
    run("cmake", "-S", source, "-B", build, *GENERATOR, *options)  # no build type: -O0, the quickest compile
    run("cmake", "--build", build)
    output = run(build / "consumer")
    print(f"consumer [{name}]: {output.strip()}")


def check_consumers(work, torch):
    _, tarball = cut_release(work, "release")
    source = extract(tarball, work / "src")
    prefix = work / "prefix"
    flavour = ["-DCONSUMER_TORCH=ON"] if torch else ["-DCONSUMER_TORCH=OFF"]
    staged_install(source, work / "build-install", prefix, [f"-DTRAINLOOP_WITH_TORCH={'ON' if torch else 'OFF'}"])
    build_and_run("find_package", CONSUMER, work / "found", flavour + ["-DTRAINLOOP_CONSUME=find_package",
                                                                      f"-DCMAKE_PREFIX_PATH={prefix}"])
    # The build helpers in every mode torch-free; with torch (a precompiled LibTorch, a minute) in the first only.
    helpers = ["-DCONSUMER_HELPERS=OFF"] if torch else []
    build_and_run("add_subdirectory", CONSUMER, work / "subdir", flavour + helpers +
                  ["-DTRAINLOOP_CONSUME=subdirectory", f"-DTRAINLOOP_SOURCE_DIR={ROOT}"])
    build_and_run("FetchContent", CONSUMER, work / "fetched",
                  flavour + helpers + ["-DTRAINLOOP_CONSUME=fetchcontent", f"-DTRAINLOOP_URL={tarball.as_uri()}",
                                       f"-DTRAINLOOP_SHA512={sha(tarball, 'sha512')}"])
    # A wrong hash must stop FetchContent: the check above is not vacuous.
    bad = subprocess.run(["cmake", "-S", CONSUMER, "-B", work / "fetched-bad", *flavour,
                          "-DTRAINLOOP_CONSUME=fetchcontent", f"-DTRAINLOOP_URL={tarball.as_uri()}",
                          f"-DTRAINLOOP_SHA512={'0' * 128}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    require(bad.returncode != 0 and "does not match expected value" in bad.stdout, "FetchContent accepted a wrong SHA512")
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "share" / "pkgconfig"))
    flags = run("pkg-config", "--cflags", "--libs", "trainloop", env=env).split()
    main = CONSUMER / ("main_torch.cpp" if torch else "main.cpp")
    run("g++", "-std=c++17", main, "-o", work / "pkgconfig-consumer", *flags)
    print(f"consumer [pkg-config {' '.join(flags)}]: {run(work / 'pkgconfig-consumer').strip()}")


# --- recipes ----------------------------------------------------------------------------------------------------------

VCPKG_TOP_LEVEL = {"name": str, "version": str, "port-version": int, "description": (str, list), "homepage": str,
                   "license": (str, type(None)), "supports": str, "dependencies": list, "default-features": list,
                   "features": dict, "maintainers": (str, list), "documentation": str}


def check_dependency(where, dependency, port_names):
    if isinstance(dependency, str):
        require(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", dependency), f"{where}: '{dependency}' is not a port name")
        return
    require(isinstance(dependency, dict) and isinstance(dependency.get("name"), str), f"{where}: {dependency}")
    allowed = {"name": str, "host": bool, "features": list, "default-features": bool, "platform": str,
               "version>=": str}
    for key, value in dependency.items():
        require(key in allowed and isinstance(value, allowed[key]), f"{where}: field '{key}' ({value!r})")
    if dependency["name"] == "trainloop":  # a feature of this port: it must exist
        for feature in dependency.get("features", []):
            require(feature in port_names, f"{where}: trainloop has no feature '{feature}'")


def check_vcpkg():
    manifest = json.loads((PORT / "vcpkg.json").read_text())
    for key, value in manifest.items():
        require(key in VCPKG_TOP_LEVEL, f"vcpkg.json: '{key}' is not a manifest field")
        require(isinstance(value, VCPKG_TOP_LEVEL[key]), f"vcpkg.json: '{key}' has the wrong type")
    for key in ("name", "version", "description", "homepage", "license"):
        require(key in manifest, f"vcpkg.json has no '{key}'")
    require(manifest["name"] == "trainloop", "vcpkg.json: the port is not named trainloop")
    require(re.fullmatch(r"\d+(\.\d+)*", manifest["version"]), "vcpkg.json: 'version' is not dot-separated numbers")
    require(manifest["license"] == "MIT", "vcpkg.json: the license is not the SPDX id MIT")
    require(json.dumps(manifest, indent=2) + "\n" == (PORT / "vcpkg.json").read_text(),
            "vcpkg.json is not formatted as `vcpkg format-manifest` writes it (2 spaces; release.sh rewrites it so)")
    hosts = {d["name"] for d in manifest["dependencies"] if isinstance(d, dict) and d.get("host")}
    require({"vcpkg-cmake", "vcpkg-cmake-config"} <= hosts, "vcpkg.json: vcpkg-cmake(-config) are not host deps")
    features = manifest["features"]
    for dependency in manifest["dependencies"]:
        check_dependency("vcpkg.json dependencies", dependency, features)
    require(manifest["default-features"] == ["torch"], "vcpkg.json: the default feature is not torch")
    require(set(features) == {"torch", "amp", "distributed", "image-io"}, f"vcpkg.json: features {sorted(features)}")
    for name, feature in features.items():
        require(isinstance(feature.get("description"), str) and feature["description"], f"feature {name}: description")
        for dependency in feature.get("dependencies", []):
            check_dependency(f"feature {name}", dependency, features)
    names = lambda f: {d if isinstance(d, str) else d["name"] for d in features[f].get("dependencies", [])}
    require({"libtorch", "zlib"} <= names("torch"), "feature torch does not depend on libtorch and zlib")
    dist = [d for d in features["distributed"]["dependencies"] if isinstance(d, dict) and d["name"] == "libtorch"]
    require(dist and "dist" in dist[0].get("features", []), "feature distributed does not need libtorch[dist]")
    for name in ("amp", "distributed", "image-io"):
        require("trainloop" in names(name), f"feature {name} does not pull in the torch feature")
    require({"libjpeg-turbo", "libpng"} <= names("image-io"), "feature image-io does not depend on libjpeg-turbo and libpng")
    portfile = (PORT / "portfile.cmake").read_text()
    for call in ("vcpkg_download_distfile", "vcpkg_extract_source_archive", "set(VCPKG_BUILD_TYPE release)",
                 "vcpkg_check_features", "vcpkg_cmake_configure", "vcpkg_cmake_install", "vcpkg_cmake_config_fixup",
                 "vcpkg_fixup_pkgconfig", "vcpkg_install_copyright", "/usage"):
        require(call in portfile, f"portfile.cmake does not call {call}")
    require(re.search(r"^\s*SHA512 [0-9a-f]{128}$", portfile, re.M), "portfile.cmake's SHA512 is not 128 hex digits")
    require(re.search(r'REMOVE_RECURSE[^)]*"\$\{CURRENT_PACKAGES_DIR\}/debug"', portfile), "the port keeps debug/")
    usage = (PORT / "usage").read_text()
    require("find_package(trainloop CONFIG REQUIRED)" in usage and "trainloop::trainloop" in usage, "usage text")
    print(f"vcpkg: vcpkg.json ({manifest['version']}, features {sorted(features)}) and portfile.cmake as vcpkg reads them")


def conan_stand_in(work, tarball):
    """A minimal `conan` package: the names the recipe imports, doing what Conan does with them."""
    calls = {"get": []}

    class ConanInvalidConfiguration(Exception):
        pass

    class Options(dict):
        __getattr__ = dict.__getitem__

    class Settings(dict):
        def get_safe(self, name, default=None):
            return self.get(name, default)

    class CppInfo:
        def __init__(self):
            self.properties, self.defines, self.includedirs = {}, [], ["include"]
            self.bindirs, self.libdirs, self.resdirs, self.builddirs = ["bin"], ["lib"], ["res"], []

        def set_property(self, name, value):
            self.properties[name] = value

    class ConanFile:
        def __init__(self, options=None, version=None, conan_data=None):
            self.options = Options(getattr(self, "default_options", {}))
            self.options.update(options or {})
            self.settings = Settings()
            self.version, self.conan_data, self.cpp_info = version, conan_data, CppInfo()
            self.ref = f"{getattr(self, 'name', 'test_package')}/{version}"
            self.info = types.SimpleNamespace(clear=lambda: calls.setdefault("cleared", True))
            self.requires_calls = []

        def requires(self, reference):
            self.requires_calls.append(reference)

    def check_min_cppstd(conanfile, version):
        require(int(str(conanfile.settings.get_safe("compiler.cppstd")).lstrip("gnu")) >= int(version),
                f"cppstd below {version}")

    def copy(conanfile, pattern, src, dst):
        for path in pathlib.Path(src).glob(pattern):
            pathlib.Path(dst).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, pathlib.Path(dst) / path.name)

    def save(conanfile, path, content):
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(path).write_text(content)

    def get(conanfile, url, sha256, strip_root=False, destination=None):
        # The release asset is not published from here: the URL must be the one release.sh names, and the tarball
        # it built must have the recipe's SHA256, as Conan would check after downloading.
        calls["get"].append(url)
        require(url.endswith("/" + tarball.name), f"get(): {url} is not the release tarball {tarball.name}")
        require(hashlib.sha256(tarball.read_bytes()).hexdigest() == sha256, "get(): the SHA256 does not match")
        into = pathlib.Path(destination or conanfile.source_folder)
        scratch = work / "unpacked"
        tree = extract(tarball, scratch)
        require(strip_root, "get(): the tarball has one root folder to strip")
        shutil.copytree(tree, into, dirs_exist_ok=True)

    modules = {
        "conan": types.ModuleType("conan"),
        "conan.errors": types.ModuleType("conan.errors"),
        "conan.tools": types.ModuleType("conan.tools"),
        "conan.tools.build": types.ModuleType("conan.tools.build"),
        "conan.tools.files": types.ModuleType("conan.tools.files"),
        "conan.tools.layout": types.ModuleType("conan.tools.layout"),
        "conan.tools.cmake": types.ModuleType("conan.tools.cmake"),
    }
    modules["conan"].ConanFile = ConanFile
    modules["conan.errors"].ConanInvalidConfiguration = ConanInvalidConfiguration
    modules["conan.tools.build"].check_min_cppstd = check_min_cppstd
    modules["conan.tools.build"].can_run = lambda conanfile: True
    modules["conan.tools.files"].copy, modules["conan.tools.files"].get = copy, get
    modules["conan.tools.files"].save = save
    modules["conan.tools.layout"].basic_layout = lambda conanfile, src_folder=".": None
    modules["conan.tools.cmake"].cmake_layout = lambda conanfile: None
    modules["conan.tools.cmake"].CMake = object
    sys.modules.update(modules)
    return ConanInvalidConfiguration, calls


def load_recipe(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_conan(work):
    clone, tarball = cut_release(work, "release")
    version = version_of(clone)
    conan_data = {"sources": conan_sources(clone / "conan")}
    invalid, calls = conan_stand_in(work, tarball)
    recipe = load_recipe(CONAN / "conanfile.py", "trainloop_conanfile")
    (cls,) = [c for c in vars(recipe).values() if isinstance(c, type) and c.__module__ == recipe.__name__]
    require(cls.name == "trainloop" and cls.package_type == "header-library" and cls.no_copy_source is True,
            "the recipe is not a header-library named trainloop with no_copy_source")
    require(set(cls.options) == {"with_torch", "with_amp", "with_distributed", "with_image_io"} and
            cls.default_options == {"with_torch": True, "with_amp": False, "with_distributed": False,
                                    "with_image_io": False},
            f"the recipe's options {cls.options} / defaults {cls.default_options}")
    require(cls.license == "MIT" and re.match(r"^>=2", recipe.required_conan_version), "license / required version")

    conanfile = cls(version=version, conan_data=conan_data)
    conanfile.package_id()
    require(calls.get("cleared"), "package_id() does not clear the package id")
    conanfile.settings["compiler.cppstd"] = "14"
    try:
        conanfile.validate()
        raise CheckFailed("validate() accepted C++14")
    except CheckFailed as error:
        require("cppstd below 17" in str(error), f"validate() with C++14: {error}")
    conanfile.settings["compiler.cppstd"] = "gnu17"
    conanfile.validate()
    for bad in ({"with_torch": False, "with_amp": True}, {"with_torch": False, "with_distributed": True},
                {"with_torch": False, "with_image_io": True}):
        try:
            cls(options=bad, version=version).validate()
            raise CheckFailed(f"validate() accepted {bad}")
        except invalid:
            pass

    conanfile.source_folder = str(work / "conan-source")
    conanfile.package_folder = str(work / "conan-package")
    conanfile.source()
    require(calls["get"], "source() does not call get()")
    conanfile.package()
    package = pathlib.Path(conanfile.package_folder)
    files = sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file())
    require(files == ["include/trainloop.hpp", "licenses/LICENSE", "share/trainloop/trainloop-torch.cmake",
                      "share/trainloop/trainloopHelpers.cmake"],
            f"package() wrote {files}")
    require((package / "include/trainloop.hpp").read_bytes() == (clone / "single_include/trainloop.hpp").read_bytes(),
            "the packaged header is not the release's single_include/trainloop.hpp")

    infos = {}
    for options, defines in (({}, []), ({"with_torch": False}, ["TRAINLOOP_WITH_TORCH=0"]),
                             ({"with_amp": True}, ["TRAINLOOP_WITH_AMP=1"]),
                             ({"with_amp": True, "with_distributed": True},
                              ["TRAINLOOP_WITH_AMP=1", "TRAINLOOP_WITH_DISTRIBUTED=1"]),
                             ({"with_image_io": True}, ["TRAINLOOP_WITH_IMAGE_IO=1"])):
        info = cls(options=options, version=version)
        info.requirements()
        info.package_info()
        cpp = info.cpp_info
        image_io = options.get("with_image_io", False)
        require(len(info.requires_calls) == (2 if image_io else 0) and
                all(r.split("/")[0] in ("libjpeg-turbo", "libpng") for r in info.requires_calls),
                f"{options}: requirements {info.requires_calls}")
        require(getattr(cpp, "requires", []) == (["libjpeg-turbo::turbojpeg", "libpng::libpng"] if image_io else []),
                f"{options}: cpp_info.requires {getattr(cpp, 'requires', [])}")
        require(cpp.properties.get("cmake_target_name") == "trainloop::trainloop" and
                cpp.properties.get("cmake_file_name") == "trainloop", f"{options}: the CMake names {cpp.properties}")
        require(cpp.bindirs == [] and cpp.libdirs == [], f"{options}: bindirs/libdirs are not empty")
        require(cpp.defines == defines, f"{options}: defines {cpp.defines}, expected {defines}")
        modules = cpp.properties.get("cmake_build_modules", [])
        torch = options.get("with_torch", True)
        require(modules[:1] == ["share/trainloop/trainloopHelpers.cmake"] and
                any(m.endswith("trainloop-torch.cmake") for m in modules) == torch and
                all((package / m).is_file() for m in modules),
                f"{options}: build modules {modules}")
        infos[json.dumps(options, sort_keys=True)] = cpp
    print(f"conan: recipe {version}: validate, source (SHA256 checked), package and package_info as documented")

    # The test package, against the packaged folder described as CMakeDeps would describe cpp_info.
    test_recipe = load_recipe(CONAN / "test_package" / "conanfile.py", "trainloop_test_package")
    (test_cls,) = [c for c in vars(test_recipe).values() if isinstance(c, type) and c.__module__ == test_recipe.__name__]
    require(not any(k.startswith("trainloop/") for k in getattr(test_cls, "default_options", {})),
            "test_package forces an option of trainloop: it must test the package `conan create -o ...` made")
    test = test_cls()
    test.tested_reference_str = f"trainloop/{version}"
    test.requirements()
    require(test.requires_calls == [f"trainloop/{version}"], "test_package does not require tested_reference_str")
    cpp = infos[json.dumps({"with_torch": False}, sort_keys=True)]
    deps = work / "deps"
    deps.mkdir()
    includes = ";".join(str(package / d) for d in cpp.includedirs)
    (deps / "trainloop-config.cmake").write_text(
        "add_library(trainloop::trainloop INTERFACE IMPORTED)\n"
        f'set_target_properties(trainloop::trainloop PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "{includes}"\n'
        f'  INTERFACE_COMPILE_DEFINITIONS "{";".join(cpp.defines)}")\n' +
        "".join(f'include("{package / m}")\n' for m in cpp.properties.get("cmake_build_modules", [])))
    run("cmake", "-S", CONAN / "test_package", "-B", work / "test-build", *GENERATOR, "-DCMAKE_BUILD_TYPE=Release",
        f"-Dtrainloop_DIR={deps}")
    run("cmake", "--build", work / "test-build")
    print(f"conan: test_package: {run(work / 'test-build' / 'test_package').strip()}")

    # With torch, the package's build module finds this machine's LibTorch and links it to the target.
    cpp = infos[json.dumps({}, sort_keys=True)]
    torch_deps = work / "torch-deps"
    torch_deps.mkdir()
    (torch_deps / "trainloop-config.cmake").write_text(
        "add_library(trainloop::trainloop INTERFACE IMPORTED)\n" +
        "".join(f'include("{package / m}")\n' for m in cpp.properties["cmake_build_modules"]))
    probe = work / "torch-probe"
    probe.mkdir()
    (probe / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(probe CXX)\nfind_package(trainloop CONFIG REQUIRED)\n"
        "get_target_property(links trainloop::trainloop INTERFACE_LINK_LIBRARIES)\nmessage(STATUS \"LINKS=${links}\")\n")
    output = run("cmake", "-S", probe, "-B", probe / "build", f"-Dtrainloop_DIR={torch_deps}")
    require("LINKS=torch;ZLIB::ZLIB" in output, f"with_torch: the build module did not link LibTorch: {output[-800:]}")
    print("conan: with_torch=True: the build module finds LibTorch and zlib and links them to trainloop::trainloop")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=["release", "install", "consumers", "recipes"])
    parser.add_argument("--torch", action="store_true", help="consumers: with LibTorch")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = pathlib.Path(args.work) if args.work else pathlib.Path(tempfile.mkdtemp(prefix="trainloop-dist-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if args.check == "release":
            check_release(work)
        elif args.check == "install":
            check_install(work)
        elif args.check == "consumers":
            check_consumers(work, args.torch)
        else:
            check_vcpkg()
            check_conan(work)
    except CheckFailed as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
