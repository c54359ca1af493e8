// Stride-1 convolution as an implicit GEMM (AVX2), for conv2d.cpp.
//
// At stride 1, output pixel (oh, ow) reads input (oh+kh, ow+kw) of the padded
// image (HP x WP planes). Computed on a grid WP wide instead of OW (the last
// WP-OW columns of each row are garbage, dropped when copied out), grid
// column q = oh*WP + ow reads padded element q + off[k], off[k] = (c*HP + kh)*WP
// + kw: row k of the column matrix is a contiguous run of the padded image
// itself. So the kernel reads B straight from the padded image, with no
// im2col and no packing: grid (OC, Q) = w (OC, K) @ B (K, Q). For resnet20's
// shapes that costs 7-29% more multiply-adds (WP/OW) but measured 1.2-1.5x
// faster than im2col + BLIS per image.
#pragma once
#ifdef __AVX2__
#include <cstdint>
#include <vector>

#include "autograd/conv_dims.h"

namespace qf::detail {

constexpr int64_t kImplicitMR = 4;   // output channels per tile (broadcast)
constexpr int64_t kImplicitNR = 24;  // grid columns per tile (3 vectors)

struct ImplicitConv {
    std::vector<float> wpk;     // w as panels of kImplicitMR rows: (OCp/MR, K, MR), zero rows past OC
    std::vector<int32_t> off;   // off[k] for k = (c*KH + kh)*KW + kw
    int64_t OCp, HP, WP, Q;     // OC rounded up to MR; padded planes; grid columns (multiple of NR)
    int64_t xp_size;            // floats of the padded image, with the slack the last tiles read
};

// Packs w (OC, K) for convolution d and computes the offsets.
ImplicitConv implicit_prepare(const float* w, const ConvDims& d);

// grid (OCp, Q) = wpk @ B, B(k, q) = xp[off[k] + q]; 4x24 tiles, 12 accumulators.
void implicit_kernel(const ImplicitConv& ic, int64_t K, const float* xp, float* grid);

// dW of a stride-1 convolution from the same padded image, with no im2col:
// dW (OC, K) = dout (OC, P) @ B^T, B(k, p) = xp[off[k] + oh*WP + ow] for
// pixel p = oh*OW + ow. Computed transposed, dWt (K, OC) = B @ dout^T, so
// that the vector lanes run over output channels and the sum over pixels
// stays in registers: only the OH x OW pixels are visited (no garbage grid
// columns), and each lane adds its pixels in order (deterministic).
constexpr int64_t kWgradKR = 6;   // rows k per tile (broadcast from xp)
constexpr int64_t kWgradOR = 16;  // output channels per tile (2 vectors)

struct ImplicitWgrad {
    std::vector<int32_t> off;  // off[k] as in ImplicitConv, padded to Kp with 0 (rows computed, unused)
    int64_t Kp, OCp, HP, WP;   // K and OC rounded up to the tile; padded planes
};

ImplicitWgrad wgrad_prepare(const ConvDims& d);

// dwt (Kp, OCp) += B @ gt for one image: xp its padded image (C, HP, WP),
// gt (P, OCp) its dout transposed, zero in the columns past OC.
void wgrad_kernel(const ImplicitWgrad& wg, const float* xp, const float* gt, float* dwt,
                  const ConvDims& d);

}  // namespace qf::detail
#endif  // __AVX2__
