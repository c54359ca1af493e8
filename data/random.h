// Small random-number helpers for data/: stream seeding and uniform draws.
//
// The loader's promise is that epoch order and augmentation depend only on
// (seed, epoch, sample index). std::uniform_*_distribution are implemented
// differently by each standard library, so the draws here are written out:
// the same seed gives the same batches with any compiler on any machine.
#pragma once
#include <cstdint>
#include <random>

namespace qf::data {

// splitmix64's finalizer: a bijective 64-bit mix, so nearby inputs (epoch 3
// vs epoch 4) give unrelated outputs.
inline uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// A seed for one stream, derived from up to three coordinates.
inline uint64_t stream_seed(uint64_t seed, uint64_t a, uint64_t b = 0) {
    return mix64(mix64(mix64(seed) ^ a) ^ b);
}

// Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; the tiny bias
// for huge n is irrelevant for shuffling datasets).
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(rng()) * n) >> 64);
}
inline uint32_t uniform_below(std::mt19937& rng, uint32_t n) {
    return static_cast<uint32_t>((static_cast<uint64_t>(rng()) * n) >> 32);
}

// Uniform float in [0, 1) from the top 24 bits of one draw.
inline float uniform_unit(std::mt19937& rng) {
    return static_cast<float>(rng() >> 8) * (1.0f / 16777216.0f);
}
inline float uniform_range(std::mt19937& rng, float lo, float hi) {
    return lo + (hi - lo) * uniform_unit(rng);
}

}  // namespace qf::data
