/* backend.h: the one interface between kiln's models and the hardware.
 * A backend owns device memory and implements every numeric op (forward and
 * backward of each layer, losses, optimizer updates). The CPU backend (cpu.c,
 * OpenBLAS for the GEMMs) is the reference; a CUDA backend fills the same
 * table with kernels + cuBLAS. All float/int pointers passed to ops are DEVICE
 * pointers from alloc(); shapes are element counts. Backward ops ACCUMULATE
 * (+=) into every gradient they write; a NULL gradient pointer means "not
 * needed" and is skipped. Scratch gradients (datt, dpreatt) are unspecified
 * at masked (future) positions: a backend may write there. Buffers passed to one call never overlap (the CPU
 * backend declares them restrict). Ops cannot fail (a CUDA backend checks its calls
 * fail-fast, as STYLE.md says). */
#ifndef KN_NN_BACKEND_H
#define KN_NN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

/* Elementwise activations. */
enum { KN_ACT_RELU = 1, KN_ACT_TANH, KN_ACT_SIGMOID, KN_ACT_GELU };

/* Pooling kinds. */
enum { KN_POOL_MAX = 1, KN_POOL_AVG };

/* Sequence pooling for the text classifier. */
enum { KN_SEQPOOL_MEAN = 1, KN_SEQPOOL_CLS };

/* Optimizer kinds (optim.h parses them from JSON). */
enum { KN_OPT_SGD = 1, KN_OPT_ADAM, KN_OPT_ADAMW, KN_OPT_RMSPROP };

/* Shape of one 2-D convolution, NCHW input (B, C, H, W), weights
 * (OC, C, K, K), output (B, OC, OH, OW) with OH = (H + 2 pad - K) / stride + 1. */
typedef struct {
    int B, C, H, W;
    int OC, K, stride, pad;
    int OH, OW;
} kn_conv_shape;

/* Shape of one 2-D pooling: input (B, C, H, W), window K x K, stride S, no
 * padding; output (B, C, OH, OW), OH = (H - K) / S + 1. */
typedef struct {
    int B, C, H, W;
    int K, S;
    int OH, OW;
} kn_pool_shape;

/* Everything one optimizer update needs, computed on the host per step. */
typedef struct {
    int kind;           /* KN_OPT_* */
    float lr;           /* learning rate for this step */
    float beta1;        /* Adam/AdamW first moment; SGD momentum */
    float beta2;        /* Adam/AdamW second moment; RMSprop alpha */
    float eps;          /* Adam/AdamW/RMSprop denominator epsilon */
    float weight_decay; /* 0 for tensors without decay (biases, norms) */
    float bc1, bc2;     /* bias corrections 1 - beta^t (Adam/AdamW), else 1 */
    float grad_scale;   /* multiplies every gradient first (clipping), 1 = none */
} kn_optim_args;

/* One chunk of a multi-tensor optimizer update: floats [off, off + n) of
 * the parameter, gradient and state sets (which share one layout), with
 * weight decay or not. kn_optim_new cuts every tensor into chunks of at
 * most KN_OPTIM_CHUNK floats, so that a GPU block takes one chunk and the
 * blocks' work is even however the tensors' sizes vary. */
#define KN_OPTIM_CHUNK 65536

/* The largest head size of attention_fused_fwd/bwd. */
#define KN_ATTN_FUSED_MAX_HS 64
typedef struct {
    int64_t off;
    int32_t n;
    int32_t decay;
} kn_optim_chunk;

typedef struct kn_backend kn_backend;

struct kn_backend {
    const char *name; /* "cpu", "cuda" */

    /* --- memory: device buffers; alloc returns zeroed memory or NULL --- */
    void *(*alloc)(size_t bytes);
    void (*free)(void *p); /* accepts NULL */
    void (*to_device)(void *dst, const void *src, size_t bytes);
    void (*to_host)(void *dst, const void *src, size_t bytes);
    void (*zero)(void *p, size_t bytes);
    /* bf16 storage of saved activations (optional, both or neither: NULL
     * where a backend has none; the bf16 tables have them, the CPU's
     * emulation and CUDA's, and a transformer then keeps its saved qkv,
     * attention output and MLP pre-activation as bf16, model_tfm.c).
     * to_bf16: dst[i] = the top 16 bits of kn_round_bf16(src[i]) (nearest
     * even, every NaN 0x7FFF: CUDA's __float2bfloat16_rn); from_bf16:
     * dst[i] = src[i] << 16, exact. n elements of device memory each. */
    void (*to_bf16)(uint16_t *dst, const float *src, size_t n);
    void (*from_bf16)(float *dst, const uint16_t *src, size_t n);

    /* --- linear: out (N, OC) = inp (N, C) . w^T + bias; w (OC, C), bias (OC) or NULL --- */
    void (*matmul_fwd)(float *out, const float *inp, const float *w, const float *bias, int N,
                       int C, int OC);
    void (*matmul_bwd)(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                       const float *w, int N, int C, int OC);

    /* --- conv2d by im2col + GEMM; scratch holds conv2d_scratch(s) floats --- */
    size_t (*conv2d_scratch)(const kn_conv_shape *s);
    void (*conv2d_fwd)(float *out, const float *inp, const float *w, const float *bias,
                       float *scratch, const kn_conv_shape *s);
    void (*conv2d_bwd)(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                       const float *w, float *scratch, const kn_conv_shape *s);

    /* --- pooling; idx (B, C, OH, OW) records the max position (unused for avg) --- */
    void (*pool2d_fwd)(int kind, float *out, int *idx, const float *inp, const kn_pool_shape *s);
    void (*pool2d_bwd)(int kind, float *dinp, const float *dout, const int *idx,
                       const kn_pool_shape *s);

    /* --- embeddings: out (N, C) = wte[ids[n]]; ids in [0, rows of wte) --- */
    void (*embed_fwd)(float *out, const int *ids, const float *wte, int N, int C);
    void (*embed_bwd)(float *dwte, const float *dout, const int *ids, int N, int C);
    /* out (B, T, C) += wpe[t] (wpe is (maxT, C)) */
    void (*posemb_fwd)(float *out, const float *wpe, int B, int T, int C);
    void (*posemb_bwd)(float *dwpe, const float *dout, int B, int T, int C);

    /* --- layernorm over the last dim: inp (N, C), w, b (C), mean, rstd (N) saved --- */
    void (*layernorm_fwd)(float *out, float *mean, float *rstd, const float *inp, const float *w,
                          const float *b, int N, int C);
    void (*layernorm_bwd)(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                          const float *w, const float *mean, const float *rstd, int N, int C);

    /* --- multi-head self-attention: qkv (B, T, 3C) = [q | k | v], NH heads of
     * C / NH; preatt, att (B, NH, T, T) saved; out (B, T, C). causal = 1 masks
     * the future (GPT), 0 attends everywhere (classifier). --- */
    void (*attention_fwd)(float *out, float *preatt, float *att, const float *qkv, int B, int T,
                          int C, int NH, int causal);
    void (*attention_bwd)(float *dqkv, float *dpreatt, float *datt, const float *dout,
                          const float *qkv, const float *att, int B, int T, int C, int NH,
                          int causal);

    /* --- the same attention fused, without the T x T matrices (optional:
     * NULL where a backend has none; the CUDA backend's bf16 table has it,
     * KILN_CUDA_ATTENTION=gemm turns it off): fwd writes out (B, T, C) and
     * lse (B, NH, T), each query's log-sum-exp of its scaled scores; bwd
     * adds to dqkv from dout and the forward's qkv, out and lse. Head size
     * C / NH at most KN_ATTN_FUSED_MAX_HS (the model uses the unfused ops
     * past it). --- */
    void (*attention_fused_fwd)(float *out, float *lse, const float *qkv, int B, int T, int C,
                                int NH, int causal);
    void (*attention_fused_bwd)(float *dqkv, const float *dout, const float *qkv, const float *out,
                                const float *lse, int B, int T, int C, int NH, int causal);
    /* the same two reading qkv and (bwd) out as to_bf16 stored them (bf16
     * bits; optional, both or neither, only beside attention_fused_fwd/bwd
     * and to_bf16/from_bf16: NULL where a backend has none; the bf16
     * tables have them, so that a transformer's stored qkv and attention
     * output reach the fused attention without a widening pass). Each
     * computes what its fp32-input op computes on from_bf16 of its bf16
     * inputs: the CPU emulation widens and calls it; CUDA runs the same
     * kernels, which round their inputs to bf16 anyway, on the stored
     * values (the same bits). */
    void (*attention_fused_fwd_bf16)(float *out, float *lse, const uint16_t *qkv, int B, int T,
                                     int C, int NH, int causal);
    void (*attention_fused_bwd_bf16)(float *dqkv, const float *dout, const uint16_t *qkv,
                                     const uint16_t *out, const float *lse, int B, int T, int C,
                                     int NH, int causal);
    /* attention_fused_fwd_bf16 writing out (B, T, C bf16 bits) as to_bf16
     * would store it: to_bf16 of what that op computes (optional, only
     * beside the two above: NULL where a backend has none; the bf16
     * tables have it, so that a transformer's attention output is stored
     * by the attention itself). The CPU emulation runs that op into a
     * host copy and rounds it; CUDA's kernels round their fp32 result as
     * they write it (the same RNE as to_bf16): the same bits. */
    void (*attention_fused_fwd_to_bf16)(uint16_t *out, float *lse, const uint16_t *qkv, int B,
                                        int T, int C, int NH, int causal);

    /* --- KV cache of generation (kn_model_generate), optional: NULL where a
     * backend has none (then every token recomputes the whole context).
     * kv_store: rows 0..n-1 of K and V (each row C floats) = the key and the
     * value of the n qkv rows (3C each). kv_attention: out (C) = causal
     * attention of the query q (the first C floats of one qkv row) over rows
     * 0..p of K and V, NH heads of C / NH; att (NH, p + 1) is scratch. --- */
    void (*kv_store)(float *K, float *V, const float *qkv, int n, int C);
    void (*kv_attention)(float *out, float *att, const float *q, const float *K, const float *V,
                         int p, int C, int NH);

    /* --- activations, n elements; bwd reads inp (GELU) or out (others) --- */
    void (*act_fwd)(int kind, float *out, const float *inp, size_t n);
    void (*act_bwd)(int kind, float *dinp, const float *inp, const float *out, const float *dout,
                    size_t n);

    /* --- matmul_fwd/bwd and act_fwd/bwd reading their input inp as
     * to_bf16 stored it (bf16 bits, n or N C of them), optional, all four
     * or none, only beside to_bf16/from_bf16: NULL where a backend has
     * none; the bf16 tables have them, so that a transformer's consumers
     * of its stored activations (model_tfm.c) skip the widening pass and
     * the GEMM's own rounding of that operand. Each computes what its
     * fp32-input op computes on from_bf16(inp): the CPU emulation widens
     * and calls it; CUDA hands the bf16 operand to the same GEMM (which
     * rounded it to those very values; cuBLAS may choose its kernel by the
     * operand's alignment, as with any pointer) and runs the same
     * activation code on the widened element. Everything else as above:
     * dbias from the fp32 dout, dinp from dout and w. --- */
    void (*matmul_fwd_bf16)(float *out, const uint16_t *inp, const float *w, const float *bias,
                            int N, int C, int OC);
    void (*matmul_bwd_bf16)(float *dinp, float *dw, float *dbias, const float *dout,
                            const uint16_t *inp, const float *w, int N, int C, int OC);
    void (*act_fwd_bf16)(int kind, float *out, const uint16_t *inp, size_t n);
    void (*act_bwd_bf16)(int kind, float *dinp, const uint16_t *inp, const float *out,
                         const float *dout, size_t n);
    /* matmul_fwd writing its output as to_bf16 would store it: out (N, OC
     * bf16 bits) = to_bf16 of what matmul_fwd computes from the same
     * arguments (optional, only beside the four above: NULL where a
     * backend has none; the bf16 tables have it, so that a transformer's
     * qkv and MLP pre-activation are stored by their GEMM with no fp32
     * copy and no rounding pass, model_tfm.c). The CPU emulation runs its
     * matmul_fwd into a host copy and rounds that: the same bits. CUDA has
     * cuBLASLt round its fp32 accumulators (the bias added in fp32 by the
     * epilogue) as it writes, where it has an algorithm, else the fp32
     * GEMM into scratch and to_bf16 (matmul.cu): the same up to the order
     * of the GEMM's sums, which a kernel for a bf16 output may change. */
    void (*matmul_fwd_to_bf16)(uint16_t *out, const float *inp, const float *w, const float *bias,
                               int N, int C, int OC);

    /* --- dropout, inverted: mask[i] = keep ? 1/(1-p) : 0, drawn from a
     * counter-based hash of (seed, i) so every backend draws the same mask --- */
    void (*dropout_fwd)(float *out, float *mask, const float *inp, size_t n, float p,
                        uint64_t seed);
    void (*dropout_bwd)(float *dinp, const float *dout, const float *mask, size_t n);

    /* --- residual: out = a + b; bwd: da += dout, db += dout --- */
    void (*residual_fwd)(float *out, const float *a, const float *b, size_t n);
    void (*residual_bwd)(float *da, float *db, const float *dout, size_t n);

    /* --- sequence pooling: inp (B, T, C) -> out (B, C), mean over T or token 0 --- */
    void (*seqpool_fwd)(int kind, float *out, const float *inp, int B, int T, int C);
    void (*seqpool_bwd)(int kind, float *dinp, const float *dout, int B, int T, int C);

    /* --- fused stable softmax cross-entropy over the first V of Vp columns,
     * the probabilities never stored: logits (N, Vp), targets (N) with -1 =
     * ignored row (loss 0); fwd writes losses (N) and lse (N), each row's
     * log-sum-exp; bwd recomputes softmax = exp(logit - lse) as it writes
     * dlogits += (softmax - onehot) * dloss, padded columns untouched. --- */
    void (*xent_fwd)(float *losses, float *lse, const float *logits, const int *targets, int N,
                     int V, int Vp);
    void (*xent_bwd)(float *dlogits, const float *logits, const float *lse, const int *targets,
                     float dloss, int N, int V, int Vp);

    /* --- xent_fwd and xent_bwd in one pass over the logits, for a training
     * forward whose backward follows (optional: NULL where a backend has no
     * fused kernel; the model then runs the two; cpu.c has one, so CI runs
     * the model's fused path): writes losses and lse as
     * xent_fwd does and SETS (does not add to) every column of dlogits
     * (N, Vp): (softmax - onehot) * dloss on rows with a target, 0 on
     * ignored rows and padded columns. dlogits may be logits itself (the
     * one exception to "buffers never alias"): the gradient then replaces
     * the logits, each element read before it is written (GPT's training
     * keeps no second N x Vp buffer). --- */
    void (*xent_fused)(float *losses, float *lse, float *dlogits, const float *logits,
                       const int *targets, float dloss, int N, int V, int Vp);

    /* --- mean squared error: pred, y (N, D); losses (N) = mean_d (pred - y)^2;
     * bwd: dpred += dloss * 2 (pred - y) / D --- */
    void (*mse_fwd)(float *losses, const float *pred, const float *y, int N, int D);
    void (*mse_bwd)(float *dpred, const float *pred, const float *y, float dloss, int N, int D);

    /* --- batch normalisation per channel of inp (B, C, HW) (HW = 1 after a
     * linear layer): out = (inp - mean) * rstd * w + b, w, b (C). training = 1
     * takes mean and the biased variance over the B * HW values of each
     * channel, saves mean and rstd = 1 / sqrt(var + eps) (C), and moves the
     * running statistics: run = (1 - momentum) run + momentum batch, run_var
     * taking the unbiased variance (PyTorch's rule). training = 0 uses the
     * running statistics (left unchanged) and saves them as mean and rstd.
     * bwd differentiates the mode of the forward that saved mean and rstd. --- */
    void (*batchnorm_fwd)(float *out, float *mean, float *rstd, float *run_mean, float *run_var,
                          const float *inp, const float *w, const float *b, int B, int C, int HW,
                          float momentum, float eps, int training);
    void (*batchnorm_bwd)(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                          const float *w, const float *mean, const float *rstd, int B, int C,
                          int HW, int training);

    /* --- label smoothing on top of xent (same layout): fwd turns each
     * target row's loss (lse - logit[t], from xent_fwd) into
     * (1 - s) loss + s (lse - mean of the V logits); bwd adds
     * sdloss (onehot - 1/V) to those rows of dlogits, sdloss = s * dloss, so
     * that with xent_bwd's dloss (softmax - onehot) the sum is the gradient
     * of the smoothed loss. --- */
    void (*xent_smooth_fwd)(float *losses, const float *logits, const float *lse,
                            const int *targets, float s, int N, int V, int Vp);
    void (*xent_smooth_bwd)(float *dlogits, const int *targets, float sdloss, int N, int V, int Vp);

    /* --- reductions, returned to the host --- */
    double (*sum)(const float *x, size_t n);
    double (*sumsq)(const float *x, size_t n);

    /* --- optimizer update of n parameters; m, v are the optimizer state
     * (unused ones may be NULL for SGD/RMSprop) --- */
    void (*optim_update)(const kn_optim_args *a, float *param, const float *grad, float *m,
                         float *v, size_t n);

    /* --- every parameter in one update (optional: NULL runs optim_update
     * per tensor and sumsq on the host's side): chunks (nchunks, device
     * memory) tile the tensors of the sets param, grad, m, v; a->
     * weight_decay applies to chunks with decay, a->grad_scale is ignored.
     * The global norm sqrt(sumsq(grad, numel)) is computed when clip > 0
     * or norm is not NULL, on the device and feeding the update there (no
     * host round trip between them): the gradients are scaled by
     * clip / (norm + 1e-6) where norm > clip, as kn_optim_update does.
     * *norm (host) gets the norm when norm is not NULL. --- */
    void (*optim_update_all)(const kn_optim_args *a, float clip, float *param, const float *grad,
                             float *m, float *v, size_t numel, const kn_optim_chunk *chunks,
                             int nchunks, float *norm);

    /* --- a training step as one replayable unit (optional, all four or
     * none: NULL where a backend has none; cpu.c's are plain calls; the
     * CUDA backend's capture a CUDA graph, lib/nn/cuda/graph.cu, and
     * KILN_CUDA_GRAPH=0 leaves them NULL). host_alloc: zeroed host memory
     * the device copies to and from without staging (CUDA: pinned), or
     * NULL; host_free accepts NULL. graph_run(slot, key, fn, ctx): runs
     * fn(ctx), or replays what an earlier call with the same key captured
     * of it (then fn is not called); *slot (NULL at first) keeps that
     * state, graph_free(*slot) releases it. Returns 1 when the step ran as
     * a graph, 0 when fn ran. fn must issue the same ops with the same
     * arguments for the same key; anything that changes between steps must
     * be in host_alloc memory at fixed addresses that fn copies with
     * to_device / to_host (or passes as optim_update_all's args and norm),
     * and fn must not read device values on the host. When graph_run
     * returns the device is done and those copies have landed. --- */
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *p);
    int (*graph_run)(void **slot, uint64_t key, void (*fn)(void *ctx), void *ctx);
    void (*graph_free)(void *slot);
};

/* Device memory a backend holds, in bytes, counted by the backend itself
 * (kn_backend_mem). `alloc`: what alloc() handed out and free() has not
 * taken back (tensor sets: parameters, gradients, optimizer state,
 * activations and their gradients; token ids; im2col scratch; KV caches):
 * the sizes the callers ask for, so the same on every backend by
 * construction. `scratch`: the backend's own working buffers, grown on
 * demand and kept (CUDA: the bf16 copies of GEMM operands, reduction
 * partials, cuBLASLt's workspace; 0 on the CPU, whose emulation rounds
 * into short-lived host copies). Peaks: the most at once since the last
 * reset; `peak` is alloc + scratch together. */
typedef struct {
    size_t alloc, alloc_peak;
    size_t scratch, scratch_peak;
    size_t peak;
} kn_mem_stats;

/* The counters of be's device memory (shared by its precision variants:
 * they are the same memory); reset_peak = 1 then starts the peaks again
 * from the current figures. */
void kn_backend_mem(const kn_backend *be, kn_mem_stats *out, int reset_peak);

/* For backend implementations: record that p (bytes long) was handed out,
 * as an alloc() (scratch = 0) or as the backend's own scratch (1), and that
 * it was given back (p NULL: nothing). ledger: KN_MEM_CPU or KN_MEM_CUDA.
 * Thread-safe. */
enum { KN_MEM_CPU = 0, KN_MEM_CUDA = 1 };
void kn_mem_note_alloc(int ledger, int scratch, const void *p, size_t bytes);
void kn_mem_note_free(int ledger, const void *p);

/* Marks the span a profiler should measure (on = 1 starts it, 0 ends it,
 * after waiting for the device): on CUDA cudaProfilerStart / Stop, which
 * `ncu --profile-from-start off` and nsys's cudaProfilerApi capture range
 * follow (tests/gpu/50-profile.sh); nothing on the CPU. */
void kn_backend_profile_range(const kn_backend *be, int on);

/* The CPU backend (static, never freed). */
const kn_backend *kn_backend_cpu(void);

/* What the services' backend = auto means: 1 = CUDA when a GPU answers (and
 * libcublas loads), else the CPU. 1 since the CUDA backend passed
 * tests/gpu/run (its parity suite) on an H200; 0 would keep auto on the CPU. */
#define KN_AUTO_PICKS_CUDA 1

/* Backend by name ("cpu"; "cuda" when built with CUDA and a device and
 * cuBLAS are found), or NULL; kn_backend_why_not() then says why. */
const kn_backend *kn_backend_get(const char *name);
const char *kn_backend_why_not(const char *name);

/* The backend a service's `backend = auto | cpu | cuda` setting names: cuda
 * when asked for, or NULL when it is not available (kn_backend_why_not says
 * why); auto as KN_AUTO_PICKS_CUDA says, falling back to the CPU; NULL for
 * any other name. For auto it logs its choice: info "backend auto: cuda" or
 * a warning naming why CUDA is not used and that the CPU runs instead. */
const kn_backend *kn_backend_pick(const char *setting);

/* The dropout mask rule shared by every backend: uniform in [0, 1) from a
 * counter-based hash of (seed, i); keep when u >= p. */
static inline float kn_backend_uniform(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

#endif
