// Convolution as an implicit GEMM on the zero-padded image (AVX2), for conv2d.cpp.
//
// Output pixel p = (oh, ow) reads, for k = (c*KH + kh)*KW + kw, element
// pix[p] + off[k] of the padded image xp (C, HP, WP), with
// pix[p] = oh*stride*WP + ow*stride and off[k] = (c*HP + kh)*WP + kw: the
// column matrix B (P, K), B(p, k) = xp[pix[p] + off[k]], is never written.
// Both kernels keep the output channels in the vector lanes (16 per tile)
// and work on transposed matrices, (P, OC) and (K, OC), which conv2d.cpp
// converts from and to its (OC, P) planes with transpose_to_planes and
// transpose_from_planes:
// - forward: outT (P, OC) = B @ w^T; a 6-pixel x 16-channel tile sums over
//   k in 12 registers. Only real pixels are computed, at any stride.
//   (The kernel it replaced ran the lanes over a WP-wide grid of pixels,
//   whose WP-OW garbage columns cost up to 47% more work at 7x7, and measured
//   1.07-1.3x slower on resnet20's stride-1 shapes.)
// - dW: dwT (K, OC) += B^T @ doutT; a 6-k x 16-channel tile sums over the
//   pixels in 12 registers, each lane adding its pixels in order (the result
//   does not depend on timing).
#pragma once
#ifdef __AVX2__
#include <cstdint>
#include <vector>

#include "autograd/conv_dims.h"

namespace qf::detail {

constexpr int64_t kImplicitOR = 16;  // output channels per tile (2 vectors)
constexpr int64_t kImplicitPR = 6;   // pixels per forward tile (broadcast from xp)
constexpr int64_t kImplicitKR = 6;   // k per dW tile (broadcast from xp)

struct ImplicitConv {
    std::vector<float> wpk;     // w^T as panels of 16 channels (OCp/16, K, 16), zero past OC; empty for dW
    std::vector<int32_t> off;   // off[k], padded to Kp with 0 (rows computed, never used)
    std::vector<int32_t> pix;   // pix[p], padded to Pp with pix[P-1] (pixels computed, never used)
    int64_t K, Kp, P, Pp, OCp;  // Kp, Pp, OCp: K, P, OC rounded up to the tiles
    int64_t HP, WP;             // the padded planes
};

// The offsets of convolution d, and its weights w (OC, K) packed for the
// forward; w may be null when only dW is wanted.
ImplicitConv implicit_prepare(const float* w, const ConvDims& d);

// outT (Pp, OCp) = B @ w^T for one padded image xp.
void implicit_forward(const ImplicitConv& ic, const float* xp, float* outT);

// dwT (Kp, OCp) += B^T @ gT for one padded image xp and its dout transposed,
// gT (P, OCp), zero in the channels past OC.
void implicit_weight_grad(const ImplicitConv& ic, const float* xp, const float* gT, float* dwT);

// out (OC, P) = t^T + bias (bias may be null), or out += t^T (accumulate);
// t is (P, ld), ld >= OC.
void transpose_to_planes(const float* t, int64_t ld, int64_t OC, int64_t P, const float* bias,
                         bool accumulate, float* out);

// t (P, ld) = g^T for g (OC, P), and zero in the columns OC .. ld-1.
void transpose_from_planes(const float* g, int64_t OC, int64_t P, float* t, int64_t ld);

}  // namespace qf::detail
#endif  // __AVX2__
