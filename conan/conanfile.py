"""Conan 2 recipe for trainloop, a header-only library: `conan create conan --version 0.1.0` (from the repository
root) downloads the release tarball named in conandata.yml, checks its SHA256 and packages the single header.

Options: with_torch (default True), with_amp, with_distributed, with_image_io, the four TRAINLOOP_WITH_* macros;
with_image_io requires libjpeg-turbo and libpng from Conan Center (the decoders ImageFolder and read_image call). Conan Center has
no LibTorch package, so with_torch takes LibTorch from the consumer's machine: the package's CMake module runs
find_package(Torch) and find_package(ZLIB) and links both to trainloop::trainloop. Point CMake at another LibTorch
with Torch_DIR or CMAKE_PREFIX_PATH (e.g. `python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'`), or
pass with_torch=False for the torch-free Engine.
"""
import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, get, save
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"

# Included by CMakeDeps after the trainloop::trainloop target exists (cmake_build_modules), when with_torch is on.
TORCH_MODULE = """\
# trainloop with torch: LibTorch and zlib come from this machine (Torch_DIR / CMAKE_PREFIX_PATH choose another).
set(TRAINLOOP_WITH_TORCH ON)  # trainloop_precompile_headers() precompiles <torch/torch.h> too
find_package(Torch REQUIRED)
find_package(ZLIB REQUIRED)
if(TARGET trainloop::trainloop)
  set_property(TARGET trainloop::trainloop APPEND PROPERTY INTERFACE_LINK_LIBRARIES torch ZLIB::ZLIB)
endif()
"""


class TrainloopConan(ConanFile):
    name = "trainloop"
    description = ("A structured, fast training loop for LibTorch in one C++17 header: Lightning's Trainer over a "
                   "CRTP LightningModule and Ignite's Engine with events, filters and handlers")
    license = "MIT"
    url = "https://github.com/trainloop/trainloop"
    homepage = "https://github.com/trainloop/trainloop"
    topics = ("deep-learning", "libtorch", "pytorch", "training-loop", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {
        "with_torch": [True, False],
        "with_amp": [True, False],
        "with_distributed": [True, False],
        "with_image_io": [True, False],
    }
    default_options = {
        "with_torch": True,
        "with_amp": False,
        "with_distributed": False,
        "with_image_io": False,
    }
    no_copy_source = True

    _torch_module = os.path.join("share", "trainloop", "trainloop-torch.cmake")
    _helpers_module = os.path.join("share", "trainloop", "trainloopHelpers.cmake")

    def layout(self):
        basic_layout(self, src_folder="src")

    def package_id(self):
        # One package for every configuration: the options only change the consumer's macros and links.
        self.info.clear()

    def requirements(self):
        if self.options.with_image_io:  # TurboJPEG's 2.x API, which libjpeg-turbo 3 keeps
            self.requires("libjpeg-turbo/[>=2.1 <4]")
            self.requires("libpng/[>=1.6 <2]")

    def validate(self):
        if self.settings.get_safe("compiler.cppstd"):
            check_min_cppstd(self, 17)
        if not self.options.with_torch and (self.options.with_amp or self.options.with_distributed or
                                            self.options.with_image_io):
            raise ConanInvalidConfiguration(f"{self.ref}: with_amp, with_distributed and with_image_io need with_torch=True")

    def source(self):
        get(self, **self.conan_data["sources"][self.version], strip_root=True)

    def build(self):
        pass

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "trainloop.hpp", os.path.join(self.source_folder, "single_include"),
             os.path.join(self.package_folder, "include"))
        save(self, os.path.join(self.package_folder, self._torch_module), TORCH_MODULE)
        # trainloop_separate_compilation() and trainloop_precompile_headers(), as the CMake package has them.
        copy(self, "trainloopHelpers.cmake", os.path.join(self.source_folder, "cmake"),
             os.path.join(self.package_folder, "share", "trainloop"))

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "trainloop")
        self.cpp_info.set_property("cmake_target_name", "trainloop::trainloop")
        self.cpp_info.set_property("pkg_config_name", "trainloop")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.resdirs = []
        # Only the macros that differ from the header's defaults, as the CMake package does.
        defines = []
        if not self.options.with_torch:
            defines.append("TRAINLOOP_WITH_TORCH=0")
        if self.options.with_amp:
            defines.append("TRAINLOOP_WITH_AMP=1")
        if self.options.with_distributed:
            defines.append("TRAINLOOP_WITH_DISTRIBUTED=1")
        if self.options.with_image_io:
            defines.append("TRAINLOOP_WITH_IMAGE_IO=1")
            self.cpp_info.requires = ["libjpeg-turbo::turbojpeg", "libpng::libpng"]
        self.cpp_info.defines = defines
        modules = [self._helpers_module]
        if self.options.with_torch:
            modules.append(self._torch_module)
        self.cpp_info.set_property("cmake_build_modules", modules)
