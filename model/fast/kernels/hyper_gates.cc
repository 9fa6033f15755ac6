// The elementwise part of one HyperLSTM time step, forward and backward, as
// one kernel call per cell and direction (method.md §2; the Python side and
// the TensorFlow-op fallback: model/fast/fused_gates.py, model/fast/hyper_fused.py).
//
// The per-row math of a layer-norm LSTM step and the layout of ``saved``:
// ln_lstm_row.h.
//
// Main cell (RpclGates*): pre_k = alpha_x_k * xm_k + alpha_h_k * hm_k + beta_k
// + bias_k, with the embedding factors ab (12, B, H) = [alpha_x (4) | alpha_h
// (4) | beta (4)] gate-major as the batched embedding matmul makes them and
// hm the first 4H columns of the recurrent matmul's output hw.  Its backward
// returns the gradients of ab (gate-major), of hm's columns (d_pre * alpha_h)
// and of xm (d_pre * alpha_x).
// Hyper cell (RpclLnCell*): pre = xh + hw[:, offset:offset + 4n] + hhw.
//
// Both backwards also return the carried dL/dc_prev and per row the factors
// [d_u * x_hat (4n) | d_u (4n) | d_cy * c_hat (n) | d_cy (n)] (+ d_pre (4n)
// for the main cell), whose sums over rows and steps are the gradients of
// gain, offset, c_gain, c_offset (and the gate bias).

#include "ln_lstm_row.h"

namespace {

// Shapes shared by the main cell's ops: B, H, the width of hw; checks them.
absl::Status MainDims(OpKernelContext* ctx, int64_t* b, int64_t* h,
                      int64_t* f) {
  const Tensor &ab = ctx->input(0), &xm = ctx->input(1), &hw = ctx->input(2),
               &c_prev = ctx->input(3), &mask = ctx->input(4);
  if (c_prev.dims() != 2) return absl::InvalidArgumentError("c_prev: (B, H)");
  *b = c_prev.dim_size(0);
  *h = c_prev.dim_size(1);
  *f = hw.dims() == 2 ? hw.dim_size(1) : 0;
  if (ab.dims() != 3 || ab.dim_size(0) != 12 || ab.dim_size(1) != *b ||
      ab.dim_size(2) != *h)
    return absl::InvalidArgumentError("ab: (12, B, H)");
  TF_RETURN_IF_ERROR(CheckMatrix(xm, *b, 4 * *h, "xm: (B, 4H)"));
  if (hw.dims() != 2 || hw.dim_size(0) != *b || *f < 4 * *h)
    return absl::InvalidArgumentError("hw: (B, F >= 4H)");
  if (mask.NumElements() != 0)
    TF_RETURN_IF_ERROR(CheckMatrix(mask, *b, *h, "mask: (B, H) or empty"));
  return absl::OkStatus();
}

// RpclGatesForward(ab, xm, hw, c_prev, mask, bias, gain, offset, c_gain,
// c_offset) -> h, c, saved.
class GatesForwardOp : public OpKernel {
 public:
  explicit GatesForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &eps_));
  }

  void Compute(OpKernelContext* ctx) override {
    int64_t B, H, F;
    OP_REQUIRES_OK(ctx, MainDims(ctx, &B, &H, &F));
    OP_REQUIRES_OK(ctx, CheckParams(ctx, 6, H));
    OP_REQUIRES(ctx, ctx->input(5).NumElements() == 4 * H,
                absl::InvalidArgumentError("bias: (4, H)"));
    const int64_t S = 10 * H + kSavedExtra;
    Tensor *h_out, *c_out, *saved;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, H}), &h_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &c_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, S}), &saved));
    const float *ab = Data(ctx->input(0)), *xm = Data(ctx->input(1)),
                *hw = Data(ctx->input(2)), *c_prev = Data(ctx->input(3)),
                *mask = Data(ctx->input(4)), *bias = Data(ctx->input(5));
    const CellParams p = Params(ctx, 6, 7, 8, 9, H, eps_);
    float *h = Data(h_out), *c = Data(c_out), *sv = Data(saved);
    ParallelRows(ctx, B, 60 * 4 * H, [&](int64_t begin, int64_t end) {
      Eigen::ArrayXf pre(4 * H);  // aligned scratch (see Data)
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t k = 0; k < 4; ++k) {
          Arr(pre.data() + k * H, H) =
              CArr(ab + (k * B + b) * H, H) * CArr(xm + (b * 4 + k) * H, H) +
              CArr(ab + ((4 + k) * B + b) * H, H) * CArr(hw + b * F + k * H, H) +
              CArr(ab + ((8 + k) * B + b) * H, H) + CArr(bias + k * H, H);
        }
        CellForwardRow(p, pre.data(), c_prev + b * H,
                       mask ? mask + b * H : nullptr, sv + b * S, c + b * H,
                       h + b * H);
      }
    });
  }

 private:
  float eps_;
};

// RpclGatesBackward(ab, xm, hw, c_prev, mask, saved, dh, d_out, dc, gain,
// c_gain) -> d_ab, d_hwm, d_xm, dc_prev, pgrad (B, 14H).
class GatesBackwardOp : public OpKernel {
 public:
  explicit GatesBackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    int64_t B, H, F;
    OP_REQUIRES_OK(ctx, MainDims(ctx, &B, &H, &F));
    const int64_t S = 10 * H + kSavedExtra;
    OP_REQUIRES_OK(ctx, CheckMatrix(ctx->input(5), B, S, "saved: (B, 10H + 5)"));
    for (int i = 6; i < 9; ++i)
      OP_REQUIRES_OK(ctx, CheckMatrix(ctx->input(i), B, H, "dh, dc: (B, H)"));
    OP_REQUIRES(ctx, ctx->input(9).NumElements() == 4 * H &&
                         ctx->input(10).NumElements() == H,
                absl::InvalidArgumentError("gain (4, H), c_gain (H)"));
    Tensor *d_ab, *d_hwm, *d_xm, *dc_out, *pgrad;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({12, B, H}), &d_ab));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, 4 * H}), &d_hwm));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, 4 * H}), &d_xm));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({B, H}), &dc_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({B, 14 * H}), &pgrad));
    const float *ab = Data(ctx->input(0)), *xm = Data(ctx->input(1)),
                *hw = Data(ctx->input(2)), *c_prev = Data(ctx->input(3)),
                *mask = Data(ctx->input(4)), *sv = Data(ctx->input(5)),
                *dh = Data(ctx->input(6)), *d_out = Data(ctx->input(7)),
                *dc = Data(ctx->input(8));
    const CellParams p = Params(ctx, 9, -1, 10, -1, H, 0.f);
    float *dab = Data(d_ab), *dhwm = Data(d_hwm), *dxm = Data(d_xm),
          *dcn = Data(dc_out), *pg = Data(pgrad);
    ParallelRows(ctx, B, 80 * 4 * H, [&](int64_t begin, int64_t end) {
      Eigen::ArrayXf tmp(5 * H);
      for (int64_t b = begin; b < end; ++b) {
        float *row = pg + b * 14 * H, *dpre = row + 10 * H;
        CellBackwardRow(p, sv + b * S, dh + b * H, d_out + b * H, dc + b * H,
                        c_prev + b * H, mask ? mask + b * H : nullptr,
                        tmp.data(), row, dpre, dcn + b * H);
        for (int64_t k = 0; k < 4; ++k) {
          const int64_t rx = (k * B + b) * H, rh = ((4 + k) * B + b) * H,
                        rb = ((8 + k) * B + b) * H, col = (b * 4 + k) * H;
          CArr dp(dpre + k * H, H);
          Arr(dab + rx, H) = dp * CArr(xm + col, H);
          Arr(dab + rh, H) = dp * CArr(hw + b * F + k * H, H);
          Arr(dab + rb, H) = dp;
          Arr(dhwm + col, H) = dp * CArr(ab + rh, H);
          Arr(dxm + col, H) = dp * CArr(ab + rx, H);
        }
      }
    });
  }
};

// RpclLnCellForward(xh, hw, hhw, c_prev, gain, offset, c_gain, c_offset;
// hw_offset) -> h, c, saved: pre = xh + hw[:, hw_offset:hw_offset + 4n] + hhw.
class LnCellForwardOp : public OpKernel {
 public:
  explicit LnCellForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("hw_offset", &hw_offset_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &xh = ctx->input(0), &hw = ctx->input(1),
                 &c_prev = ctx->input(3);
    OP_REQUIRES(ctx, c_prev.dims() == 2,
                absl::InvalidArgumentError("c_prev: (B, n)"));
    const int64_t B = c_prev.dim_size(0), n = c_prev.dim_size(1);
    OP_REQUIRES_OK(ctx, CheckMatrix(xh, B, 4 * n, "xh: (B, 4n)"));
    OP_REQUIRES_OK(ctx, CheckMatrix(ctx->input(2), B, 4 * n, "hhw: (B, 4n)"));
    OP_REQUIRES(ctx, hw.dims() == 2 && hw.dim_size(0) == B &&
                         hw.dim_size(1) >= hw_offset_ + 4 * n,
                absl::InvalidArgumentError("hw: (B, >= hw_offset + 4n)"));
    OP_REQUIRES_OK(ctx, CheckParams(ctx, 4, n));
    const int64_t S = 10 * n + kSavedExtra, F = hw.dim_size(1);
    Tensor *h_out, *c_out, *saved;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, n}), &h_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, n}), &c_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, S}), &saved));
    const float *x = Data(xh), *w = Data(hw) + hw_offset_,
                *hh = Data(ctx->input(2)), *cp = Data(c_prev);
    const CellParams p = Params(ctx, 4, 5, 6, 7, n, eps_);
    float *h = Data(h_out), *c = Data(c_out), *sv = Data(saved);
    ParallelRows(ctx, B, 60 * 4 * n, [&](int64_t begin, int64_t end) {
      Eigen::ArrayXf pre(4 * n);
      for (int64_t b = begin; b < end; ++b) {
        Arr(pre.data(), 4 * n) = CArr(x + b * 4 * n, 4 * n) +
                                 CArr(w + b * F, 4 * n) +
                                 CArr(hh + b * 4 * n, 4 * n);
        CellForwardRow(p, pre.data(), cp + b * n, nullptr, sv + b * S,
                       c + b * n, h + b * n);
      }
    });
  }

 private:
  float eps_;
  int hw_offset_;
};

// RpclLnCellBackward(saved, dh_a, dh_b, dc, c_prev, gain, c_gain) -> d_pre
// (B, 4n), dc_prev (B, n), pgrad (B, 10n).
class LnCellBackwardOp : public OpKernel {
 public:
  explicit LnCellBackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& c_prev = ctx->input(4);
    OP_REQUIRES(ctx, c_prev.dims() == 2,
                absl::InvalidArgumentError("c_prev: (B, n)"));
    const int64_t B = c_prev.dim_size(0), n = c_prev.dim_size(1);
    const int64_t S = 10 * n + kSavedExtra;
    OP_REQUIRES_OK(ctx, CheckMatrix(ctx->input(0), B, S, "saved: (B, 10n + 5)"));
    for (int i = 1; i < 4; ++i)
      OP_REQUIRES_OK(ctx, CheckMatrix(ctx->input(i), B, n, "dh, dc: (B, n)"));
    OP_REQUIRES(ctx, ctx->input(5).NumElements() == 4 * n &&
                         ctx->input(6).NumElements() == n,
                absl::InvalidArgumentError("gain (4, n), c_gain (n)"));
    Tensor *d_pre, *dc_out, *pgrad;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, 4 * n}), &d_pre));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, n}), &dc_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, 10 * n}), &pgrad));
    const float *sv = Data(ctx->input(0)), *dh_a = Data(ctx->input(1)),
                *dh_b = Data(ctx->input(2)), *dc = Data(ctx->input(3)),
                *cp = Data(c_prev);
    const CellParams p = Params(ctx, 5, -1, 6, -1, n, 0.f);
    float *dp = Data(d_pre), *dcn = Data(dc_out), *pg = Data(pgrad);
    ParallelRows(ctx, B, 80 * 4 * n, [&](int64_t begin, int64_t end) {
      Eigen::ArrayXf tmp(5 * n);
      for (int64_t b = begin; b < end; ++b)
        CellBackwardRow(p, sv + b * S, dh_a + b * n, dh_b + b * n, dc + b * n,
                        cp + b * n, nullptr, tmp.data(), pg + b * 10 * n,
                        dp + b * 4 * n, dcn + b * n);
    });
  }
};

DimensionHandle Times(InferenceContext* c, DimensionHandle d, int64_t k,
                      int64_t plus = 0) {
  DimensionHandle out;
  if (!c->Multiply(d, k, &out).ok() || !c->Add(out, plus, &out).ok())
    return c->UnknownDim();
  return out;
}

// Forward ops: h, c like c_prev (input ``c_input``), saved (B, 10n + 5).
template <int c_input>
absl::Status ForwardShape(InferenceContext* c) {
  auto cp = c->input(c_input);
  c->set_output(0, cp);
  c->set_output(1, cp);
  c->set_output(2, c->Matrix(c->Dim(cp, 0), Times(c, c->Dim(cp, 1), 10,
                                                  kSavedExtra)));
  return absl::OkStatus();
}

absl::Status GatesBackwardShape(InferenceContext* c) {
  auto cp = c->input(3);
  auto b = c->Dim(cp, 0), h = c->Dim(cp, 1);
  c->set_output(0, c->MakeShape({c->MakeDim(12), b, h}));
  c->set_output(1, c->Matrix(b, Times(c, h, 4)));
  c->set_output(2, c->Matrix(b, Times(c, h, 4)));
  c->set_output(3, cp);
  c->set_output(4, c->Matrix(b, Times(c, h, 14)));
  return absl::OkStatus();
}

absl::Status LnCellBackwardShape(InferenceContext* c) {
  auto cp = c->input(4);
  auto b = c->Dim(cp, 0), n = c->Dim(cp, 1);
  c->set_output(0, c->Matrix(b, Times(c, n, 4)));
  c->set_output(1, cp);
  c->set_output(2, c->Matrix(b, Times(c, n, 10)));
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
    .SetShapeFn(ForwardShape<3>);

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
    .SetShapeFn(GatesBackwardShape);

REGISTER_OP("RpclLnCellForward")
    .Input("xh: float")
    .Input("hw: float")
    .Input("hhw: float")
    .Input("c_prev: float")
    .Input("gain: float")
    .Input("offset: float")
    .Input("c_gain: float")
    .Input("c_offset: float")
    .Attr("epsilon: float")
    .Attr("hw_offset: int")
    .Output("h: float")
    .Output("c: float")
    .Output("saved: float")
    .SetShapeFn(ForwardShape<3>);

REGISTER_OP("RpclLnCellBackward")
    .Input("saved: float")
    .Input("dh_a: float")
    .Input("dh_b: float")
    .Input("dc: float")
    .Input("c_prev: float")
    .Input("gain: float")
    .Input("c_gain: float")
    .Output("d_pre: float")
    .Output("dc_prev: float")
    .Output("pgrad: float")
    .SetShapeFn(LnCellBackwardShape);

REGISTER_KERNEL_BUILDER(
    Name("RpclGatesForward").Device(tensorflow::DEVICE_CPU), GatesForwardOp);
REGISTER_KERNEL_BUILDER(
    Name("RpclGatesBackward").Device(tensorflow::DEVICE_CPU), GatesBackwardOp);
REGISTER_KERNEL_BUILDER(
    Name("RpclLnCellForward").Device(tensorflow::DEVICE_CPU), LnCellForwardOp);
REGISTER_KERNEL_BUILDER(
    Name("RpclLnCellBackward").Device(tensorflow::DEVICE_CPU), LnCellBackwardOp);
