# The installed layout (what the vcpkg port and every find_package / pkg-config consumer see):
#   include/trainloop.hpp                 the single header (the parts are not needed by consumers)
#   share/trainloop/                      trainloopConfig.cmake, trainloopConfigVersion.cmake, trainloopTargets.cmake,
#                                         trainloopHelpers.cmake
#   share/pkgconfig/trainloop.pc          for Makefile users
#   share/doc/trainloop/LICENSE
# A header-only package is architecture-independent: everything goes under share/, and the version file does not
# compare the consumer's pointer size.
include(CMakePackageConfigHelpers)
set(TRAINLOOP_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/trainloop" CACHE STRING
    "Where the CMake package goes, relative to the prefix")
set(TRAINLOOP_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig" CACHE STRING
    "Where trainloop.pc goes, relative to the prefix")

install(TARGETS trainloop EXPORT trainloopTargets)
install(FILES "${PROJECT_SOURCE_DIR}/single_include/trainloop.hpp" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT trainloopTargets NAMESPACE trainloop:: DESTINATION "${TRAINLOOP_INSTALL_CMAKEDIR}")
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/trainloopConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/trainloopConfig.cmake" INSTALL_DESTINATION "${TRAINLOOP_INSTALL_CMAKEDIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/trainloopConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/trainloopConfig.cmake" "${PROJECT_BINARY_DIR}/trainloopConfigVersion.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/trainloopHelpers.cmake" DESTINATION "${TRAINLOOP_INSTALL_CMAKEDIR}")
install(FILES "${PROJECT_SOURCE_DIR}/LICENSE" DESTINATION "${CMAKE_INSTALL_DATADIR}/doc/trainloop")

# pkg-config: the include folder relative to the .pc file (the prefix can move), the definitions the package was
# configured with, and with torch the LibTorch it was configured against (LibTorch ships no .pc file of its own, so
# its folders are recorded here as found).
set(_pc_cflags "")
foreach(definition ${_trainloop_definitions})
  string(APPEND _pc_cflags " -D${definition}")
endforeach()
set(_pc_libs "")
if(TRAINLOOP_WITH_TORCH)
  foreach(dir ${TORCH_INCLUDE_DIRS})  # not the compiler's own folders: -isystem /usr/include breaks #include_next
    if(NOT dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES AND NOT dir STREQUAL "/usr/include")
      string(APPEND _pc_cflags " -isystem ${dir}")
    endif()
  endforeach()
  if(TORCH_CXX_FLAGS)
    string(APPEND _pc_cflags " ${TORCH_CXX_FLAGS}")
  endif()
  if(TRAINLOOP_WITH_DISTRIBUTED)  # what c10d's headers need; Torch's targets carry them for CMake users
    string(APPEND _pc_cflags " -DUSE_DISTRIBUTED -DUSE_C10D_GLOO")
  endif()
  set(_torch_libdir "")
  foreach(library ${TORCH_LIBRARIES})
    if(library MATCHES "/libc10\\.(so|dylib)$")
      get_filename_component(_torch_libdir "${library}" DIRECTORY)
    endif()
  endforeach()
  if(NOT _torch_libdir AND TORCH_INSTALL_PREFIX)
    set(_torch_libdir "${TORCH_INSTALL_PREFIX}/lib")
  endif()
  set(_torch_names torch torch_cpu c10)
  foreach(cuda_library torch_cuda c10_cuda)
    if(EXISTS "${_torch_libdir}/lib${cuda_library}.so")
      list(APPEND _torch_names ${cuda_library})
    endif()
  endforeach()
  # --no-as-needed: libtorch.so registers the operators; nothing references it by symbol.
  if(NOT _torch_libdir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)
    string(APPEND _pc_libs "-L${_torch_libdir} -Wl,-rpath,${_torch_libdir} ")
  endif()
  string(APPEND _pc_libs "-Wl,--no-as-needed")
  foreach(name ${_torch_names})
    string(APPEND _pc_libs " -l${name}")
  endforeach()
  string(APPEND _pc_libs " -Wl,--as-needed -lz")
  if(TRAINLOOP_WITH_IMAGE_IO)
    string(APPEND _pc_libs " -lturbojpeg -lpng")
  endif()
endif()
set(TRAINLOOP_PC_CFLAGS "${_pc_cflags}")
set(TRAINLOOP_PC_LIBS "${_pc_libs}")
file(RELATIVE_PATH _pc_to_prefix "/${TRAINLOOP_INSTALL_PKGCONFIGDIR}" "/")
string(REGEX REPLACE "/$" "" TRAINLOOP_PC_TO_PREFIX "${_pc_to_prefix}")
configure_file("${PROJECT_SOURCE_DIR}/cmake/trainloop.pc.in" "${PROJECT_BINARY_DIR}/trainloop.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/trainloop.pc" DESTINATION "${TRAINLOOP_INSTALL_PKGCONFIGDIR}")
