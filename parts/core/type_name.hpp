// trainloop: readable type names for run-time error messages ("Net::training_step returned ...").
#pragma once
#include <cstdlib>
#include <string>
#include <typeinfo>
#if defined(__GNUG__) || defined(__clang__)
#include <cxxabi.h>
#endif

TRAINLOOP_DETAIL_BEGIN
namespace detail {
inline std::string demangle(const char* mangled) {
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
/// The static type's name, with trainloop's inline ABI namespace left out ("trainloop::EMA"): names go into
/// checkpoint keys and messages, which must not change with the build flags.
template <class T>
std::string type_name() {
  std::string name = demangle(typeid(T).name());
  const std::string abi = "trainloop::" TRAINLOOP_DETAIL_STRINGIFY(TRAINLOOP_DETAIL_ABI_NAME) "::";
  for (auto at = name.find(abi); at != std::string::npos; at = name.find(abi, at)) name.replace(at, abi.size(), "trainloop::");
  return name;
}
}  // namespace detail
TRAINLOOP_DETAIL_END
