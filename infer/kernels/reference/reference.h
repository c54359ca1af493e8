// Reference integer kernels: one plain scalar function per op, written for
// reading, not speed (TFLite's reference integer_ops are the model). Each is
// the oracle its fast kernel is tested against, bit for bit, so each spells
// out the naive formula (zero points subtracted inside the loop) rather than
// the expanded one the fast kernels use.
//
// Shapes and layouts are those of kernels/params.h (NHWC int8 activations,
// OHWI int8 weights). Parameters must have passed validate(); `batch` is the
// leading dimension of every activation tensor. A null bias means zeros.
#pragma once
#include <cstdint>

#include "infer/kernels/params.h"

namespace qf::infer::reference {

// input [batch][in_h][in_w][in_c], weights [out_c][kh][kw][in_c/groups],
// bias [out_c], output [batch][out_h][out_w][out_c].
void conv2d(const Conv2dParams& p, int batch, const int8_t* input, const int8_t* weights,
            const int32_t* bias, int8_t* output);

// input [batch][in_features], weights [out_features][in_features],
// bias [out_features], output [batch][out_features].
void fully_connected(const FullyConnectedParams& p, int batch, const int8_t* input,
                     const int8_t* weights, const int32_t* bias, int8_t* output);

// Elementwise over `size` values (the residual add of two equal-shape tensors).
void add(const AddParams& p, int64_t size, const int8_t* input1, const int8_t* input2, int8_t* output);

// inputs[i] [batch][h][w][inputs[i].channels] -> output [batch][h][w][sum of channels].
void concat(const ConcatParams& p, int batch, const int8_t* const* inputs, int8_t* output);

// input [batch][in_h][in_w][channels] -> output [batch][out_h][out_w][channels].
void max_pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output);
void average_pool(const PoolParams& p, int batch, const int8_t* input, int8_t* output);

}  // namespace qf::infer::reference
