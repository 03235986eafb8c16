// Algorithm 1 on CPU tensors in two passes over memory, for layrot_core.layca (see cpu_kernels.py).
//
// A Layca step needs w . s and s . s before it can write a * w + b * s. Per tensor, the first pass
// reads w and s once for both sums, the second writes the update: a tensor that fits in cache is
// read from memory once. Sums add products in the tensor's precision in blocks of kBlock elements,
// and the blocks in float64 in a fixed order: results do not depend on the number of threads.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

// One build runs on every x86-64 CPU, and uses AVX2 where there is one.
#if defined(__linux__) && defined(__x86_64__)
#define LAYROT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LAYROT_CLONES
#endif

namespace {

constexpr int64_t kBlock = 2048;        // elements summed in the tensor's own precision
constexpr int64_t kBlocksPerTask = 16;  // parallel grain (32k elements)
constexpr int kLanes = 16;              // independent partial sums: hide the adds' latency

// x . s and s . s over n elements, with s = y - x (displaced) or s = y.
template <typename T, bool Displaced>
LAYROT_CLONES void block_sums(const T* x, const T* y, int64_t n, double* xs, double* ss) {
  T axs[kLanes] = {}, ass[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      const T s = Displaced ? y[i + j] - x[i + j] : y[i + j];
      axs[j] += x[i + j] * s;
      ass[j] += s * s;
    }
  }
  T sum_xs = 0, sum_ss = 0;
  for (; i < n; ++i) {
    const T s = Displaced ? y[i] - x[i] : y[i];
    sum_xs += x[i] * s;
    sum_ss += s * s;
  }
  for (int j = 0; j < kLanes; ++j) {
    sum_xs += axs[j];
    sum_ss += ass[j];
  }
  *xs = sum_xs;
  *ss = sum_ss;
}

template <typename T, bool Displaced>
void sums(const T* x, const T* y, int64_t n, double* xs, double* ss) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> bxs(blocks), bss(blocks);
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const int64_t begin = b * kBlock;
      block_sums<T, Displaced>(x + begin, y + begin, std::min(kBlock, n - begin), &bxs[b], &bss[b]);
    }
  });
  *xs = *ss = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    *xs += bxs[b];
    *ss += bss[b];
  }
}

template <typename T>
LAYROT_CLONES void block_scale_add(T* p, const T* t, int64_t n, T alpha, T beta) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) p[i] = alpha * p[i] + beta * t[i];
}

// p <- alpha * p + beta * t.
template <typename T>
void scale_add(T* p, const T* t, int64_t n, T alpha, T beta) {
  at::parallel_for(0, n, kBlock * kBlocksPerTask, [&](int64_t begin, int64_t end) {
    block_scale_add(p + begin, t + begin, end - begin, alpha, beta);
  });
}

// One pair, as Layca._rotate_ describes it: along the gradient, p holds w and t the gradient
// (s = sign * t); displaced, p holds the base optimizer's result and t the snapshot w (s = p - t).
// The coefficients are Python's layca._coefficients, which the tests hold both paths to.
template <typename T>
void rotate_pair(T* p, const T* t, int64_t n, double rate, double sign, double norm0, bool displaced, double tol) {
  double xs, ss;
  if (displaced) {
    sums<T, true>(t, p, n, &xs, &ss);
  } else {
    sums<T, false>(p, t, n, &xs, &ss);
    xs *= sign;
  }
  const double n2 = norm0 * norm0, perp2 = ss - xs * xs / n2;
  if (perp2 <= tol * ss) {  // no step, or one along w: nothing to turn, w stays
    if (displaced) std::copy(t, t + n, p);
    return;
  }
  const double k = rate * norm0 / std::sqrt(perp2), shrink = 1.0 / std::sqrt(1.0 + rate * rate);
  const double a = (1.0 - k * xs / n2) * shrink, b = k * shrink;
  // new w = a * w + b * s
  if (displaced) {
    scale_add<T>(p, t, n, static_cast<T>(b), static_cast<T>(a - b));
  } else {
    scale_add<T>(p, t, n, static_cast<T>(a), static_cast<T>(b * sign));
  }
}

void rotate_(at::TensorList params, at::TensorList others, at::ArrayRef<double> rates, at::ArrayRef<double> signs,
             at::ArrayRef<double> norms0, c10::List<bool> displaced, double tol) {
  const size_t k = params.size();
  TORCH_CHECK(others.size() == k && rates.size() == k && signs.size() == k && norms0.size() == k &&
                  displaced.size() == k,
              "layrot: lists of different lengths");
  for (size_t i = 0; i < k; ++i) {
    const at::Tensor &p = params[i], &t = others[i];
    TORCH_CHECK(p.device().is_cpu() && t.device().is_cpu(), "layrot: CPU tensors only");
    TORCH_CHECK(p.scalar_type() == t.scalar_type() &&
                    (p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble),
                "layrot: float32 or float64 pairs only, got ", p.scalar_type(), " and ", t.scalar_type());
    TORCH_CHECK(p.is_contiguous() && t.is_contiguous() && p.numel() == t.numel(),
                "layrot: contiguous tensors of equal size only");
    if (p.scalar_type() == at::kFloat) {
      rotate_pair(p.data_ptr<float>(), t.data_ptr<float>(), p.numel(), rates[i], signs[i], norms0[i], displaced[i], tol);
    } else {
      rotate_pair(p.data_ptr<double>(), t.data_ptr<double>(), p.numel(), rates[i], signs[i], norms0[i], displaced[i],
                  tol);
    }
  }
}

}  // namespace

// A CPU kernel only (cpu_kernels.py gives torch.compile its fake, shape-only version).
TORCH_LIBRARY(layrot, m) {
  m.def("rotate_(Tensor(a!)[] params, Tensor[] others, float[] rates, float[] signs, float[] norms0, "
        "bool[] displaced, float tol) -> ()");
}

TORCH_LIBRARY_IMPL(layrot, CPU, m) { m.impl("rotate_", rotate_); }
