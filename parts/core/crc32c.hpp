// trainloop: CRC-32C (Castagnoli). TensorBoard's TFRecord framing uses it, and checkpoint files carry one over their
// whole payload. On x86-64 with SSE4.2 (every x86-64 CPU since 2008) the CPU's crc32 instruction does it (~8 GB/s,
// chosen at run time); elsewhere slicing-by-8 tables (~2 GB/s). Either way, checking a checkpoint costs little beside
// reading it.
#pragma once
#include "parts/core/config.hpp"  // first: the feature macros decide what follows
#include <array>
#include <cstdint>
#include <cstring>
// The intrinsics header (large) only where the definitions are compiled.
#if TRAINLOOP_DETAIL_DEFINE_API && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define TRAINLOOP_DETAIL_CRC32C_SSE42 1
#endif

TRAINLOOP_DETAIL_BEGIN

namespace detail {
using Crc32cTables = std::array<std::array<std::uint32_t, 256>, 8>;
TRAINLOOP_DETAIL_API const Crc32cTables& crc32c_tables();

/// The portable CRC-32C (tables); crc32c_update picks the CPU's instruction when it has one.
TRAINLOOP_DETAIL_API std::uint32_t crc32c_update_portable(std::uint32_t crc, const void* data, std::size_t size);

/// Continues a CRC-32C over more bytes: start with `crc32c_update(0, ...)`; "123456789" -> 0xE3069283.
TRAINLOOP_DETAIL_API std::uint32_t crc32c_update(std::uint32_t crc, const void* data, std::size_t size);
inline std::uint32_t crc32c(const void* data, std::size_t size) { return crc32c_update(0, data, size); }
}  // namespace detail

#if TRAINLOOP_DETAIL_DEFINE_API  // compiled once under TRAINLOOP_IMPLEMENTATION; inline in header-only TUs
namespace detail {
TRAINLOOP_DETAIL_API const Crc32cTables& crc32c_tables() {
  static const Crc32cTables tables = [] {
    Crc32cTables t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected polynomial
      t[0][i] = c;
    }
    for (std::size_t i = 0; i < 256; ++i)
      for (std::size_t k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
    return t;
  }();
  return tables;
}
TRAINLOOP_DETAIL_API std::uint32_t crc32c_update_portable(std::uint32_t crc, const void* data, std::size_t size) {
  const Crc32cTables& t = crc32c_tables();
  const auto* bytes = static_cast<const unsigned char*>(data);
  crc = ~crc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  constexpr bool little_endian = false;  // the slicing tables assume little-endian words: go byte by byte
#else
  constexpr bool little_endian = true;
#endif
  for (; little_endian && size >= 8; size -= 8, bytes += 8) {
    std::uint32_t low, high;
    std::memcpy(&low, bytes, 4);
    std::memcpy(&high, bytes + 4, 4);
    low ^= crc;
    crc = t[7][low & 0xFF] ^ t[6][(low >> 8) & 0xFF] ^ t[5][(low >> 16) & 0xFF] ^ t[4][low >> 24] ^
          t[3][high & 0xFF] ^ t[2][(high >> 8) & 0xFF] ^ t[1][(high >> 16) & 0xFF] ^ t[0][high >> 24];
  }
  for (; size > 0; --size, ++bytes) crc = t[0][(crc ^ *bytes) & 0xFF] ^ (crc >> 8);
  return ~crc;
}
#ifdef TRAINLOOP_DETAIL_CRC32C_SSE42
__attribute__((target("sse4.2"))) inline std::uint32_t crc32c_update_sse42(std::uint32_t crc, const void* data,
                                                                          std::size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::uint64_t wide = ~crc;
  for (; size >= 8; size -= 8, bytes += 8) {
    std::uint64_t word;
    std::memcpy(&word, bytes, 8);
    wide = _mm_crc32_u64(wide, word);
  }
  auto narrow = static_cast<std::uint32_t>(wide);
  for (; size > 0; --size, ++bytes) narrow = _mm_crc32_u8(narrow, *bytes);
  return ~narrow;
}
#endif
TRAINLOOP_DETAIL_API std::uint32_t crc32c_update(std::uint32_t crc, const void* data, std::size_t size) {
#ifdef TRAINLOOP_DETAIL_CRC32C_SSE42
  static const bool has_sse42 = __builtin_cpu_supports("sse4.2");
  if (has_sse42) return crc32c_update_sse42(crc, data, size);
#endif
  return crc32c_update_portable(crc, data, size);
}
}  // namespace detail
#endif  // TRAINLOOP_DETAIL_DEFINE_API

TRAINLOOP_DETAIL_END
