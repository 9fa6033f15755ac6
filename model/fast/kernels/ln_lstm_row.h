// The per-row math of a layer-norm LSTM step, forward and backward, and the
// argument checks of the HyperLSTM step kernels (model/fast/kernels/hyper_gates.cc).
//
// A layer-norm LSTM step, per batch row, from the gate pre-activations
// pre (4n) = [i | j | f | o]:
//   a   = sigmoid(LN_k(pre_k) * gain_k + offset_k)   per gate k
//         (gain / offset carry the factor 2 of tanh(x) = 2 s(2x) - 1 and the
//         forget bias, see model/fast/hyper_recurrence.py)
//   c   = c_prev * a_f + a_i * (2 a_j - 1) * mask
//   h   = tanh(LN(c) * c_gain + c_offset) * a_o
// ``saved`` keeps per row [x_hat (4n) | a (4n) | c_hat (n) | tanh (n) |
// 1/sigma of the 4 gates (4) | 1/sigma of c (1)] for the backward.
#ifndef RPCL_KERNELS_LN_LSTM_ROW_H_
#define RPCL_KERNELS_LN_LSTM_ROW_H_

#include <cmath>
#include <functional>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"


namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using Arr = Eigen::Map<Eigen::ArrayXf>;
using CArr = Eigen::Map<const Eigen::ArrayXf>;

constexpr int kSavedExtra = 5;  // 4 gate scales + the cell's

// Scratch rows are Eigen arrays (aligned to EIGEN_MAX_ALIGN_BYTES, as
// TensorFlow's buffers are): Eigen's vectorised reductions and functions
// treat the unaligned head of a buffer with scalar code, so a buffer at a
// varying alignment (std::vector's) would change the last bits from call to
// call.  With aligned buffers every call computes bit-identical results.
const float* Data(const Tensor& t) {
  return t.NumElements() ? t.flat<float>().data() : nullptr;
}
float* Data(Tensor* t) { return t->flat<float>().data(); }

// Layer norm of x[0..n) into x_hat; returns 1/sqrt(var + eps).
inline float Normalize(const float* x, int n, float eps, float* x_hat) {
  CArr in(x, n);
  Arr out(x_hat, n);
  out = in - in.mean();
  const float rs = 1.f / std::sqrt(out.square().mean() + eps);
  out *= rs;
  return rs;
}

// dL/dx of the layer norm, given g = dL/dx_hat, into out.
inline void NormGrad(const float* g, const float* x_hat, float rs, int n,
                     float* out) {
  CArr gv(g, n), xv(x_hat, n);
  const float mg = gv.mean(), mgx = (gv * xv).mean();
  Arr(out, n) = rs * (gv - mg - xv * mgx);
}

// The cell's parameters (all float, contiguous).
struct CellParams {
  const float *gain, *offset, *c_gain, *c_offset;  // (4n), (4n), (n), (n)
  int n;
  float eps;
};

// Forward of one row from pre (4n, overwritten); mask may be null.
void CellForwardRow(const CellParams& p, float* pre, const float* c_prev,
                    const float* mask, float* sv, float* c_out, float* h_out) {
  const int n = p.n;
  float *x_hat = sv, *act = sv + 4 * n, *c_hat = sv + 8 * n, *ct = sv + 9 * n,
        *rs = sv + 10 * n;
  for (int k = 0; k < 4; ++k)
    rs[k] = Normalize(pre + k * n, n, p.eps, x_hat + k * n);
  Arr(act, 4 * n) =
      (CArr(x_hat, 4 * n) * CArr(p.gain, 4 * n) + CArr(p.offset, 4 * n))
          .logistic();
  CArr si(act, n), sj(act + n, n), sf(act + 2 * n, n), so(act + 3 * n, n);
  Arr c(c_out, n);
  if (mask)
    c = CArr(c_prev, n) * sf + si * (2.f * sj - 1.f) * CArr(mask, n);
  else
    c = CArr(c_prev, n) * sf + si * (2.f * sj - 1.f);
  rs[4] = Normalize(c_out, n, p.eps, c_hat);
  Arr tv(ct, n);
  tv = (CArr(c_hat, n) * CArr(p.c_gain, n) + CArr(p.c_offset, n)).tanh();
  Arr(h_out, n) = tv * so;
}

// Backward of one row given dh = dh_a + dh_b and the carried dc; writes
// pg = [d_u * x_hat | d_u | d_cy * c_hat | d_cy] (10n), d_pre (4n) and the
// carry dc * a_f.  tmp: 5n floats of scratch.
void CellBackwardRow(const CellParams& p, const float* sv, const float* dh_a,
                     const float* dh_b, const float* dc_in, const float* c_prev,
                     const float* mask, float* tmp, float* pg, float* d_pre,
                     float* dc_out) {
  const int n = p.n;
  const float *x_hat = sv, *act = sv + 4 * n, *c_hat = sv + 8 * n,
              *rs = sv + 10 * n;
  CArr si(act, n), sj(act + n, n), sf(act + 2 * n, n), so(act + 3 * n, n),
      ct(sv + 9 * n, n), ch(c_hat, n), cp(c_prev, n);
  Arr dh(tmp + 4 * n, n), dc(dc_out, n), dcy(pg + 9 * n, n);
  dh = CArr(dh_a, n) + CArr(dh_b, n);
  dcy = dh * so * (1.f - ct.square());
  Arr(pg + 8 * n, n) = dcy * ch;
  Arr(tmp, n) = dcy * CArr(p.c_gain, n);
  NormGrad(tmp, c_hat, rs[4], n, dc_out);
  dc += CArr(dc_in, n);
  Arr du0(pg + 4 * n, n), du1(pg + 5 * n, n), du2(pg + 6 * n, n),
      du3(pg + 7 * n, n);
  if (mask) {
    CArr m(mask, n);
    du0 = dc * (2.f * sj - 1.f) * m * si * (1.f - si);
    du1 = 2.f * dc * si * m * sj * (1.f - sj);
  } else {
    du0 = dc * (2.f * sj - 1.f) * si * (1.f - si);
    du1 = 2.f * dc * si * sj * (1.f - sj);
  }
  du2 = dc * cp * sf * (1.f - sf);
  du3 = dh * ct * so * (1.f - so);
  CArr du(pg + 4 * n, 4 * n), xh(x_hat, 4 * n);
  Arr(pg, 4 * n) = du * xh;
  Arr(tmp, 4 * n) = du * CArr(p.gain, 4 * n);
  for (int k = 0; k < 4; ++k)
    NormGrad(tmp + k * n, x_hat + k * n, rs[k], n, d_pre + k * n);
  dc *= sf;  // the carry to step t - 1
}

void ParallelRows(OpKernelContext* ctx, int rows, int64_t cost_per_row,
                  const std::function<void(int64_t, int64_t)>& fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, rows, cost_per_row,
                    fn);
}

absl::Status CheckMatrix(const Tensor& t, int64_t rows, int64_t cols,
                         const char* what) {
  if (t.dims() != 2 || t.dim_size(0) != rows || t.dim_size(1) != cols)
    return absl::InvalidArgumentError(what);
  return absl::OkStatus();
}

// Inputs first, first + 1: (4, n) gains / offsets; first + 2, first + 3: (n).
absl::Status CheckParams(OpKernelContext* ctx, int first, int64_t n) {
  for (int i = 0; i < 4; ++i)
    if (ctx->input(first + i).NumElements() != (i < 2 ? 4 * n : n))
      return absl::InvalidArgumentError("layer-norm parameters: (4, n), (n)");
  return absl::OkStatus();
}

CellParams Params(OpKernelContext* ctx, int gain, int offset, int c_gain,
                  int c_offset, int n, float eps) {
  auto at = [&](int i) { return i < 0 ? nullptr : Data(ctx->input(i)); };
  return CellParams{at(gain), at(offset), at(c_gain), at(c_offset), n, eps};
}

}  // namespace

#endif  // RPCL_KERNELS_LN_LSTM_ROW_H_
