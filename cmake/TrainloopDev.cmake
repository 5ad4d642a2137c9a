# Helpers for trainloop's own tests, examples and benchmarks (not installed).

set(TRAINLOOP_WARNING_FLAGS -Wall -Wextra -Wpedantic)
if(TRAINLOOP_WARNINGS_AS_ERRORS)
  list(APPEND TRAINLOOP_WARNING_FLAGS -Werror)
endif()
# The project's own targets (tests, examples, benchmarks) at another optimisation level than the build type's: CI builds
# them at -O1 (a third less compile time; what the tests run is LibTorch's, optimised anyway). Benchmark figures come
# from a Release build without it.
set(TRAINLOOP_DEV_OPTIMIZATION "" CACHE STRING "Optimisation flag for the project's own targets (for example -O1)")
option(TRAINLOOP_SANITIZE "Build the project's own targets with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
set(TRAINLOOP_SANITIZE_FLAGS "")
if(TRAINLOOP_SANITIZE)
  set(TRAINLOOP_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
endif()

# Four ways the project's own targets see the header: from parts/ (development) or from the generated single header
# (what users copy), each with or without torch. The test suite runs against all of them.
function(_trainloop_dev_interface name include_dir with_torch)
  add_library(${name} INTERFACE)
  target_include_directories(${name} INTERFACE "${include_dir}")
  target_compile_features(${name} INTERFACE cxx_std_17)
  if(with_torch)
    # TRAINLOOP_WITH_AMP and TRAINLOOP_WITH_DISTRIBUTED come per target (trainloop_target)
    target_compile_definitions(${name} INTERFACE TRAINLOOP_WITH_TORCH=1)
    target_link_libraries(${name} INTERFACE torch ZLIB::ZLIB)
  else()
    target_compile_definitions(${name} INTERFACE TRAINLOOP_WITH_TORCH=0 TRAINLOOP_WITH_AMP=0 TRAINLOOP_WITH_DISTRIBUTED=0)
  endif()
endfunction()
_trainloop_dev_interface(trainloop_dev_core_parts "${PROJECT_SOURCE_DIR}" OFF)
_trainloop_dev_interface(trainloop_dev_core_single "${PROJECT_SOURCE_DIR}/single_include" OFF)
if(TRAINLOOP_WITH_TORCH)
  # LibTorch's folders for compiler command lines the project runs itself (compile_fail tests, bench/compile_cost.py),
  # without the default one: -isystem /usr/include breaks libstdc++'s #include_next.
  set(TRAINLOOP_TORCH_EXTRA_INCLUDE_DIRS ${TORCH_INCLUDE_DIRS})
  list(REMOVE_ITEM TRAINLOOP_TORCH_EXTRA_INCLUDE_DIRS /usr/include)
  _trainloop_dev_interface(trainloop_dev_torch_parts "${PROJECT_SOURCE_DIR}" ON)
  _trainloop_dev_interface(trainloop_dev_torch_single "${PROJECT_SOURCE_DIR}/single_include" ON)

  # One precompiled <torch/torch.h> shared by every torch target: parsing it is most of the build time.
  file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/trainloop_torch_pch.cpp" "// hosts the precompiled header\n")
  add_library(trainloop_torch_pch STATIC "${CMAKE_CURRENT_BINARY_DIR}/trainloop_torch_pch.cpp")
  target_link_libraries(trainloop_torch_pch PUBLIC torch)
  target_compile_features(trainloop_torch_pch PUBLIC cxx_std_17)
  target_compile_options(trainloop_torch_pch PRIVATE ${TRAINLOOP_WARNING_FLAGS} ${TRAINLOOP_SANITIZE_FLAGS}
                         ${TRAINLOOP_DEV_OPTIMIZATION})
  target_precompile_headers(trainloop_torch_pch PUBLIC <torch/torch.h> <zlib.h>)
endif()
# ccache caches compilations that use a GCC precompiled header only with -fpch-preprocess (and its sloppiness
# pch_defines,time_macros, which tools/test.sh sets); without ccache the flag changes nothing.
set(TRAINLOOP_PCH_FLAGS "")
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(TRAINLOOP_PCH_FLAGS -fpch-preprocess)
endif()
if(TARGET trainloop_torch_pch)
  target_compile_options(trainloop_torch_pch PRIVATE ${TRAINLOOP_PCH_FLAGS})
endif()

# The image decoders, for the targets that test and show image files (tools/setup.sh installs them; without them
# those targets build with TRAINLOOP_WITH_IMAGE_IO=0 and their image checks are left out).
set(TRAINLOOP_DEV_IMAGE_IO OFF)
if(TRAINLOOP_WITH_TORCH)
  find_package(libjpeg-turbo CONFIG QUIET)
  find_package(PNG QUIET)
  if(TARGET libjpeg-turbo::turbojpeg AND TARGET PNG::PNG)
    set(TRAINLOOP_DEV_IMAGE_IO ON)
  else()
    message(STATUS "trainloop: libjpeg-turbo or libpng not found: the image file tests and examples are left out")
  endif()
endif()

# trainloop_target(name [TORCH] [AMP] [DISTRIBUTED] [IMAGE_IO] [SINGLE] SOURCES ...): an executable with warnings on,
# built against the chosen header. AMP, DISTRIBUTED and IMAGE_IO compile mixed precision (TRAINLOOP_WITH_AMP=1),
# data-parallel training (TRAINLOOP_WITH_DISTRIBUTED=1) and image files (TRAINLOOP_WITH_IMAGE_IO=1, when the decoders
# were found) in, whatever the project's options say.
function(trainloop_target name)
  cmake_parse_arguments(ARG "TORCH;AMP;DISTRIBUTED;IMAGE_IO;SINGLE" "" "SOURCES" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${TRAINLOOP_WARNING_FLAGS} ${TRAINLOOP_SANITIZE_FLAGS} ${TRAINLOOP_DEV_OPTIMIZATION})
  target_link_options(${name} PRIVATE ${TRAINLOOP_SANITIZE_FLAGS})
  set(flavour core)
  if(ARG_TORCH)
    set(flavour torch)
    set(amp 0)
    if(ARG_AMP OR TRAINLOOP_WITH_AMP)
      set(amp 1)
    endif()
    set(distributed 0)
    if(ARG_DISTRIBUTED OR TRAINLOOP_WITH_DISTRIBUTED)
      set(distributed 1)
    endif()
    set(image_io 0)
    if((ARG_IMAGE_IO OR TRAINLOOP_WITH_IMAGE_IO) AND TRAINLOOP_DEV_IMAGE_IO)
      set(image_io 1)
      target_link_libraries(${name} PRIVATE libjpeg-turbo::turbojpeg PNG::PNG)
    endif()
    target_compile_definitions(${name} PRIVATE TRAINLOOP_WITH_AMP=${amp} TRAINLOOP_WITH_DISTRIBUTED=${distributed}
                               TRAINLOOP_WITH_IMAGE_IO=${image_io})
    target_precompile_headers(${name} REUSE_FROM trainloop_torch_pch)
    target_compile_options(${name} PRIVATE ${TRAINLOOP_PCH_FLAGS})
  endif()
  if(ARG_SINGLE)
    target_link_libraries(${name} PRIVATE trainloop_dev_${flavour}_single)
  else()
    target_link_libraries(${name} PRIVATE trainloop_dev_${flavour}_parts)
  endif()
endfunction()
