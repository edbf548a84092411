/* precision.h: the arithmetic precision of a backend's matrix products
 * (`trainer.precision = fp32 | tf32 | bf16`, bench --precision).
 *
 * What a precision changes, on every backend: the inputs of the GEMMs of the
 * linear and conv2d layers (forward and both backward products) are rounded
 * to TF32 (10 mantissa bits) or bf16 (7 bits), round-to-nearest-even; the
 * products accumulate in fp32 and write fp32. Everything else stays fp32:
 * parameters (the master weights), gradients, optimizer state, bias
 * gradients (summed from the fp32 output gradient), layernorm, softmax,
 * losses. bf16 also fuses attention (attention_fused_*, head size <= 64):
 * on CUDA the flash kernels (lib/nn/cuda/flash.cu), on the CPU an
 * emulation of them (precision.c); KILN_CUDA_ATTENTION=gemm keeps the
 * unfused fp32 attention. Checkpoints are fp32 whatever the precision, so
 * they load anywhere.
 *
 * CUDA: tf32 = cuBLAS's CUBLAS_COMPUTE_32F_FAST_TF32 on the fp32 operands;
 * bf16 = the operands converted to bf16 (round-to-nearest-even, one kernel)
 * and a bf16 x bf16 -> fp32 tensor-core GEMM with fp32 compute.
 * CPU: an emulation for tests: the same rounding applied to copies of the
 * GEMM inputs, then the fp32 OpenBLAS GEMM, so a GPU result can be checked
 * against the CPU computing the very same function (bf16 products of two
 * 8-bit mantissas are exact in fp32: only the summation order differs). The
 * trainer refuses tf32/bf16 on the CPU backend: the emulation is slower than
 * fp32 and buys nothing there. */
#ifndef KN_NN_PRECISION_H
#define KN_NN_PRECISION_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nn/backend.h"

typedef enum { KN_PREC_FP32 = 0, KN_PREC_TF32 = 1, KN_PREC_BF16 = 2 } kn_precision;

/* "fp32" | "tf32" | "bf16" -> *out; 0, or -1 for any other string. */
int kn_precision_parse(const char *s, kn_precision *out);
const char *kn_precision_name(kn_precision p); /* "fp32", "tf32", "bf16" */

/* Round-to-nearest-even of a float to bf16 (the top 16 bits of an fp32),
 * returned as the fp32 it stands for: ties to even, overflow to +-Inf, Inf
 * kept, subnormals rounded like any other number (no flush), every NaN to
 * the canonical quiet NaN 0x7FFF0000 (what CUDA's __float2bfloat16_rn
 * gives). */
static inline float kn_round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        u = 0x7FFF0000u;
    else
        u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, sizeof u);
    return x;
}

/* The same to TF32 (sign, 8 exponent bits, 10 mantissa bits): the low 13
 * bits of the fp32 rounded off, ties to even; NaN stays a quiet NaN. */
static inline float kn_round_tf32(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        u = (u | 0x00400000u) & 0xFFFFE000u;
    else
        u = (u + 0xFFFu + ((u >> 13) & 1u)) & 0xFFFFE000u;
    memcpy(&x, &u, sizeof u);
    return x;
}

/* dst[i] = src[i] rounded as p says (fp32: copied). */
void kn_precision_round(kn_precision p, float *dst, const float *src, size_t n);

/* The backend `be` computing its GEMMs in precision p: a table of the same
 * backend (same name, same buffers: models and tensors move freely between
 * the variants) whose linear and conv2d ops round as above; be itself for
 * fp32. NULL with a message in err when be has no such variant. The tables
 * are static and never freed. */
const kn_backend *kn_backend_with_precision(const kn_backend *be, kn_precision p, char *err,
                                            size_t errsz);

/* The precision a table returned above computes in (fp32 for any other). */
kn_precision kn_backend_precision(const kn_backend *be);

#endif
