// Instance normalisation of N same-shaped NHWC tensors, summed, with an
// optional ReLU, forward and backward as one kernel call each (method.md §2,
// "Encoder"; the Python side and the Keras fallback: model/fast/fused_norm.py).
//
// Per sample b and channel c of input k, over the H*W positions p:
//   m_k    = mean_p x_k[p],  r_k = 1 / sqrt(mean_p (x_k[p] - m_k)^2 + eps)
//   v[p]   = sum_k (x_k[p] - m_k) * r_k * gamma_k + beta_k
//   y[p]   = relu(v[p])  (or v[p] without the ReLU)
// The encoder's dilated block is this with N = 3 (its three branches), every
// other instance norm of the encoder N = 1.  The forward also returns m and r
// (N, B, C) for the backward.
//
// Backward, with s = dy * [y > 0] (ReLU's gradient as TensorFlow takes it,
// from the output), S_k = sum_p s and G_k = sum_p s * (x_k - m_k):
//   dbeta_k  = sum_b S_k,   dgamma_k = sum_b r_k G_k
//   dx_k[p]  = r_k gamma_k (s[p] - S_k / HW - (x_k[p] - m_k) r_k^2 G_k / HW)
// Sums over positions run in double, sequentially per channel, and the sums
// over samples in sample order: results are bit-identical from call to call.
// Each sample's tensors are read twice per direction (sums, then the output).
#include <algorithm>
#include <cmath>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::OpInputList;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::OpOutputList;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;

struct Dims {
  int64_t batch = 0, positions = 0, channels = 0;
};

// All inputs (B, H, W, C) of one shape; gamma (N, C).
absl::Status CheckInputs(const OpInputList& xs, const Tensor& gamma,
                         Dims* dims) {
  const Tensor& x0 = xs[0];
  if (x0.dims() != 4)
    return absl::InvalidArgumentError("instance norm: x must be (B, H, W, C)");
  for (int k = 1; k < xs.size(); ++k)
    if (xs[k].shape() != x0.shape())
      return absl::InvalidArgumentError("instance norm: inputs differ in shape");
  dims->batch = x0.dim_size(0);
  dims->positions = x0.dim_size(1) * x0.dim_size(2);
  dims->channels = x0.dim_size(3);
  if (gamma.dims() != 2 || gamma.dim_size(0) != xs.size() ||
      gamma.dim_size(1) != dims->channels)
    return absl::InvalidArgumentError("instance norm: gamma must be (N, C)");
  return absl::OkStatus();
}

// An empty batch (a replica's share of a short last batch) gives empty
// outputs.  TensorFlow's CPU convolution returns an empty batch with its
// input's channel count, so the channels are not checked here: y takes
// gamma's, as the broadcasting Keras layer's output does.
bool EmptyBatch(OpKernelContext* ctx, const OpInputList& xs,
                const Tensor& gamma) {
  const Tensor& x0 = xs[0];
  if (x0.dims() != 4 || x0.dim_size(0) != 0 || gamma.dims() != 2) return false;
  const int64_t c = gamma.dim_size(1);
  const TensorShape stats({xs.size(), 0, c});
  const TensorShape shapes[3] = {
      TensorShape({0, x0.dim_size(1), x0.dim_size(2), c}), stats, stats};
  for (int k = 0; k < 3; ++k) {
    Tensor* out;
    const absl::Status st = ctx->allocate_output(k, shapes[k], &out);
    if (!st.ok()) {
      ctx->CtxFailure(__FILE__, __LINE__, st);
      break;
    }
  }
  return true;
}

void ParallelSamples(OpKernelContext* ctx, const Dims& d, int n_inputs,
                     const std::function<void(int64_t, int64_t)>& fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t cost = d.positions * d.channels * n_inputs * 8;
  tensorflow::Shard(workers->num_threads, workers->workers, d.batch, cost, fn);
}

class ForwardOp : public OpKernel {
 public:
  explicit ForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
  }

  void Compute(OpKernelContext* ctx) override {
    OpInputList xs;
    OP_REQUIRES_OK(ctx, ctx->input_list("x", &xs));
    const Tensor &gamma = ctx->input(xs.size()), &beta = ctx->input(xs.size() + 1);
    if (EmptyBatch(ctx, xs, gamma)) return;
    Dims d;
    OP_REQUIRES_OK(ctx, CheckInputs(xs, gamma, &d));
    OP_REQUIRES(ctx, beta.shape() == gamma.shape(),
                absl::InvalidArgumentError("instance norm: beta must be (N, C)"));
    const int n_in = xs.size();
    Tensor *y, *mean, *rstd;
    const TensorShape stats({n_in, d.batch, d.channels});
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, xs[0].shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, stats, &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, stats, &rstd));
    std::vector<const float*> x(n_in);
    for (int k = 0; k < n_in; ++k) x[k] = xs[k].flat<float>().data();
    const float *g = gamma.flat<float>().data(), *bt = beta.flat<float>().data();
    float *yp = y->flat<float>().data(), *mp = mean->flat<float>().data(),
          *rp = rstd->flat<float>().data();
    const int64_t P = d.positions, C = d.channels, B = d.batch;
    const float eps = eps_;
    const bool relu = relu_;
    ParallelSamples(ctx, d, n_in, [&](int64_t b0, int64_t b1) {
      Eigen::ArrayXd sum1(C), sum2(C);
      Eigen::ArrayXf scale(n_in * C), shift(C);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t off = b * P * C;
        shift.setZero();
        for (int k = 0; k < n_in; ++k) {
          const float* xb = x[k] + off;
          sum1.setZero();
          sum2.setZero();
          double *s1 = sum1.data(), *s2 = sum2.data();
          for (int64_t p = 0; p < P; ++p) {
            const float* xr = xb + p * C;
            for (int64_t c = 0; c < C; ++c) {
              const double v = xr[c];
              s1[c] += v;
              s2[c] += v * v;
            }
          }
          for (int64_t c = 0; c < C; ++c) {
            // One pass in double: E[x^2] - E[x]^2 loses nothing that matters
            // at float32 output precision.
            const double mean = s1[c] / double(P);
            const double var = std::max(s2[c] / double(P) - mean * mean, 0.0);
            const float m = float(mean);
            const float r = float(1.0 / std::sqrt(var + double(eps)));
            mp[(k * B + b) * C + c] = m;
            rp[(k * B + b) * C + c] = r;
            scale[k * C + c] = r * g[k * C + c];
            shift[c] += bt[k * C + c] - m * scale[k * C + c];
          }
        }
        float* yb = yp + off;
        const float *sh = shift.data(), *sc = scale.data();
        for (int64_t p = 0; p < P; ++p) {
          float* row = yb + p * C;
          for (int64_t c = 0; c < C; ++c) row[c] = sh[c];
          for (int k = 0; k < n_in; ++k) {
            const float *xr = x[k] + off + p * C, *sk = sc + k * C;
            for (int64_t c = 0; c < C; ++c) row[c] += xr[c] * sk[c];
          }
          if (relu)
            for (int64_t c = 0; c < C; ++c) row[c] = row[c] < 0.f ? 0.f : row[c];
        }
      }
    });
  }

 private:
  float eps_;
  bool relu_;
};

class BackwardOp : public OpKernel {
 public:
  explicit BackwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("relu", &relu_));
  }

  void Compute(OpKernelContext* ctx) override {
    OpInputList xs;
    OP_REQUIRES_OK(ctx, ctx->input_list("x", &xs));
    const int n_in = xs.size();
    const Tensor &gamma = ctx->input(n_in), &mean = ctx->input(n_in + 1),
                 &rstd = ctx->input(n_in + 2), &y = ctx->input(n_in + 3),
                 &dy = ctx->input(n_in + 4);
    if (xs[0].dims() == 4 && xs[0].dim_size(0) == 0) {  // see EmptyBatch
      OpOutputList dxs;
      OP_REQUIRES_OK(ctx, ctx->output_list("dx", &dxs));
      Tensor* t;
      for (int k = 0; k < n_in; ++k)
        OP_REQUIRES_OK(ctx, dxs.allocate(k, xs[k].shape(), &t));
      for (int k = 0; k < 2; ++k) {
        OP_REQUIRES_OK(ctx, ctx->allocate_output(n_in + k, gamma.shape(), &t));
        t->flat<float>().setZero();
      }
      return;
    }
    Dims d;
    OP_REQUIRES_OK(ctx, CheckInputs(xs, gamma, &d));
    const TensorShape stats({n_in, d.batch, d.channels});
    OP_REQUIRES(ctx, mean.shape() == stats && rstd.shape() == stats,
                absl::InvalidArgumentError("instance norm: stats must be (N, B, C)"));
    OP_REQUIRES(ctx, dy.shape() == xs[0].shape() &&
                         (!relu_ || y.shape() == xs[0].shape()),
                absl::InvalidArgumentError("instance norm: y, dy must be x's shape"));
    OpOutputList dxs;
    OP_REQUIRES_OK(ctx, ctx->output_list("dx", &dxs));
    std::vector<const float*> x(n_in);
    std::vector<float*> dx(n_in);
    for (int k = 0; k < n_in; ++k) {
      Tensor* t;
      OP_REQUIRES_OK(ctx, dxs.allocate(k, xs[0].shape(), &t));
      x[k] = xs[k].flat<float>().data();
      dx[k] = t->flat<float>().data();
    }
    const int64_t P = d.positions, C = d.channels, B = d.batch;
    // Per-sample sums [S_k | r_k G_k], reduced over samples after the shards.
    std::vector<double> part(B * 2 * n_in * C);
    const float *g = gamma.flat<float>().data(), *mp = mean.flat<float>().data(),
                *rp = rstd.flat<float>().data(),
                *yp = relu_ ? y.flat<float>().data() : nullptr,
                *dyp = dy.flat<float>().data();
    const bool relu = relu_;
    ParallelSamples(ctx, d, n_in, [&](int64_t b0, int64_t b1) {
      Eigen::ArrayXd sum_s(C), sum_g(n_in * C);
      Eigen::ArrayXf ca(n_in * C), cb(n_in * C), cc(n_in * C);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t off = b * P * C;
        // s = dy * [y > 0], kept in dx[0] (overwritten last), and its sums.
        float* s_all = dx[0] + off;
        sum_s.setZero();
        sum_g.setZero();
        double *ss = sum_s.data(), *sg = sum_g.data();
        for (int64_t p = 0; p < P; ++p) {
          float* sr = s_all + p * C;
          const float* dyr = dyp + off + p * C;
          if (relu) {
            const float* yr = yp + off + p * C;
            for (int64_t c = 0; c < C; ++c) sr[c] = yr[c] > 0.f ? dyr[c] : 0.f;
          } else {
            for (int64_t c = 0; c < C; ++c) sr[c] = dyr[c];
          }
          for (int64_t c = 0; c < C; ++c) ss[c] += sr[c];
          for (int k = 0; k < n_in; ++k) {
            const float *xr = x[k] + off + p * C, *mk = mp + (k * B + b) * C;
            double* gk = sg + k * C;
            for (int64_t c = 0; c < C; ++c)
              gk[c] += double(sr[c]) * double(xr[c] - mk[c]);
          }
        }
        double* pb = part.data() + b * 2 * n_in * C;
        for (int k = 0; k < n_in; ++k)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t kc = k * C + c, kbc = (k * B + b) * C + c;
            const float m = mp[kbc], r = rp[kbc];
            const float a = r * g[kc];
            const float gm = float(sum_g[kc] / double(P)) * r * r;
            pb[kc] = sum_s[c];
            pb[n_in * C + kc] = sum_g[kc] * r;
            ca[kc] = a;                                    // * s
            cb[kc] = -a * gm;                              // * x
            cc[kc] = a * (m * gm - float(sum_s[c] / double(P)));
          }
        // dx[0] holds s: write the other inputs' gradients first.
        for (int k = n_in - 1; k >= 0; --k) {
          const float *xb = x[k] + off, *sb = s_all;
          float* db = dx[k] + off;
          const float *a = ca.data() + k * C, *bb = cb.data() + k * C,
                      *cst = cc.data() + k * C;
          for (int64_t p = 0; p < P; ++p)
            for (int64_t c = 0; c < C; ++c) {
              const int64_t i = p * C + c;
              db[i] = a[c] * sb[i] + bb[c] * xb[i] + cst[c];
            }
        }
      }
    });
    Tensor *dgamma, *dbeta;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(n_in, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(n_in + 1, gamma.shape(), &dbeta));
    float *dg = dgamma->flat<float>().data(), *dbt = dbeta->flat<float>().data();
    for (int64_t kc = 0; kc < n_in * C; ++kc) {
      double sb = 0, sg = 0;
      for (int64_t b = 0; b < B; ++b) {
        sb += part[b * 2 * n_in * C + kc];
        sg += part[b * 2 * n_in * C + n_in * C + kc];
      }
      dbt[kc] = float(sb);
      dg[kc] = float(sg);
    }
  }

 private:
  bool relu_;
};

absl::Status ForwardShape(InferenceContext* c) {
  int n;
  TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
  auto x = c->input(0);
  auto channels = c->Dim(c->input(n), 1);   // gamma's (see EmptyBatch)
  c->set_output(0, c->MakeShape({c->Dim(x, 0), c->Dim(x, 1), c->Dim(x, 2),
                                 channels}));
  auto stats = c->MakeShape({c->MakeDim(n), c->Dim(x, 0), channels});
  c->set_output(1, stats);
  c->set_output(2, stats);
  return absl::OkStatus();
}

absl::Status BackwardShape(InferenceContext* c) {
  int n;
  TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
  for (int k = 0; k < n; ++k) c->set_output(k, c->input(0));
  c->set_output(n, c->input(n));
  c->set_output(n + 1, c->input(n));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("RpclInstanceNormForward")
    .Input("x: N * float")
    .Input("gamma: float")
    .Input("beta: float")
    .Attr("N: int >= 1")
    .Attr("epsilon: float")
    .Attr("relu: bool")
    .Output("y: float")
    .Output("mean: float")
    .Output("rstd: float")
    .SetShapeFn(ForwardShape);

REGISTER_OP("RpclInstanceNormBackward")
    .Input("x: N * float")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Input("y: float")
    .Input("dy: float")
    .Attr("N: int >= 1")
    .Attr("relu: bool")
    .Output("dx: N * float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .SetShapeFn(BackwardShape);

REGISTER_KERNEL_BUILDER(
    Name("RpclInstanceNormForward").Device(tensorflow::DEVICE_CPU), ForwardOp);
REGISTER_KERNEL_BUILDER(
    Name("RpclInstanceNormBackward").Device(tensorflow::DEVICE_CPU), BackwardOp);
