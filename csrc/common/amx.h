#pragma once
// The AMX tile instructions as inline assembly, for loops that run only where cpu_level() is
// CpuLevel::kAmx (common/cpu_levels.h). Written as asm rather than g++ 12's <immintrin.h> forms:
// its _tile_loadd does not tell the compiler that it reads memory, so a buffer's stores may move
// past the tile load that reads them, and its _tile_loadconfig declares an 8-byte operand for the
// 64-byte configuration. The "memory" clobbers here keep each tile load after the stores it reads
// and each tile store before the loads of its result. Tile numbers are template arguments (the
// instructions encode them).
#include <cstdint>

namespace cvops::amx {

// Palette 1: 8 tiles, each up to 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows × 64 bytes: an int8 operand of 16 × 64, or an int32 accumulator of 16 × 16.
inline TileConfig full_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  return config;
}

inline void load_config(const TileConfig& config) {
  __asm__ volatile("ldtilecfg %0" : : "m"(config));
}

// Returns the tile state to its initial (unused) form, so that context switches stop saving it.
inline void release() { __asm__ volatile("tilerelease" ::: "memory"); }

template <int Tile>
inline void zero() {
  __asm__ volatile("tilezero %%tmm%c0" : : "i"(Tile));
}

// 16 rows of 64 bytes, row r at base + r·stride.
template <int Tile>
inline void load(const void* base, int64_t stride) {
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2"
                   :
                   : "r"(base), "r"(stride), "i"(Tile)
                   : "memory");
}

template <int Tile>
inline void store(void* base, int64_t stride) {
  __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)"
                   :
                   : "r"(base), "r"(stride), "i"(Tile)
                   : "memory");
}

// acc[m][n] += Σ_k a[m][k] · b[k / 4][4·n + k % 4] in int32 over signed bytes (TDPBSSD): b holds
// K / 4 rows, each the 4 bytes k = 4·row .. 4·row + 3 of every column n (the "VNNI" layout).
template <int Acc, int A, int B>
inline void dot_int8() {
  __asm__ volatile("tdpbssd %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(Acc), "i"(A), "i"(B));
}

}  // namespace cvops::amx
