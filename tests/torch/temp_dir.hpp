// A temporary folder for one test, removed when the test ends.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    const char* base = std::getenv("TRAINLOOP_TEST_TMP");
    std::filesystem::path root = base ? base : std::filesystem::temp_directory_path();
    std::filesystem::create_directories(root);
    std::string pattern = (root / "trainloop-test-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed under " + root.string());
    path = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// doctest::Contains from a std::string (doctest takes a C string and keeps its own copy).
#include <doctest/doctest.h>
inline doctest::Contains contains(const std::string& text) { return doctest::Contains(text.c_str()); }

#include <fstream>
#include <iterator>
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
