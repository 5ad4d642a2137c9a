// What each CUDA check program prints: one line per check, and the count of failed ones for its exit status.
#pragma once
#include <cstdio>
#include <string>

inline int failures = 0;
inline void report(const char* name, bool ok, const std::string& detail = "") {
  std::printf("%-70s %s %s\n", name, ok ? "ok" : "FAILED", detail.c_str());
  if (!ok) ++failures;
}
