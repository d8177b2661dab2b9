// One-pass optimizer step for float32 flat buffers: an XLA FFI custom call.
//
// XLA:CPU emits each elementwise result that is stored (new m, new v, new params) as its
// own loop, so Adam reads the new moments back from memory: 40 bytes per parameter instead
// of the 28 that must move. This kernel runs a chain of optimizer stages over blocks of
// 1024 elements that stay in L1: every buffer is read once and written once.
//
// Program: `ops` lists the stages (opcodes in stages.h). Each stage takes its scalars, in order,
// from the `scalars` input (computed by JAX: bias corrections, schedules, hyperparameters)
// and its state buffers, in order, from the remaining inputs. Inputs: scalars, params,
// grads, state buffers...; outputs: params, state buffers... (aliased to the inputs by the
// caller, so a donated step updates in place). The math of each stage is that of the
// jaxopt_zoo block it replaces, in the same order of operations.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "stages.h"  // opcodes, scalar indices, sizes: generated from fast/stages.py

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 1024;          // elements per block (4 KB per stream)
constexpr int64_t kParallelMin = 1 << 16; // below this, run on the calling thread

struct Program {
  std::vector<int64_t> ops;
  std::vector<float> scalars;
  float* params_out;
  const float* params_in;
  const float* grads;
  std::vector<const float*> state_in;
  std::vector<float*> state_out;
  int64_t n;
};

// Sizes from the generated table (stages.h); -1 for an unknown opcode.
int64_t scalars_needed(int64_t op) { return op > 0 && op < kNumOps ? kScalars[op] : -1; }
int64_t buffers_needed(int64_t op) { return op > 0 && op < kNumOps ? kBuffers[op] : 0; }

static_assert(sc_nadam::inv_bc2 == sc_adam::inv_bc2 && sc_amsgrad::inv_bc2 == sc_adam::inv_bc2,
              "NAdam and AMSGrad read Adam's scalars at Adam's indices");

inline float sign_of(float x) { return x > 0.f ? 1.f : (x < 0.f ? -1.f : x); }

// A state buffer that a stage reads but does not change (COCOB's init_particles, MADGRAD's
// x0 without decoupled decay). Its output is aliased to its input (input_output_aliases:
// XLA copies a live input before the call), so the values are already there and nothing is
// written; the copy is for a caller that does not alias them.
inline void keep_unchanged(const float* in, float* out, int64_t lo, int64_t len) {
  if (out != in) std::copy(in + lo, in + lo + len, out + lo);
}

// One block [lo, lo + len): the stages in order on a local update vector. The first stage
// reads the gradient in place of a copy, and a final learning-rate scale is applied in the
// parameter update: every pass over the L1 block costs (measured: 0.84x -> 1.0x of torch's
// fused Adam).
// Adam's moments and direction; kNadam adds the look-ahead first moment, kAmsgrad divides
// by the running maximum of v_hat (a third buffer). Scalars: b1, 1-b1, b2, 1-b2, eps,
// eps_root, 1/bc1, 1/bc2 (kNadam: then 1/(1 - b1^(t+1))).
template <int64_t kOp>
inline void adam_stage(const float* in, float* u, const float* sc, const float* const* si,
                       float* const* so, int64_t lo, int64_t len) {
  // kNadam and kAmsgrad read Adam's scalars at Adam's indices (static_assert above).
  const float b1 = sc[sc_adam::b1], c1 = sc[sc_adam::one_minus_b1], b2 = sc[sc_adam::b2],
              c2 = sc[sc_adam::one_minus_b2], eps = sc[sc_adam::eps],
              eps_root = sc[sc_adam::eps_root], r1 = sc[sc_adam::inv_bc1],
              r2 = sc[sc_adam::inv_bc2];
  const float* __restrict mi = si[0] + lo;
  const float* __restrict vi = si[1] + lo;
  float* __restrict mo = so[0] + lo;
  float* __restrict vo = so[1] + lo;
  for (int64_t i = 0; i < len; ++i) {
    const float x = in[i];
    const float m = b1 * mi[i] + c1 * x;
    const float v = b2 * vi[i] + c2 * (x * x);
    mo[i] = m;
    vo[i] = v;
    float num = m * r1, den = v * r2;  // 1 division and 1 root per element
    if constexpr (kOp == kNadam) num = b1 * (m * sc[sc_nadam::inv_next_bc1]) + c1 * (x * r1);
    if constexpr (kOp == kAmsgrad) {
      den = std::max(si[2][lo + i], den);
      so[2][lo + i] = den;
    }
    u[i] = num / (std::sqrt(den + eps_root) + eps);
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void run_block(const Program* pr, int64_t lo, int64_t len) {
  alignas(64) float u[kBlock];
  const float* in = pr->grads + lo;  // the running update: the gradient, then u
  const float* sc = pr->scalars.data();
  size_t b = 0;
  // A final learning-rate scale is folded into the parameter update below.
  const size_t n_ops = pr->ops.size();
  const bool scale_last = n_ops > 0 && pr->ops[n_ops - 1] == kScale;
  for (size_t k = 0; k < n_ops - (scale_last ? 1 : 0); ++k) {
    const int64_t op = pr->ops[k];
    const float* const* si = pr->state_in.data() + b;  // this stage's state buffers
    float* const* so = pr->state_out.data() + b;
    switch (op) {
      case kAdam:
        adam_stage<kAdam>(in, u, sc, si, so, lo, len);
        break;
      case kNadam:
        adam_stage<kNadam>(in, u, sc, si, so, lo, len);
        break;
      case kAmsgrad:
        adam_stage<kAmsgrad>(in, u, sc, si, so, lo, len);
        break;
      case kAdamax: {
        const float b1 = sc[sc_adamax::b1], c1 = sc[sc_adamax::one_minus_b1],
                    b2 = sc[sc_adamax::b2], eps = sc[sc_adamax::eps], r1 = sc[sc_adamax::inv_bc1];
        const float* __restrict mi = si[0] + lo;
        const float* __restrict ui = si[1] + lo;
        float* __restrict mo = so[0] + lo;
        float* __restrict uo = so[1] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float m = b1 * mi[i] + c1 * x;
          const float w = std::max(b2 * ui[i], std::fabs(x) + eps);
          mo[i] = m;
          uo[i] = w;
          u[i] = (m * r1) / w;
        }
        break;
      }
      case kTrace: {
        const float decay = sc[sc_trace::decay], keep = sc[sc_trace::one_minus_dampening];
        const bool first = sc[sc_trace::first] != 0.f, nesterov = sc[sc_trace::nesterov] != 0.f;
        const float* __restrict bi = si[0] + lo;
        float* __restrict bo = so[0] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float nb = first ? x : decay * bi[i] + keep * x;
          bo[i] = nb;
          u[i] = nesterov ? x + decay * nb : nb;
        }
        break;
      }
      case kLion: {
        const float b1 = sc[sc_lion::b1], c1 = sc[sc_lion::one_minus_b1], b2 = sc[sc_lion::b2],
                    c2 = sc[sc_lion::one_minus_b2];
        const float* __restrict mi = si[0] + lo;
        float* __restrict mo = so[0] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i], m = mi[i];
          u[i] = sign_of(b1 * m + c1 * x);
          mo[i] = b2 * m + c2 * x;
        }
        break;
      }
      case kRms: {
        const float decay = sc[sc_rms::decay], c = sc[sc_rms::one_minus_decay],
                    eps = sc[sc_rms::eps];
        const bool in_sqrt = sc[sc_rms::eps_in_sqrt] != 0.f;
        const float* __restrict vi = si[0] + lo;
        float* __restrict vo = so[0] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float v = decay * vi[i] + c * (x * x);
          vo[i] = v;
          u[i] = in_sqrt ? x * (1.f / std::sqrt(v + eps)) : x / (std::sqrt(v) + eps);
        }
        break;
      }
      case kRss: {
        const float eps = sc[sc_rss::eps];
        const bool in_sqrt = sc[sc_rss::eps_in_sqrt] != 0.f;
        const float* __restrict ri = si[0] + lo;
        float* __restrict ro = so[0] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float s = ri[i] + x * x;
          ro[i] = s;
          u[i] = in_sqrt ? (s > 0.f ? x * (1.f / std::sqrt(s + eps)) : 0.f)
                         : x / (std::sqrt(s) + eps);
        }
        break;
      }
      case kDecay: {
        const float wd = sc[sc_decay::weight_decay];
        const float* __restrict p = pr->params_in + lo;
        for (int64_t i = 0; i < len; ++i) u[i] = in[i] + wd * p[i];
        break;
      }
      case kScale: {
        const float s = sc[sc_scale::step_size];
        for (int64_t i = 0; i < len; ++i) u[i] = in[i] * s;
        break;
      }
      case kSign:
        for (int64_t i = 0; i < len; ++i) u[i] = sign_of(in[i]);
        break;
      case kEma: {
        const float decay = sc[sc_ema::decay], c = sc[sc_ema::one_minus_decay],
                    r = sc[sc_ema::inv_bc];
        const float* __restrict mi = si[0] + lo;
        float* __restrict mo = so[0] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float m = decay * mi[i] + c * in[i];
          mo[i] = m;
          u[i] = m * r;
        }
        break;
      }
      case kAdan: {
        const float b1 = sc[sc_adan::b1], c1 = sc[sc_adan::one_minus_b1], b2 = sc[sc_adan::b2],
                    c2 = sc[sc_adan::one_minus_b2], b3 = sc[sc_adan::b3],
                    c3 = sc[sc_adan::one_minus_b3], c = sc[sc_adan::c], eps = sc[sc_adan::eps],
                    eps_root = sc[sc_adan::eps_root], r1 = sc[sc_adan::inv_bc1],
                    r2 = sc[sc_adan::inv_bc2], r3 = sc[sc_adan::inv_bc3];
        const bool first = sc[sc_adan::first] != 0.f;
        const float* __restrict mi = si[0] + lo;
        const float* __restrict di = si[1] + lo;
        const float* __restrict ni = si[2] + lo;
        const float* __restrict gi = si[3] + lo;
        float* __restrict mo = so[0] + lo;
        float* __restrict dO = so[1] + lo;
        float* __restrict no = so[2] + lo;
        float* __restrict go = so[3] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float diff = first ? 0.f : x - gi[i];
          const float m = b1 * mi[i] + c1 * x;
          const float d = b2 * di[i] + c2 * diff;
          const float look = x + c * diff;
          const float v = b3 * ni[i] + c3 * (look * look);
          mo[i] = m;
          dO[i] = d;
          no[i] = v;
          go[i] = x;
          u[i] = (m * r1 + c * (d * r2)) / (std::sqrt(v * r3 + eps_root) + eps);
        }
        break;
      }
      case kOptimistic: {
        const float ab = sc[sc_optimistic::alpha_plus_beta], beta = sc[sc_optimistic::beta];
        const bool first = sc[sc_optimistic::first] != 0.f;
        const float* __restrict gi = si[0] + lo;
        float* __restrict go = so[0] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float prev = first ? x : gi[i];
          go[i] = x;
          u[i] = ab * x - beta * prev;
        }
        break;
      }
      case kSimplifiedAdemamix: {
        const float b1 = sc[sc_simplified_ademamix::b1], b2 = sc[sc_simplified_ademamix::b2],
                    c2 = sc[sc_simplified_ademamix::one_minus_b2],
                    alpha = sc[sc_simplified_ademamix::alpha], eps = sc[sc_simplified_ademamix::eps],
                    eps_root = sc[sc_simplified_ademamix::eps_root],
                    r2 = sc[sc_simplified_ademamix::inv_bc2];
        const float* __restrict mi = si[0] + lo;
        const float* __restrict ni = si[1] + lo;
        float* __restrict mo = so[0] + lo;
        float* __restrict no = so[1] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float m = b1 * mi[i] + x;  // a sum, not an average
          const float v = b2 * ni[i] + c2 * (x * x);
          mo[i] = m;
          no[i] = v;
          u[i] = (m + alpha * x) / (std::sqrt(v * r2 + eps_root) + eps);
        }
        break;
      }
      case kBelief: {
        const float b1 = sc[sc_belief::b1], c1 = sc[sc_belief::one_minus_b1],
                    b2 = sc[sc_belief::b2], c2 = sc[sc_belief::one_minus_b2],
                    eps = sc[sc_belief::eps], eps_root = sc[sc_belief::eps_root],
                    r1 = sc[sc_belief::inv_bc1], r2 = sc[sc_belief::inv_bc2];
        const float* __restrict mi = si[0] + lo;
        const float* __restrict vi = si[1] + lo;
        float* __restrict mo = so[0] + lo;
        float* __restrict vo = so[1] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float m = b1 * mi[i] + c1 * x;
          const float e = x - m;  // against the new mean
          const float v = b2 * vi[i] + c2 * (e * e) + eps_root;
          mo[i] = m;
          vo[i] = v;
          u[i] = (m * r1) / (std::sqrt(v * r2) + eps);
        }
        break;
      }
      case kAcprop: {
        const float b1 = sc[sc_acprop::b1], c1 = sc[sc_acprop::one_minus_b1],
                    b2 = sc[sc_acprop::b2], c2 = sc[sc_acprop::one_minus_b2],
                    eps = sc[sc_acprop::eps], eps_root = sc[sc_acprop::eps_root],
                    r2 = sc[sc_acprop::inv_prev_bc2];
        const bool first = sc[sc_acprop::first] != 0.f;
        const float* __restrict mi = si[0] + lo;
        const float* __restrict vi = si[1] + lo;
        float* __restrict mo = so[0] + lo;
        float* __restrict vo = so[1] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i], m_old = mi[i], v_old = vi[i];
          const float e = x - m_old;  // against the previous mean
          mo[i] = b1 * m_old + c1 * x;
          vo[i] = b2 * v_old + c2 * (e * e) + eps_root;
          const float v_hat = first ? 1.f : v_old * r2;  // the previous step's belief
          u[i] = x / (std::sqrt(v_hat) + eps);
        }
        break;
      }
      case kRprop: {
        const float down = sc[sc_rprop::eta_minus], up = sc[sc_rprop::eta_plus],
                    lo_step = sc[sc_rprop::min_step_size], hi_step = sc[sc_rprop::max_step_size];
        const bool current = sc[sc_rprop::current_step] != 0.f,
                   clamp_all = sc[sc_rprop::clamp_unchanged] != 0.f;
        const float* __restrict ssi = si[0] + lo;
        const float* __restrict pui = si[1] + lo;
        float* __restrict sso = so[0] + lo;
        float* __restrict puo = so[1] + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i], step = ssi[i], prev = pui[i];
          const float agree = x * prev;
          const float factor = agree > 0.f ? up : (agree < 0.f ? down : 1.f);
          const float grown = std::min(std::max(step * factor, lo_step), hi_step);
          const float new_step = (clamp_all || agree != 0.f) ? grown : step;
          const float now = agree < 0.f ? 0.f : new_step * sign_of(x);
          sso[i] = new_step;
          puo[i] = now;
          u[i] = current ? now : (agree < 0.f ? 0.f : prev);
        }
        break;
      }
      case kMadgrad: {
        const float lamb = sc[sc_madgrad::lamb], keep = sc[sc_madgrad::one_minus_momentum],
                    eps = sc[sc_madgrad::eps], lr_wd = sc[sc_madgrad::lr_wd];
        const bool decay = sc[sc_madgrad::decay] != 0.f,
                   decay_x0 = sc[sc_madgrad::decay_x0] != 0.f;
        const float* __restrict qi = si[0] + lo;
        const float* __restrict ti = si[1] + lo;
        const float* x0i = si[2] + lo;  // may be rewritten through x0o
        float* __restrict qo = so[0] + lo;
        float* __restrict to = so[1] + lo;
        float* x0o = so[2] + lo;  // the same memory as x0i (aliased) unless copied below
        const float* __restrict p = pr->params_in + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i];
          const float q = qi[i] + lamb * (x * x);
          const float t = ti[i] + lamb * x;
          const float sigma = std::cbrt(q) + eps;
          const float ratio = sigma == 0.f ? 0.f : t / sigma;  // no gradient yet: no step
          qo[i] = q;
          to[i] = t;
          float step = keep * ((x0i[i] - ratio) - p[i]);
          if (decay) {
            const float wd = lr_wd * p[i];
            step = step - wd;
            if (decay_x0) x0o[i] = x0i[i] - wd;  // momentum 0: the anchor follows the decay
          }
          u[i] = step;
        }
        if (!decay_x0) keep_unchanged(si[2], so[2], lo, len);
        break;
      }
      case kCocob: {
        const float alpha = sc[sc_cocob::alpha];
        const float* __restrict x0 = si[0] + lo;
        const float* __restrict ci = si[1] + lo;
        const float* __restrict li = si[2] + lo;
        const float* __restrict gi = si[3] + lo;
        const float* __restrict ri = si[4] + lo;
        float* __restrict co = so[1] + lo;
        float* __restrict lO = so[2] + lo;
        float* __restrict gO = so[3] + lo;
        float* __restrict ro = so[4] + lo;
        const float* __restrict p = pr->params_in + lo;
        for (int64_t i = 0; i < len; ++i) {
          const float x = in[i], ax = std::fabs(x);
          const float big_l = std::max(li[i], ax);
          const float big_g = gi[i] + ax;
          const float r = std::max(ri[i] - x * (p[i] - x0[i]), 0.f);
          const float c = ci[i] - x;
          const float frac = (big_l + r) / (big_l * std::max(big_g + big_l, alpha * big_l));
          lO[i] = big_l;
          gO[i] = big_g;
          ro[i] = r;
          co[i] = c;
          u[i] = x0[i] + c * frac - p[i];
        }
        keep_unchanged(si[0], so[0], lo, len);  // init_particles: read only
        break;
      }
      case kProximalDecay: {
        const float k = sc[sc_proximal_decay::lr_wd];
        const float* __restrict p = pr->params_in + lo;
        for (int64_t i = 0; i < len; ++i) u[i] = (in[i] - k * p[i]) / (1.f + k);
        break;
      }
      default:
        break;  // validated before running
    }
    sc += scalars_needed(op);
    b += buffers_needed(op);
    in = u;
  }
  const float* __restrict pi = pr->params_in + lo;
  float* __restrict po = pr->params_out + lo;
  if (scale_last) {
    const float lr = sc[sc_scale::step_size];
    for (int64_t i = 0; i < len; ++i) po[i] = pi[i] + in[i] * lr;
  } else {
    for (int64_t i = 0; i < len; ++i) po[i] = pi[i] + in[i];
  }
}

void run_range(const Program* pr, int64_t lo, int64_t hi) {
  for (int64_t s = lo; s < hi; s += kBlock) run_block(pr, s, std::min(kBlock, hi - s));
}

// Work shared between the calling thread and tasks on XLA's intra-op thread pool. Chunks
// are claimed from an atomic counter, so the caller finishes everything itself if no pool
// thread is free (no deadlock), and a task that starts late finds nothing left to do.
struct Shared {
  Program program;
  int64_t chunks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  int64_t chunk = kBlock;  // elements per range

  void work() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      const int64_t lo = c * chunk;
      run_range(&program, lo, std::min(program.n, lo + chunk));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error Step(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                ffi::RemainingRets rets, ffi::Span<const int64_t> ops) {
  auto shared = std::make_shared<Shared>();
  Program& pr = shared->program;
  pr.ops.assign(ops.begin(), ops.end());
  int64_t n_scalars = 0, n_bufs = 0;
  for (int64_t op : pr.ops) {
    const int64_t s = scalars_needed(op);
    if (s < 0) return ffi::Error::InvalidArgument("jaxopt_zoo step kernel: unknown opcode");
    n_scalars += s;
    n_bufs += buffers_needed(op);
  }
  if (static_cast<int64_t>(scalars.element_count()) != n_scalars)
    return ffi::Error::InvalidArgument("jaxopt_zoo step kernel: wrong number of scalars");
  if (static_cast<int64_t>(args.size()) != 2 + n_bufs ||
      static_cast<int64_t>(rets.size()) != 1 + n_bufs)
    return ffi::Error::InvalidArgument("jaxopt_zoo step kernel: wrong number of buffers");
  pr.scalars.assign(scalars.typed_data(), scalars.typed_data() + n_scalars);

  auto p_in = args.get<ffi::Buffer<ffi::F32>>(0);
  auto g_in = args.get<ffi::Buffer<ffi::F32>>(1);
  auto p_out = rets.get<ffi::Buffer<ffi::F32>>(0);
  if (p_in.has_error() || g_in.has_error() || p_out.has_error())
    return ffi::Error::InvalidArgument("jaxopt_zoo step kernel: params and grads must be f32");
  pr.n = static_cast<int64_t>(p_in->element_count());
  if (static_cast<int64_t>(g_in->element_count()) != pr.n)
    return ffi::Error::InvalidArgument("jaxopt_zoo step kernel: grads and params differ in size");
  pr.params_in = p_in->typed_data();
  pr.grads = g_in->typed_data();
  pr.params_out = (*p_out)->typed_data();
  for (int64_t i = 0; i < n_bufs; ++i) {
    auto si = args.get<ffi::Buffer<ffi::F32>>(2 + i);
    auto so = rets.get<ffi::Buffer<ffi::F32>>(1 + i);
    if (si.has_error() || so.has_error() || static_cast<int64_t>(si->element_count()) != pr.n)
      return ffi::Error::InvalidArgument(
          "jaxopt_zoo step kernel: state buffers must be f32 and sized like the params");
    pr.state_in.push_back(si->typed_data());
    pr.state_out.push_back((*so)->typed_data());
  }

  if (pr.n < kParallelMin) {
    run_range(&pr, 0, pr.n);
    return ffi::Error::Success();
  }
  // One contiguous range of whole blocks per thread, so each thread streams through its
  // memory in order (finer interleaved chunks measured 3-10% slower).
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  shared->chunk = ((pr.n + threads - 1) / threads + kBlock - 1) / kBlock * kBlock;
  shared->chunks = (pr.n + shared->chunk - 1) / shared->chunk;
  const int64_t helpers = std::min<int64_t>(threads, shared->chunks) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([shared] { shared->work(); });
  shared->work();
  while (shared->done.load(std::memory_order_acquire) < shared->chunks)
    std::this_thread::yield();  // chunks claimed by pool threads are being run right now
  return ffi::Error::Success();
}

// --------------------------------------------------------------------------------------- //
// The same stages over 8-bit block-wise state (jaxopt_zoo.quant, bitsandbytes' format): a
// state buffer is uint8 codes into a 256-entry ascending map plus one float32 absmax per
// `block_size` elements. Each stretch of whole quantization blocks is dequantized into L1
// (value[code] * absmax), run through run_block as float32, and quantized again: the new
// absmax of each block, q = x / absmax (0 for an all-zero block), and the code of the nearest
// map value, halfway going down -- the number of midpoints (value[j] + value[j+1]) / 2
// below q, as jaxopt_zoo.quant.blockwise's "bnb" quantizer counts them. 1 + 4 bytes per
// 256 elements of state instead of 4 bytes an element.

constexpr int kCellShift = 16;  // a float's cell: its sign, exponent and top 7 mantissa bits
constexpr int64_t kCells = int64_t{1} << (32 - kCellShift);

struct QMap {
  const float* value;    // value[code], ascending
  const float* mid;      // mid[j] = (value[j] + value[j + 1]) / 2 for j < 255, then +inf
  const uint8_t* start;  // start[cell] = #{j : mid[j] < the smallest float of the cell}
};

// The number of midpoints below q: start from the count below q's cell (a few midpoints at
// most lie inside one cell) and step up. NaN gets code 0, as a failed search does in XLA.
// At most one midpoint lies inside a cell (map_tables checks it for the map it is given):
// the count is start plus one comparison (mid is padded with +inf past its 255 values).
// Measured on an AVX2-only Zen 1: gathering 8 codes at a time was slower than this.
inline uint8_t quantize_code(const uint8_t* __restrict start, const float* __restrict mid,
                             float q) {
  if (q != q) return 0;
  uint32_t bits;
  std::memcpy(&bits, &q, sizeof bits);
  const int c = start[bits >> kCellShift];
  return static_cast<uint8_t>(c + (mid[c] < q));
}

// max |x[j]|, vectorizable: the magnitudes' bit patterns order as the magnitudes do (a NaN
// comes out as a NaN, as jnp.max gives it).
inline float block_absmax(const float* __restrict x, int64_t m) {
  uint32_t top = 0;
  for (int64_t j = 0; j < m; ++j) {
    uint32_t bits;
    std::memcpy(&bits, x + j, sizeof bits);
    top = std::max(top, bits & 0x7FFFFFFFu);
  }
  float out;
  std::memcpy(&out, &top, sizeof out);
  return out;
}

enum StateKind : int64_t { kF32 = 0, kSigned8 = 1, kUnsigned8 = 2 };

struct QuantProgram {
  Program base;  // ops, scalars, params, grads (state pointers unused)
  std::vector<int64_t> kinds;
  std::vector<const float*> f32_in;  // per buffer (kF32), else null
  std::vector<float*> f32_out;
  std::vector<const uint8_t*> codes_in;  // per buffer (8-bit), else null
  std::vector<uint8_t*> codes_out;
  std::vector<const float*> absmax_in;
  std::vector<float*> absmax_out;
  QMap maps[2];  // signed, unsigned
  int64_t block_size;
  int64_t span;  // elements per stretch: a multiple of block_size and of kBlock
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void run_quant_range(const QuantProgram* qp, int64_t lo, int64_t hi) {
  const int64_t n_bufs = static_cast<int64_t>(qp->kinds.size());
  const int64_t bs = qp->block_size, span = qp->span;
  std::vector<float> local(static_cast<size_t>(2 * n_bufs * span));
  Program pr = qp->base;  // this thread's view: pointers into the stretch
  pr.state_in.assign(n_bufs, nullptr);
  pr.state_out.assign(n_bufs, nullptr);
  for (int64_t s = lo; s < hi; s += span) {
    const int64_t len = std::min(span, hi - s);
    pr.params_in = qp->base.params_in + s;
    pr.params_out = qp->base.params_out + s;
    pr.grads = qp->base.grads + s;
    for (int64_t k = 0; k < n_bufs; ++k) {
      if (qp->kinds[k] == kF32) {
        pr.state_in[k] = qp->f32_in[k] + s;
        pr.state_out[k] = qp->f32_out[k] + s;
        continue;
      }
      float* in = local.data() + 2 * k * span;
      const float* __restrict value = qp->maps[qp->kinds[k] == kSigned8 ? 0 : 1].value;
      const uint8_t* __restrict codes = qp->codes_in[k] + s;
      const float* absmax = qp->absmax_in[k] + s / bs;
      for (int64_t b = 0; b < len; b += bs) {
        const float a = absmax[b / bs];
        const int64_t m = std::min(bs, len - b);
        for (int64_t j = b; j < b + m; ++j) in[j] = value[codes[j]] * a;
      }
      pr.state_in[k] = in;
      pr.state_out[k] = in + span;
    }
    for (int64_t b = 0; b < len; b += kBlock) run_block(&pr, b, std::min(kBlock, len - b));
    for (int64_t k = 0; k < n_bufs; ++k) {
      if (qp->kinds[k] == kF32) continue;
      const QMap& map = qp->maps[qp->kinds[k] == kSigned8 ? 0 : 1];
      const float* x = local.data() + (2 * k + 1) * span;
      uint8_t* __restrict codes = qp->codes_out[k] + s;
      float* absmax = qp->absmax_out[k] + s / bs;
      float* __restrict q = local.data() + 2 * k * span;  // the dequantized input: done with
      for (int64_t b = 0; b < len; b += bs) {
        const int64_t m = std::min(bs, len - b);
        const float amax = block_absmax(x + b, m);
        absmax[b / bs] = amax;
        if (amax > 0.f) {
          for (int64_t j = b; j < b + m; ++j) q[j] = std::min(1.f, std::max(-1.f, x[j] / amax));
        } else {
          std::fill(q + b, q + b + m, 0.f);
        }
      }
      const uint8_t* __restrict start = map.start;
      const float* __restrict mid = map.mid;
      for (int64_t j = 0; j < len; ++j) codes[j] = quantize_code(start, mid, q[j]);
    }
  }
}

struct QuantShared {
  QuantProgram program;
  int64_t n = 0, chunk = 0, chunks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void work() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      const int64_t lo = c * chunk;
      run_quant_range(&program, lo, std::min(n, lo + chunk));
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

// Inputs: scalars, params, grads, the signed map's value[256], mid[256] and start[kCells],
// the unsigned map's three, then per state buffer either its float32 values (kind kF32) or
// its codes (uint8, one per element) and absmax (float32, one per block). Outputs: params,
// then per state buffer its float32 values or its codes and absmax (aliased by the caller).
ffi::Error QuantStep(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> scalars, ffi::RemainingArgs args,
                     ffi::RemainingRets rets, ffi::Span<const int64_t> ops,
                     ffi::Span<const int64_t> kinds, int64_t block_size) {
  auto shared = std::make_shared<QuantShared>();
  QuantProgram& qp = shared->program;
  Program& pr = qp.base;
  pr.ops.assign(ops.begin(), ops.end());
  qp.kinds.assign(kinds.begin(), kinds.end());
  int64_t n_scalars = 0, n_bufs = 0;
  for (int64_t op : pr.ops) {
    const int64_t s = scalars_needed(op);
    if (s < 0) return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: unknown opcode");
    n_scalars += s;
    n_bufs += buffers_needed(op);
  }
  if (static_cast<int64_t>(qp.kinds.size()) != n_bufs)
    return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: one kind per state buffer");
  if (block_size < 1 || (block_size & (block_size - 1)) != 0)
    return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: block_size: a power of two");
  if (static_cast<int64_t>(scalars.element_count()) != n_scalars)
    return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: wrong number of scalars");
  int64_t n_args = 2 + 6, n_rets = 1;
  for (int64_t k : qp.kinds) {
    if (k != kF32 && k != kSigned8 && k != kUnsigned8)
      return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: unknown state kind");
    n_args += k == kF32 ? 1 : 2;
    n_rets += k == kF32 ? 1 : 2;
  }
  if (static_cast<int64_t>(args.size()) != n_args || static_cast<int64_t>(rets.size()) != n_rets)
    return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: wrong number of buffers");
  pr.scalars.assign(scalars.typed_data(), scalars.typed_data() + n_scalars);

  auto p_in = args.get<ffi::Buffer<ffi::F32>>(0);
  auto g_in = args.get<ffi::Buffer<ffi::F32>>(1);
  auto p_out = rets.get<ffi::Buffer<ffi::F32>>(0);
  if (p_in.has_error() || g_in.has_error() || p_out.has_error())
    return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: params and grads must be f32");
  const int64_t n = static_cast<int64_t>(p_in->element_count());
  if (static_cast<int64_t>(g_in->element_count()) != n)
    return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: grads and params differ in size");
  pr.n = n;
  pr.params_in = p_in->typed_data();
  pr.grads = g_in->typed_data();
  pr.params_out = (*p_out)->typed_data();
  for (int m = 0; m < 2; ++m) {
    auto value = args.get<ffi::Buffer<ffi::F32>>(2 + 3 * m);
    auto mid = args.get<ffi::Buffer<ffi::F32>>(3 + 3 * m);
    auto start = args.get<ffi::Buffer<ffi::U8>>(4 + 3 * m);
    if (value.has_error() || mid.has_error() || start.has_error() ||
        value->element_count() != 256 || mid->element_count() != 256 ||
        static_cast<int64_t>(start->element_count()) != kCells)
      return ffi::Error::InvalidArgument("jaxopt_zoo 8-bit kernel: malformed code map tables");
    qp.maps[m] = QMap{value->typed_data(), mid->typed_data(), start->typed_data()};
  }
  const int64_t n_blocks = (n + block_size - 1) / block_size;
  int64_t a = 8, r = 1;
  for (int64_t k : qp.kinds) {
    if (k == kF32) {
      auto si = args.get<ffi::Buffer<ffi::F32>>(a++);
      auto so = rets.get<ffi::Buffer<ffi::F32>>(r++);
      if (si.has_error() || so.has_error() || static_cast<int64_t>(si->element_count()) != n)
        return ffi::Error::InvalidArgument(
            "jaxopt_zoo 8-bit kernel: float32 state must be sized like the params");
      qp.f32_in.push_back(si->typed_data());
      qp.f32_out.push_back((*so)->typed_data());
      qp.codes_in.push_back(nullptr);
      qp.codes_out.push_back(nullptr);
      qp.absmax_in.push_back(nullptr);
      qp.absmax_out.push_back(nullptr);
      continue;
    }
    auto ci = args.get<ffi::Buffer<ffi::U8>>(a++);
    auto ai = args.get<ffi::Buffer<ffi::F32>>(a++);
    auto co = rets.get<ffi::Buffer<ffi::U8>>(r++);
    auto ao = rets.get<ffi::Buffer<ffi::F32>>(r++);
    if (ci.has_error() || ai.has_error() || co.has_error() || ao.has_error() ||
        static_cast<int64_t>(ci->element_count()) != n ||
        static_cast<int64_t>(ai->element_count()) != n_blocks)
      return ffi::Error::InvalidArgument(
          "jaxopt_zoo 8-bit kernel: codes must be uint8 like the params, absmax float32 per block");
    qp.f32_in.push_back(nullptr);
    qp.f32_out.push_back(nullptr);
    qp.codes_in.push_back(ci->typed_data());
    qp.codes_out.push_back((*co)->typed_data());
    qp.absmax_in.push_back(ai->typed_data());
    qp.absmax_out.push_back((*ao)->typed_data());
  }
  qp.block_size = block_size;
  qp.span = std::max(block_size, kBlock);
  shared->n = n;
  if (n < kParallelMin) {
    run_quant_range(&qp, 0, n);
    return ffi::Error::Success();
  }
  const int64_t threads = std::max<int64_t>(pool.num_threads(), 1);
  shared->chunk = ((n + threads - 1) / threads + qp.span - 1) / qp.span * qp.span;
  shared->chunks = (n + shared->chunk - 1) / shared->chunk;
  const int64_t helpers = std::min<int64_t>(threads, shared->chunks) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([shared] { shared->work(); });
  shared->work();
  while (shared->done.load(std::memory_order_acquire) < shared->chunks)
    std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptZooStep, Step,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<ffi::Span<const int64_t>>("ops"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxoptZooQuantStep, QuantStep,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<ffi::Span<const int64_t>>("ops")
                                  .Attr<ffi::Span<const int64_t>>("kinds")
                                  .Attr<int64_t>("block_size"));
