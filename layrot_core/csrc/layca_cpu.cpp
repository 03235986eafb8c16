// Algorithm 1 on CPU tensors in two passes over memory, for layrot_core.layca (see cpu_kernels.py).
//
// A Layca step needs w . w, w . s and s . s before it can write a * w + b * s. Per tensor, the
// first pass reads w and s once for the three sums, the second writes the update: a tensor that
// fits in cache is read from memory once. The sums are computed in double (products of floats
// are exact there, so a step nearly parallel to w keeps its small orthogonal part), and so is
// the update, except where nothing can cancel: a float32 layer stepped along its gradient at
// least 60 degrees from w is summed and updated in float (block_sums_float, update_float), which
// halves the instructions per element; its sums are redone in double when they say otherwise.
// Sums run over blocks of kBlock elements, and the blocks are added in a fixed order: results
// do not depend on the number of threads (at::parallel_for, OpenMP).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

// One build runs on every x86-64 CPU, and uses AVX2 and FMA (x86-64-v3) where they are.
#if defined(__linux__) && defined(__x86_64__)
#define LAYROT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LAYROT_CLONES
#endif

namespace {

constexpr int64_t kBlock = 2048;        // elements per partial sum
constexpr int64_t kBlocksPerTask = 16;  // parallel grain (32k elements)
constexpr int kLanes = 8;               // independent partial sums: hide the adds' latency

struct Sums {
  double ww = 0, ws = 0, ss = 0;
};

// The step's w and s at element i: along the gradient p holds w and t the gradient (s = t, the
// sign is applied to the scalars); displaced, p holds the base optimizer's result and t the
// snapshot w (s = p - t).
template <typename T, bool Displaced>
inline double w_at(const T* p, const T* t, int64_t i) {
  return Displaced ? static_cast<double>(t[i]) : static_cast<double>(p[i]);
}
template <typename T, bool Displaced>
inline double s_at(const T* p, const T* t, int64_t i) {
  return Displaced ? static_cast<double>(p[i]) - static_cast<double>(t[i]) : static_cast<double>(t[i]);
}

template <typename T, bool Displaced>
LAYROT_CLONES Sums block_sums(const T* p, const T* t, int64_t n) {
  double ww[kLanes] = {}, ws[kLanes] = {}, ss[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) {
      const double w = w_at<T, Displaced>(p, t, i + j), s = s_at<T, Displaced>(p, t, i + j);
      ww[j] += w * w;
      ws[j] += w * s;
      ss[j] += s * s;
    }
  }
  Sums out;
  for (; i < n; ++i) {
    const double w = w_at<T, Displaced>(p, t, i), s = s_at<T, Displaced>(p, t, i);
    out.ww += w * w;
    out.ws += w * s;
    out.ss += s * s;
  }
  for (int j = 0; j < kLanes; ++j) {
    out.ww += ww[j];
    out.ws += ws[j];
    out.ss += ss[j];
  }
  return out;
}

// The three sums of a float32 w and gradient g in float, 16 lanes of at most 128 products each
// (relative error near 1e-7 per lane), the lanes added in double. Twice the elements per
// instruction of block_sums, which converts every element to double; used only where nothing
// cancels (see rotate_pair).
LAYROT_CLONES Sums block_sums_float(const float* w, const float* g, int64_t n) {
  constexpr int kFloatLanes = 16;
  float ww[kFloatLanes] = {}, ws[kFloatLanes] = {}, ss[kFloatLanes] = {};
  int64_t i = 0;
  for (; i + kFloatLanes <= n; i += kFloatLanes) {
#pragma omp simd
    for (int j = 0; j < kFloatLanes; ++j) {
      ww[j] += w[i + j] * w[i + j];
      ws[j] += w[i + j] * g[i + j];
      ss[j] += g[i + j] * g[i + j];
    }
  }
  Sums out;
  for (; i < n; ++i) {
    out.ww += static_cast<double>(w[i]) * w[i];
    out.ws += static_cast<double>(w[i]) * g[i];
    out.ss += static_cast<double>(g[i]) * g[i];
  }
  for (int j = 0; j < kFloatLanes; ++j) {
    out.ww += ww[j];
    out.ws += ws[j];
    out.ss += ss[j];
  }
  return out;
}

template <typename F>
Sums sum_blocks(int64_t n, F block) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<Sums> partial(blocks);
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const int64_t begin = b * kBlock;
      partial[b] = block(begin, std::min(kBlock, n - begin));
    }
  });
  Sums out;
  for (const Sums& s : partial) {
    out.ww += s.ww;
    out.ws += s.ws;
    out.ss += s.ss;
  }
  return out;
}

template <typename T, bool Displaced>
Sums sums(const T* p, const T* t, int64_t n) {
  return sum_blocks(n, [&](int64_t begin, int64_t m) { return block_sums<T, Displaced>(p + begin, t + begin, m); });
}

Sums sums_float(const float* w, const float* g, int64_t n) {
  return sum_blocks(n, [&](int64_t begin, int64_t m) { return block_sums_float(w + begin, g + begin, m); });
}

// p <- a * w + b * s.
template <typename T, bool Displaced>
LAYROT_CLONES void block_update(T* p, const T* t, int64_t n, double a, double b) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    p[i] = static_cast<T>(a * w_at<T, Displaced>(p, t, i) + b * s_at<T, Displaced>(p, t, i));
  }
}

// p <- a * w + b * g in float (w = p, s = g). For a step at least 60 degrees from w
// (kFarFromParallel) |a w| and |b g| are both below about 1.2 ||w0||, so nothing cancels: each
// element is off by a few float roundings of ||w0||, an angle error near 1e-7 that does not
// accumulate (the next step's sums measure w afresh). The pass then runs at memory speed
// instead of converting every element to double.
LAYROT_CLONES void block_update_float(float* p, const float* g, int64_t n, float a, float b) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    p[i] = a * p[i] + b * g[i];
  }
}

template <typename T, bool Displaced>
void update(T* p, const T* t, int64_t n, double a, double b) {
  at::parallel_for(0, n, kBlock * kBlocksPerTask, [&](int64_t begin, int64_t end) {
    block_update<T, Displaced>(p + begin, t + begin, end - begin, a, b);
  });
}

void update_float(float* p, const float* g, int64_t n, double a, double b) {
  at::parallel_for(0, n, kBlock * kBlocksPerTask, [&](int64_t begin, int64_t end) {
    block_update_float(p + begin, g + begin, end - begin, static_cast<float>(a), static_cast<float>(b));
  });
}

// (w . s)^2 <= kFarFromParallel (w . w)(s . s): w and s at least 60 degrees apart.
constexpr double kFarFromParallel = 0.25;
// Coefficients this large (a gradient of norm near float's smallest) stay in double.
constexpr double kFloatSafe = 1e30;

struct Coefficients {
  double a, b, norm0;
};

// layca._coefficients for one layer (the tests hold both to layca.algorithm1_): new w = a * w + b * s.
Coefficients coefficients(double ww, double ws, double ss, double norm0, double rate, double scale, double tol) {
  if (!(ww > 0)) return {1.0, scale, norm0};  // no direction: the base update
  const double norm = std::sqrt(ww);
  if (!(norm0 > 0)) norm0 = norm;
  const double perp2 = ss - ws * ws / ww;
  if (perp2 <= tol * ss) return {norm0 / norm, 0.0, norm0};  // nothing orthogonal to w: back on the sphere
  const double k = rate / std::sqrt(perp2), shrink = norm0 / std::sqrt(1.0 + rate * rate);
  return {shrink * (1.0 / norm - k * ws / ww), shrink * k, norm0};
}

// A float32 layer along its gradient far from parallel (the common case) runs in float both
// ways; otherwise everything is summed and combined in double.
inline bool far_from_parallel(const Sums& s) { return s.ws * s.ws <= kFarFromParallel * s.ww * s.ss; }
// Float sums are trusted only with room above float's smallest normal and below its largest.
inline bool float_range(const Sums& s) { return s.ww > 1e-30 && s.ss > 1e-30 && s.ww < 1e30 && s.ss < 1e30; }

template <typename T>
void rotate_pair(T* p, const T* t, int64_t n, double* norm0, double rate, double scale, double sign, bool displaced,
                 double tol) {
  bool in_float = false;
  Sums s;
  if constexpr (std::is_same_v<T, float>) {
    if (!displaced) {
      s = sums_float(p, t, n);
      in_float = float_range(s) && far_from_parallel(s);
    }
  }
  if (!in_float) s = displaced ? sums<T, true>(p, t, n) : sums<T, false>(p, t, n);
  const Coefficients c = coefficients(s.ww, sign * s.ws, s.ss, *norm0, rate, scale, tol);
  *norm0 = c.norm0;
  if (displaced) {
    update<T, true>(p, t, n, c.a, c.b);
  } else if (std::is_same_v<T, float> && far_from_parallel(s) && std::abs(c.a) < kFloatSafe &&
             std::abs(c.b) < kFloatSafe) {
    update_float(reinterpret_cast<float*>(p), reinterpret_cast<const float*>(t), n, c.a, c.b * sign);
  } else {
    update<T, false>(p, t, n, c.a, c.b * sign);
  }
}

void rotate_(at::TensorList params, at::TensorList others, at::TensorList norms0, at::ArrayRef<double> rates,
             at::ArrayRef<double> scales, at::ArrayRef<double> signs, c10::List<bool> displaced, double tol) {
  const size_t k = params.size();
  TORCH_CHECK(others.size() == k && norms0.size() == k && rates.size() == k && scales.size() == k &&
                  signs.size() == k && displaced.size() == k,
              "layrot: lists of different lengths");
  for (size_t i = 0; i < k; ++i) {
    const at::Tensor &p = params[i], &t = others[i], &n0 = norms0[i];
    TORCH_CHECK(p.device().is_cpu() && t.device().is_cpu() && n0.device().is_cpu(), "layrot: CPU tensors only");
    TORCH_CHECK(p.scalar_type() == t.scalar_type() &&
                    (p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble),
                "layrot: float32 or float64 pairs only, got ", p.scalar_type(), " and ", t.scalar_type());
    TORCH_CHECK(p.is_contiguous() && t.is_contiguous() && p.numel() == t.numel(),
                "layrot: contiguous tensors of equal size only");
    TORCH_CHECK(n0.scalar_type() == at::kDouble && n0.numel() == 1, "layrot: norms0 must be float64 scalars");
    double* norm0 = n0.data_ptr<double>();
    if (p.scalar_type() == at::kFloat) {
      rotate_pair(p.data_ptr<float>(), t.data_ptr<float>(), p.numel(), norm0, rates[i], scales[i], signs[i],
                  displaced[i], tol);
    } else {
      rotate_pair(p.data_ptr<double>(), t.data_ptr<double>(), p.numel(), norm0, rates[i], scales[i], signs[i],
                  displaced[i], tol);
    }
  }
}

}  // namespace

// A CPU kernel only (cpu_kernels.py gives torch.compile its fake, shape-only version).
TORCH_LIBRARY(layrot, m) {
  m.def("rotate_(Tensor(a!)[] params, Tensor[] others, Tensor(b!)[] norms0, float[] rates, float[] scales, "
        "float[] signs, bool[] displaced, float tol) -> ()");
}

TORCH_LIBRARY_IMPL(layrot, CPU, m) { m.impl("rotate_", rotate_); }
