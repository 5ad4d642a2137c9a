// trainloop: readable type names for run-time error messages ("Net::training_step returned ...").
#pragma once
#include <cstdlib>
#include <memory>
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
  std::unique_ptr<char, void (*)(void*)> demangled(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  if (status == 0 && demangled) return demangled.get();
#endif
  return mangled;
}
/// The static type's name; `demangle(typeid(object).name())` gives an object's dynamic type.
template <class T>
std::string type_name() {
  return demangle(typeid(T).name());
}
}  // namespace detail
TRAINLOOP_DETAIL_END
