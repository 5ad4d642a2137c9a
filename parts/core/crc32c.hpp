// trainloop: CRC-32C (Castagnoli). TensorBoard's TFRecord framing uses it, and checkpoint files carry one over their
// whole payload. Slicing-by-8 (eight table lookups per 8 bytes), so checking a large checkpoint costs little beside
// reading it.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>

TRAINLOOP_DETAIL_BEGIN

namespace detail {
using Crc32cTables = std::array<std::array<std::uint32_t, 256>, 8>;
inline const Crc32cTables& crc32c_tables() {
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

/// Continues a CRC-32C over more bytes: start with `crc32c_update(0, ...)`; "123456789" -> 0xE3069283.
inline std::uint32_t crc32c_update(std::uint32_t crc, const void* data, std::size_t size) {
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
inline std::uint32_t crc32c(const void* data, std::size_t size) { return crc32c_update(0, data, size); }
}  // namespace detail

TRAINLOOP_DETAIL_END
