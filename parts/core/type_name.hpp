// trainloop: readable type names for run-time error messages ("Net::training_step returned ...").
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <string>
#include <typeinfo>
#if TRAINLOOP_DETAIL_DEFINE_API
#include <cstdlib>
#if defined(__GNUG__) || defined(__clang__)
#include <cxxabi.h>
#endif
#endif

TRAINLOOP_DETAIL_BEGIN
namespace detail {
TRAINLOOP_DETAIL_API std::string demangle(const char* mangled);
/// A mangled type name made readable, with trainloop's inline ABI namespace left out ("trainloop::EMA"): names go
/// into checkpoint keys and messages, which must not change with the build flags.
TRAINLOOP_DETAIL_API std::string readable_type_name(const char* mangled);
/// The static type's name (see readable_type_name).
template <class T>
std::string type_name() {
  return readable_type_name(typeid(T).name());
}

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
TRAINLOOP_DETAIL_API std::string demangle(const char* mangled) {
#if defined(__GNUG__) || defined(__clang__)
  int status = 0;
  struct Freed {  // __cxa_demangle's buffer is malloc'ed (no <memory> needed for one free)
    char* text;
    ~Freed() { std::free(text); }
  } demangled{abi::__cxa_demangle(mangled, nullptr, nullptr, &status)};
  if (status == 0 && demangled.text) return demangled.text;
#endif
  return mangled;
}
#define TRAINLOOP_DETAIL_STRINGIFY2(x) #x
#define TRAINLOOP_DETAIL_STRINGIFY(x) TRAINLOOP_DETAIL_STRINGIFY2(x)
TRAINLOOP_DETAIL_API std::string readable_type_name(const char* mangled) {
  std::string name = demangle(mangled);
  const std::string abi = "trainloop::" TRAINLOOP_DETAIL_STRINGIFY(TRAINLOOP_DETAIL_ABI_NAME) "::";
  for (auto at = name.find(abi); at != std::string::npos; at = name.find(abi, at)) name.replace(at, abi.size(), "trainloop::");
  return name;
}
#endif  // TRAINLOOP_DETAIL_DEFINE_API
}  // namespace detail
TRAINLOOP_DETAIL_END
