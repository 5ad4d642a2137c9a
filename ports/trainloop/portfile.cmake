# trainloop is header-only: the release tarball (tools/release.sh) holds the single header, the CMake files and the
# license, and its bytes are reproducible from the tagged tree, so its SHA512 can be checked before it is published.
vcpkg_download_distfile(ARCHIVE
    URLS "https://github.com/trainloop/trainloop/releases/download/v${VERSION}/trainloop-${VERSION}.tar.gz"
    FILENAME "trainloop-${VERSION}.tar.gz"
    SHA512 b951bc7784a5e307a1a8a7bf912f63d9845be02e5242e37eb2e000f86446116dd1c280f93a1abebf5bec54e1f4421ea3cb4835b383685cf0fbe318c61f03bea4
)
vcpkg_extract_source_archive(SOURCE_PATH ARCHIVE "${ARCHIVE}")

set(VCPKG_BUILD_TYPE release)  # header-only: nothing differs between debug and release

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
    FEATURES
        torch TRAINLOOP_WITH_TORCH
        amp TRAINLOOP_WITH_AMP
        distributed TRAINLOOP_WITH_DISTRIBUTED
        image-io TRAINLOOP_WITH_IMAGE_IO
)

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        ${FEATURE_OPTIONS}
        -DTRAINLOOP_BUILD_TESTS=OFF
        -DTRAINLOOP_BUILD_EXAMPLES=OFF
        -DTRAINLOOP_BUILD_BENCH=OFF
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/trainloop)
vcpkg_fixup_pkgconfig()

# The package installs nothing under lib/; the license goes to share/trainloop/copyright instead of share/doc.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/debug" "${CURRENT_PACKAGES_DIR}/share/doc")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
