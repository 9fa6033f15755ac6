// The elementwise part of one HyperLSTM time step of the main cell, forward
// and backward, each as one kernel (method.md §2; Python side and fallback:
// model/fused_gates.py).
//
// Forward, per batch row b and gate k in (i, j, f, o), with the embedding
// factors ab (12, B, H) = [alpha_x (4) | alpha_h (4) | beta (4)] gate-major:
//   pre_k   = alpha_x_k * xm_k + alpha_h_k * hm_k + beta_k + bias_k
//   a_k     = sigmoid(LN(pre_k) * gain_k + offset_k)
//             (gain / offset carry the factor 2 of tanh(x) = 2 s(2x) - 1 and
//             the forget bias, see model/hyper_recurrence.py)
//   c       = c_prev * a_f + a_i * (2 a_j - 1) * mask
//   h       = tanh(LN(c) * c_gain + c_offset) * a_o
// ``saved`` keeps per row [x_hat (4H) | a (4H) | c_hat (H) | tanh (H) |
// 1/sigma of the 4 gates (4) | 1/sigma of c (1)] for the backward.
//
// Backward: the chain rule through the same step, given dL/dh (carry + the
// step's output gradient) and the carried dL/dc.  Outputs the gradients of ab
// (gate-major, for the embeddings' batched matmul), of the recurrent matmul's
// main-gate columns (d_pre * alpha_h), of xm (d_pre * alpha_x), the carried
// dL/dc_prev, and per row [d_u * x_hat (4H) | d_u (4H) | d_cy * c_hat (H) |
// d_cy (H) | d_pre (4H)] whose column sums over all steps and rows are the
// gradients of gain, offset, c_gain, c_offset and the bias.
#include <cmath>
#include <functional>
#include <vector>

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

constexpr int kSavedExtra = 5;  // 4 gate scales + the cell's

using Arr = Eigen::Map<Eigen::ArrayXf>;
using CArr = Eigen::Map<const Eigen::ArrayXf>;

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

void ParallelRows(OpKernelContext* ctx, int rows, int64_t cost_per_row,
                  const std::function<void(int64_t, int64_t)>& fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, rows, cost_per_row,
                    fn);
}

struct Dims {
  int batch, units, hw_width;
};

absl::Status CheckDims(const Tensor& ab, const Tensor& xm, const Tensor& hw,
                       const Tensor& c_prev, const Tensor& mask, Dims* d) {
  if (c_prev.dims() != 2) return absl::InvalidArgumentError("c_prev: (B, H)");
  d->batch = c_prev.dim_size(0);
  d->units = c_prev.dim_size(1);
  const int64_t b = d->batch, h = d->units;
  if (ab.dims() != 3 || ab.dim_size(0) != 12 || ab.dim_size(1) != b ||
      ab.dim_size(2) != h)
    return absl::InvalidArgumentError("ab: (12, B, H)");
  if (xm.dims() != 2 || xm.dim_size(0) != b || xm.dim_size(1) != 4 * h)
    return absl::InvalidArgumentError("xm: (B, 4H)");
  if (hw.dims() != 2 || hw.dim_size(0) != b || hw.dim_size(1) < 4 * h)
    return absl::InvalidArgumentError("hw: (B, F >= 4H)");
  if (mask.NumElements() != 0 &&
      (mask.dims() != 2 || mask.dim_size(0) != b || mask.dim_size(1) != h))
    return absl::InvalidArgumentError("mask: (B, H) or empty");
  d->hw_width = hw.dim_size(1);
  return absl::OkStatus();
}

class GatesForwardOp : public OpKernel {
 public:
  explicit GatesForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &eps_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &ab = ctx->input(0), &xm = ctx->input(1), &hw = ctx->input(2),
                 &c_prev = ctx->input(3), &mask = ctx->input(4),
                 &bias = ctx->input(5), &gain = ctx->input(6),
                 &offset = ctx->input(7), &c_gain = ctx->input(8),
                 &c_offset = ctx->input(9);
    Dims d;
    OP_REQUIRES_OK(ctx, CheckDims(ab, xm, hw, c_prev, mask, &d));
    const int B = d.batch, H = d.units, F = d.hw_width;
    const int S = 10 * H + kSavedExtra;
    Tensor* h_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, H}), &h_out));
    Tensor* c_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &c_out));
    Tensor* saved = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, S}), &saved));
    const float *pab = ab.flat<float>().data(), *pxm = xm.flat<float>().data(),
                *phw = hw.flat<float>().data(),
                *pc = c_prev.flat<float>().data(),
                *pmask = mask.NumElements() ? mask.flat<float>().data() : nullptr,
                *pbias = bias.flat<float>().data(),
                *pgain = gain.flat<float>().data(),
                *poff = offset.flat<float>().data(),
                *pcg = c_gain.flat<float>().data(),
                *pcb = c_offset.flat<float>().data();
    float *ph = h_out->flat<float>().data(), *pcn = c_out->flat<float>().data(),
          *psv = saved->flat<float>().data();
    const float eps = eps_;
    auto rows = [&](int64_t begin, int64_t end) {
      std::vector<float> pre(4 * H);
      for (int64_t b = begin; b < end; ++b) {
        float* sv = psv + b * S;
        float *x_hat = sv, *act = sv + 4 * H, *c_hat = sv + 8 * H,
              *ct = sv + 9 * H, *rs = sv + 10 * H;
        const float *xr = pxm + b * 4 * H, *hr = phw + b * F;
        for (int k = 0; k < 4; ++k) {
          const int64_t kh = static_cast<int64_t>(k) * H;
          CArr ax(pab + (k * B + b) * H, H), ah(pab + ((4 + k) * B + b) * H, H),
              bh(pab + ((8 + k) * B + b) * H, H);
          Arr(pre.data() + kh, H) = ax * CArr(xr + kh, H) +
                                    ah * CArr(hr + kh, H) + bh +
                                    CArr(pbias + kh, H);
          rs[k] = Normalize(pre.data() + kh, H, eps, x_hat + kh);
        }
        Arr(act, 4 * H) = (CArr(x_hat, 4 * H) * CArr(pgain, 4 * H) +
                           CArr(poff, 4 * H)).logistic();
        CArr si(act, H), sj(act + H, H), sf(act + 2 * H, H), so(act + 3 * H, H);
        Arr c(pcn + b * H, H);
        if (pmask)
          c = CArr(pc + b * H, H) * sf +
              si * (2.f * sj - 1.f) * CArr(pmask + b * H, H);
        else
          c = CArr(pc + b * H, H) * sf + si * (2.f * sj - 1.f);
        rs[4] = Normalize(c.data(), H, eps, c_hat);
        Arr tv(ct, H);
        tv = (CArr(c_hat, H) * CArr(pcg, H) + CArr(pcb, H)).tanh();
        Arr(ph + b * H, H) = tv * so;
      }
    };
    ParallelRows(ctx, B, 60 * 4 * H, rows);
  }

 private:
  float eps_;
};

class GatesBackwardOp : public OpKernel {
 public:
  explicit GatesBackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &ab = ctx->input(0), &xm = ctx->input(1), &hw = ctx->input(2),
                 &c_prev = ctx->input(3), &mask = ctx->input(4),
                 &saved = ctx->input(5), &dh_in = ctx->input(6),
                 &d_out = ctx->input(7), &dc_in = ctx->input(8),
                 &gain = ctx->input(9), &c_gain = ctx->input(10);
    Dims d;
    OP_REQUIRES_OK(ctx, CheckDims(ab, xm, hw, c_prev, mask, &d));
    const int B = d.batch, H = d.units, F = d.hw_width;
    const int S = 10 * H + kSavedExtra;
    OP_REQUIRES(ctx, saved.NumElements() == static_cast<int64_t>(B) * S,
                absl::InvalidArgumentError("saved: (B, 10H + 5)"));
    Tensor* d_ab = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({12, B, H}), &d_ab));
    Tensor* d_hwm = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, 4 * H}), &d_hwm));
    Tensor* d_xm = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, 4 * H}), &d_xm));
    Tensor* dc_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({B, H}), &dc_out));
    Tensor* pgrad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({B, 14 * H}), &pgrad));
    const float *pab = ab.flat<float>().data(), *pxm = xm.flat<float>().data(),
                *phw = hw.flat<float>().data(),
                *pc = c_prev.flat<float>().data(),
                *pmask = mask.NumElements() ? mask.flat<float>().data() : nullptr,
                *psv = saved.flat<float>().data(),
                *pdh = dh_in.flat<float>().data(),
                *pdo = d_out.flat<float>().data(),
                *pdc = dc_in.flat<float>().data(),
                *pgain = gain.flat<float>().data(),
                *pcg = c_gain.flat<float>().data();
    float *pdab = d_ab->flat<float>().data(),
          *pdhwm = d_hwm->flat<float>().data(),
          *pdxm = d_xm->flat<float>().data(),
          *pdcn = dc_out->flat<float>().data(),
          *ppg = pgrad->flat<float>().data();
    auto rows = [&](int64_t begin, int64_t end) {
      std::vector<float> dh_buf(H), dc_buf(H), tmp(4 * H);
      for (int64_t b = begin; b < end; ++b) {
        const float* sv = psv + b * S;
        const float *x_hat = sv, *act = sv + 4 * H, *c_hat = sv + 8 * H,
                    *rs = sv + 10 * H;
        CArr si(act, H), sj(act + H, H), sf(act + 2 * H, H), so(act + 3 * H, H),
            ct(sv + 9 * H, H), ch(c_hat, H), cp(pc + b * H, H);
        float* pg = ppg + b * 14 * H;
        Arr dh(dh_buf.data(), H), dc(dc_buf.data(), H), dcy(pg + 9 * H, H);
        dh = CArr(pdh + b * H, H) + CArr(pdo + b * H, H);
        dcy = dh * so * (1.f - ct.square());
        Arr(pg + 8 * H, H) = dcy * ch;
        Arr(tmp.data(), H) = dcy * CArr(pcg, H);
        NormGrad(tmp.data(), c_hat, rs[4], H, dc.data());
        dc += CArr(pdc + b * H, H);
        Arr(pdcn + b * H, H) = dc * sf;
        Arr du0(pg + 4 * H, H), du1(pg + 5 * H, H), du2(pg + 6 * H, H),
            du3(pg + 7 * H, H);
        if (pmask) {
          CArr m(pmask + b * H, H);
          du0 = dc * (2.f * sj - 1.f) * m * si * (1.f - si);
          du1 = 2.f * dc * si * m * sj * (1.f - sj);
        } else {
          du0 = dc * (2.f * sj - 1.f) * si * (1.f - si);
          du1 = 2.f * dc * si * sj * (1.f - sj);
        }
        du2 = dc * cp * sf * (1.f - sf);
        du3 = dh * ct * so * (1.f - so);
        CArr du(pg + 4 * H, 4 * H), xh(x_hat, 4 * H);
        Arr(pg, 4 * H) = du * xh;
        Arr(tmp.data(), 4 * H) = du * CArr(pgain, 4 * H);
        float* dpre = pg + 10 * H;
        for (int k = 0; k < 4; ++k)
          NormGrad(tmp.data() + k * H, x_hat + k * H, rs[k], H,
                   dpre + k * H);
        const float *xr = pxm + b * 4 * H, *hr = phw + b * F;
        for (int k = 0; k < 4; ++k) {
          const int64_t kh = static_cast<int64_t>(k) * H;
          const int64_t rx = (k * B + b) * H, rh = ((4 + k) * B + b) * H,
                        rb = ((8 + k) * B + b) * H;
          CArr dp(dpre + kh, H);
          Arr(pdab + rx, H) = dp * CArr(xr + kh, H);
          Arr(pdab + rh, H) = dp * CArr(hr + kh, H);
          Arr(pdab + rb, H) = dp;
          Arr(pdhwm + b * 4 * H + kh, H) = dp * CArr(pab + rh, H);
          Arr(pdxm + b * 4 * H + kh, H) = dp * CArr(pab + rx, H);
        }
      }
    };
    ParallelRows(ctx, B, 80 * 4 * H, rows);
  }
};

absl::Status ForwardShape(InferenceContext* c) {
  auto cp = c->input(3);
  DimensionHandle width;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(cp, 1), 10, &width));
  TF_RETURN_IF_ERROR(c->Add(width, kSavedExtra, &width));
  c->set_output(0, cp);
  c->set_output(1, cp);
  c->set_output(2, c->Matrix(c->Dim(cp, 0), width));
  return absl::OkStatus();
}

absl::Status BackwardShape(InferenceContext* c) {
  auto cp = c->input(3);
  DimensionHandle four, fourteen;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(cp, 1), 4, &four));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(cp, 1), 14, &fourteen));
  c->set_output(0, c->MakeShape({c->MakeDim(12), c->Dim(cp, 0), c->Dim(cp, 1)}));
  c->set_output(1, c->Matrix(c->Dim(cp, 0), four));
  c->set_output(2, c->Matrix(c->Dim(cp, 0), four));
  c->set_output(3, cp);
  c->set_output(4, c->Matrix(c->Dim(cp, 0), fourteen));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("RpclGatesForward")
    .Input("ab: float")
    .Input("xm: float")
    .Input("hw: float")
    .Input("c_prev: float")
    .Input("mask: float")
    .Input("bias: float")
    .Input("gain: float")
    .Input("offset: float")
    .Input("c_gain: float")
    .Input("c_offset: float")
    .Attr("epsilon: float")
    .Output("h: float")
    .Output("c: float")
    .Output("saved: float")
    .SetShapeFn(ForwardShape);

REGISTER_OP("RpclGatesBackward")
    .Input("ab: float")
    .Input("xm: float")
    .Input("hw: float")
    .Input("c_prev: float")
    .Input("mask: float")
    .Input("saved: float")
    .Input("dh: float")
    .Input("d_out: float")
    .Input("dc: float")
    .Input("gain: float")
    .Input("c_gain: float")
    .Output("d_ab: float")
    .Output("d_hwm: float")
    .Output("d_xm: float")
    .Output("dc_prev: float")
    .Output("pgrad: float")
    .SetShapeFn(BackwardShape);

REGISTER_KERNEL_BUILDER(
    Name("RpclGatesForward").Device(tensorflow::DEVICE_CPU), GatesForwardOp);
REGISTER_KERNEL_BUILDER(
    Name("RpclGatesBackward").Device(tensorflow::DEVICE_CPU), GatesBackwardOp);
