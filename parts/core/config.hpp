// trainloop: configuration. Version (the one source of truth), feature macros, and the ABI namespace.
#pragma once

#define TRAINLOOP_VERSION_MAJOR 0
#define TRAINLOOP_VERSION_MINOR 1
#define TRAINLOOP_VERSION_PATCH 0
#define TRAINLOOP_VERSION_STRING "0.1.0"
#define TRAINLOOP_VERSION (TRAINLOOP_VERSION_MAJOR * 10000 + TRAINLOOP_VERSION_MINOR * 100 + TRAINLOOP_VERSION_PATCH)

// Feature switches are value macros (0 or 1), defaulted here so `#if TRAINLOOP_WITH_X` is always well formed.
#ifndef TRAINLOOP_WITH_TORCH
#define TRAINLOOP_WITH_TORCH 1
#endif
#ifndef TRAINLOOP_WITH_AMP
#define TRAINLOOP_WITH_AMP 0
#endif
#ifndef TRAINLOOP_WITH_DISTRIBUTED
#define TRAINLOOP_WITH_DISTRIBUTED 0
#endif
// Image files (ImageFolder, read_image): JPEG through libjpeg-turbo's TurboJPEG, PNG through libpng; link both.
#ifndef TRAINLOOP_WITH_IMAGE_IO
#define TRAINLOOP_WITH_IMAGE_IO 0
#endif
// The loggers (CSV, JSON lines, TensorBoard, MLflow, log_metrics_to) need <filesystem>, <random> and more that the
// Engine does not: a torch-free TU gets them only when it asks. The Trainer always has them.
#ifndef TRAINLOOP_WITH_LOGGERS
#define TRAINLOOP_WITH_LOGGERS TRAINLOOP_WITH_TORCH
#endif

// `(0 - X - 1) == 1` holds only when X expands to nothing (`#define TRAINLOOP_WITH_AMP`), which `#if X` would
// otherwise reject with an unreadable message.
#if (0 - TRAINLOOP_WITH_TORCH - 1) == 1
#error "trainloop: TRAINLOOP_WITH_TORCH is defined empty; define it as 0 or 1 (for example -DTRAINLOOP_WITH_TORCH=0)"
#elif TRAINLOOP_WITH_TORCH != 0 && TRAINLOOP_WITH_TORCH != 1
#error "trainloop: TRAINLOOP_WITH_TORCH must be 0 or 1 (for example -DTRAINLOOP_WITH_TORCH=0)"
#endif
#if (0 - TRAINLOOP_WITH_AMP - 1) == 1
#error "trainloop: TRAINLOOP_WITH_AMP is defined empty; define it as 0 or 1 (for example -DTRAINLOOP_WITH_AMP=1)"
#elif TRAINLOOP_WITH_AMP != 0 && TRAINLOOP_WITH_AMP != 1
#error "trainloop: TRAINLOOP_WITH_AMP must be 0 or 1 (for example -DTRAINLOOP_WITH_AMP=1)"
#endif
#if (0 - TRAINLOOP_WITH_DISTRIBUTED - 1) == 1
#error "trainloop: TRAINLOOP_WITH_DISTRIBUTED is defined empty; define it as 0 or 1 (for example -DTRAINLOOP_WITH_DISTRIBUTED=1)"
#elif TRAINLOOP_WITH_DISTRIBUTED != 0 && TRAINLOOP_WITH_DISTRIBUTED != 1
#error "trainloop: TRAINLOOP_WITH_DISTRIBUTED must be 0 or 1 (for example -DTRAINLOOP_WITH_DISTRIBUTED=1)"
#endif
#if (0 - TRAINLOOP_WITH_IMAGE_IO - 1) == 1
#error "trainloop: TRAINLOOP_WITH_IMAGE_IO is defined empty; define it as 0 or 1 (for example -DTRAINLOOP_WITH_IMAGE_IO=1)"
#elif TRAINLOOP_WITH_IMAGE_IO != 0 && TRAINLOOP_WITH_IMAGE_IO != 1
#error "trainloop: TRAINLOOP_WITH_IMAGE_IO must be 0 or 1 (for example -DTRAINLOOP_WITH_IMAGE_IO=1)"
#endif
#if (0 - TRAINLOOP_WITH_LOGGERS - 1) == 1
#error "trainloop: TRAINLOOP_WITH_LOGGERS is defined empty; define it as 0 or 1 (for example -DTRAINLOOP_WITH_LOGGERS=1)"
#elif TRAINLOOP_WITH_LOGGERS != 0 && TRAINLOOP_WITH_LOGGERS != 1
#error "trainloop: TRAINLOOP_WITH_LOGGERS must be 0 or 1 (for example -DTRAINLOOP_WITH_LOGGERS=1)"
#elif TRAINLOOP_WITH_TORCH && !TRAINLOOP_WITH_LOGGERS
#error "trainloop: TRAINLOOP_WITH_LOGGERS=0 is for the torch-free core; the Trainer always has its loggers"
#endif
#if !TRAINLOOP_WITH_TORCH && (TRAINLOOP_WITH_AMP || TRAINLOOP_WITH_DISTRIBUTED || TRAINLOOP_WITH_IMAGE_IO)
#error "trainloop: TRAINLOOP_WITH_AMP, TRAINLOOP_WITH_DISTRIBUTED and TRAINLOOP_WITH_IMAGE_IO need TRAINLOOP_WITH_TORCH=1"
#endif

// Separate compilation (stb's and doctest's way), for projects with several translation units: define
// TRAINLOOP_SEPARATE_COMPILATION=1 in every TU and TRAINLOOP_IMPLEMENTATION in exactly one (it implies the former). The
// cold, type-independent code (checkpoint files, option checks, the profiler's report, the model summary, the metric
// store's bookkeeping, the Trainer's type-independent members) is then compiled once, in that TU, and only declared
// everywhere else. Header-only (every such function `inline`, defined in every TU that uses it) is the default.
#ifndef TRAINLOOP_SEPARATE_COMPILATION
#ifdef TRAINLOOP_IMPLEMENTATION
#define TRAINLOOP_SEPARATE_COMPILATION 1
#else
#define TRAINLOOP_SEPARATE_COMPILATION 0
#endif
#endif
#if (0 - TRAINLOOP_SEPARATE_COMPILATION - 1) == 1
#error "trainloop: TRAINLOOP_SEPARATE_COMPILATION is defined empty; define it as 0 or 1 (for example -DTRAINLOOP_SEPARATE_COMPILATION=1)"
#elif TRAINLOOP_SEPARATE_COMPILATION != 0 && TRAINLOOP_SEPARATE_COMPILATION != 1
#error "trainloop: TRAINLOOP_SEPARATE_COMPILATION must be 0 or 1 (for example -DTRAINLOOP_SEPARATE_COMPILATION=1)"
#elif defined(TRAINLOOP_IMPLEMENTATION) && !TRAINLOOP_SEPARATE_COMPILATION
#error "trainloop: TRAINLOOP_IMPLEMENTATION is for separate compilation; it cannot go with TRAINLOOP_SEPARATE_COMPILATION=0"
#endif
#if TRAINLOOP_SEPARATE_COMPILATION
#define TRAINLOOP_DETAIL_API
#else
#define TRAINLOOP_DETAIL_API inline
#endif
// Whether this TU compiles the definitions of TRAINLOOP_DETAIL_API functions (each part keeps them in a guarded
// section after its declarations).
#if !TRAINLOOP_SEPARATE_COMPILATION || defined(TRAINLOOP_IMPLEMENTATION)
#define TRAINLOOP_DETAIL_DEFINE_API 1
#else
#define TRAINLOOP_DETAIL_DEFINE_API 0
#endif

#if __cplusplus < 201703L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 201703L)
#error "trainloop: C++17 or newer is required (-std=c++17)"
#endif

// The inline namespace encodes version and flags: translation units built with different flags get different
// symbols for every trainloop entity, so they link side by side instead of silently violating the ODR. Separate
// compilation is one of the flags: a function is inline in header-only TUs and not in the others.
#define TRAINLOOP_DETAIL_CAT2(a, b) a##b
#define TRAINLOOP_DETAIL_CAT(a, b) TRAINLOOP_DETAIL_CAT2(a, b)
#define TRAINLOOP_DETAIL_ABI_NAME                                                                                      \
  TRAINLOOP_DETAIL_CAT(                                                                                                \
      TRAINLOOP_DETAIL_CAT(                                                                                            \
          TRAINLOOP_DETAIL_CAT(TRAINLOOP_DETAIL_CAT(TRAINLOOP_DETAIL_CAT(v, TRAINLOOP_VERSION_MAJOR), _),             \
                               TRAINLOOP_VERSION_MINOR),                                                               \
          TRAINLOOP_DETAIL_CAT(_t, TRAINLOOP_WITH_TORCH)),                                                             \
      TRAINLOOP_DETAIL_CAT(TRAINLOOP_DETAIL_CAT(TRAINLOOP_DETAIL_CAT(_a, TRAINLOOP_WITH_AMP),                         \
                                                TRAINLOOP_DETAIL_CAT(_d, TRAINLOOP_WITH_DISTRIBUTED)),                 \
                           TRAINLOOP_DETAIL_CAT(_s, TRAINLOOP_SEPARATE_COMPILATION)))
#define TRAINLOOP_DETAIL_BEGIN namespace trainloop { inline namespace TRAINLOOP_DETAIL_ABI_NAME {
#define TRAINLOOP_DETAIL_END } }

TRAINLOOP_DETAIL_BEGIN
/// The version this header was built as, for run-time checks (for example, written into checkpoints).
inline constexpr const char* version_string = TRAINLOOP_VERSION_STRING;
inline constexpr bool with_torch = TRAINLOOP_WITH_TORCH == 1;
inline constexpr bool with_amp = TRAINLOOP_WITH_AMP == 1;
inline constexpr bool with_distributed = TRAINLOOP_WITH_DISTRIBUTED == 1;
TRAINLOOP_DETAIL_END
