# Helpers for trainloop's own tests, examples and benchmarks (not installed).

set(TRAINLOOP_WARNING_FLAGS -Wall -Wextra -Wpedantic)
if(TRAINLOOP_WARNINGS_AS_ERRORS)
  list(APPEND TRAINLOOP_WARNING_FLAGS -Werror)
endif()

# Four ways the project's own targets see the header: from parts/ (development) or from the generated single header
# (what users copy), each with or without torch. The test suite runs against all of them.
function(_trainloop_dev_interface name include_dir with_torch)
  add_library(${name} INTERFACE)
  target_include_directories(${name} INTERFACE "${include_dir}")
  target_compile_features(${name} INTERFACE cxx_std_17)
  if(with_torch)
    target_compile_definitions(${name} INTERFACE TRAINLOOP_WITH_TORCH=1 TRAINLOOP_WITH_AMP=${_with_amp}
                               TRAINLOOP_WITH_DISTRIBUTED=${_with_distributed})
    target_link_libraries(${name} INTERFACE torch ZLIB::ZLIB)
  else()
    target_compile_definitions(${name} INTERFACE TRAINLOOP_WITH_TORCH=0 TRAINLOOP_WITH_AMP=0 TRAINLOOP_WITH_DISTRIBUTED=0)
  endif()
endfunction()
_trainloop_dev_interface(trainloop_dev_core_parts "${PROJECT_SOURCE_DIR}" OFF)
_trainloop_dev_interface(trainloop_dev_core_single "${PROJECT_SOURCE_DIR}/single_include" OFF)
if(TRAINLOOP_WITH_TORCH)
  _trainloop_dev_interface(trainloop_dev_torch_parts "${PROJECT_SOURCE_DIR}" ON)
  _trainloop_dev_interface(trainloop_dev_torch_single "${PROJECT_SOURCE_DIR}/single_include" ON)

  # One precompiled <torch/torch.h> shared by every torch target: parsing it is most of the build time.
  file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/trainloop_torch_pch.cpp" "// hosts the precompiled header\n")
  add_library(trainloop_torch_pch STATIC "${CMAKE_CURRENT_BINARY_DIR}/trainloop_torch_pch.cpp")
  target_link_libraries(trainloop_torch_pch PUBLIC torch)
  target_compile_features(trainloop_torch_pch PUBLIC cxx_std_17)
  target_compile_options(trainloop_torch_pch PRIVATE ${TRAINLOOP_WARNING_FLAGS})
  target_precompile_headers(trainloop_torch_pch PUBLIC <torch/torch.h> <zlib.h>)
endif()

# trainloop_target(name [TORCH] [SINGLE] SOURCES ...): an executable with warnings on, built against the chosen header.
function(trainloop_target name)
  cmake_parse_arguments(ARG "TORCH;SINGLE" "" "SOURCES" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_options(${name} PRIVATE ${TRAINLOOP_WARNING_FLAGS})
  set(flavour core)
  if(ARG_TORCH)
    set(flavour torch)
    target_precompile_headers(${name} REUSE_FROM trainloop_torch_pch)
  endif()
  if(ARG_SINGLE)
    target_link_libraries(${name} PRIVATE trainloop_dev_${flavour}_single)
  else()
    target_link_libraries(${name} PRIVATE trainloop_dev_${flavour}_parts)
  endif()
endfunction()
