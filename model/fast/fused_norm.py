"""relu(sum_k IN_k(x_k)): the instance norms of the encoder (7) and the image
decoder (9) of docs/method.md as one C++ kernel per direction
(model/fast/kernels/instance_norm.cc).

Instance norm is per sample and channel over the image positions; as
TensorFlow ops each one is a dozen passes over a full activation tensor
forward and backward (moments, the normalisation, the reductions of its
gradient), and the encoder's dilated block adds three such branches and a
ReLU.  On CPU those passes cost more than the convolutions themselves; the
kernel does a block's sum of normalised branches and its ReLU in two passes
per sample forward and two backward, with the tensors in cache.

``norm_sum(xs, norms, relu)`` takes the Keras ``InstanceNorm`` layers (their
gamma / beta variables stay the model's weights) and runs the kernel when
model/fast/native_ops.py allows it (float32, CPU, not under XLA, built), else
the layers themselves: the same math, checked against each other and a NumPy
reference in tests/test_fused_norm.py.
"""
import tensorflow as tf
from keras import ops

from model.fast import native_ops


def _built(norm, x):
  """``norm``, built for ``x`` if it was not (the kernel reads its weights)."""
  if not norm.built:
    norm.build(tuple(x.shape))
  return norm


def _kernel_norm_sum(xs, gamma, beta, epsilon, relu):
  """The kernel pair as one differentiable function of (xs, gamma, beta)."""
  lib = native_ops.kernels()
  # The backward op under "gradient_tape/<the forward's scope>", as autodiff
  # names gradients (profiles attribute it to its layer).
  scope = tf.get_current_name_scope()
  grad_scope = f"gradient_tape/{scope}/" if scope else "gradient_tape/"

  @tf.custom_gradient
  def run(gamma, beta, *xs):
    y, mean, rstd = lib.rpcl_instance_norm_forward(list(xs), gamma, beta,
                                                   epsilon=epsilon, relu=relu)

    def grad(dy):
      with tf.name_scope(grad_scope):
        out = lib.rpcl_instance_norm_backward(
            list(xs), gamma, mean, rstd, y if relu else tf.zeros([0]), dy,
            relu=relu)
      return [out.dgamma, out.dbeta] + list(out.dx)
    return y, grad
  return run(gamma, beta, *xs)


def norm_sum(xs, norms, relu=True):
  """``relu(sum_k norms[k](xs[k]))`` (no ReLU with ``relu=False``): the
  instance norms of (7) and (9), each (B, height, width, C)."""
  norms = [_built(norm, x) for norm, x in zip(norms, xs)]
  if native_ops.usable(native_ops.NORM, xs[0].dtype):
    epsilon = {norm.epsilon for norm in norms}
    if len(epsilon) == 1:
      gamma = tf.stack([tf.convert_to_tensor(norm.gamma) for norm in norms])
      beta = tf.stack([tf.convert_to_tensor(norm.beta) for norm in norms])
      return _kernel_norm_sum(xs, gamma, beta, float(epsilon.pop()), relu)
  total = None
  for norm, x in zip(norms, xs):
    total = norm(x) if total is None else total + norm(x)
  return ops.relu(total) if relu else total
