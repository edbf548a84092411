/* mma.cuh: the raw tensor-core instructions flash_mma.cuh is built on, as
 * small device wrappers around inline PTX (sm_80 and later; the backend
 * builds for sm_90):
 *
 *   mma_bf16_16816(c, a, b0, b1)  mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32,
 *                                 c (16 x 8 fp32) += a (16 x 16 bf16) b (16 x 8 bf16)
 *   ldmatrix_x4(r, p)             ldmatrix.sync.aligned.m8n8.x4.shared.b16: four 8 x 8
 *                                 bf16 matrices, lanes 8j .. 8j + 7 giving the row
 *                                 addresses of matrix j, r[j] its fragment
 *   ldmatrix_x4_trans(r, p)       the same, each matrix transposed (.trans)
 *   pack_bf16x2(lo, hi)           cvt.rn.bf16x2.f32: two floats rounded to nearest even,
 *                                 lo in the low 16 bits (the lower column of a fragment)
 *
 * The fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with
 * floating point type" and "ldmatrix"), with g = lane / 4 and t = lane % 4:
 *   A (16 x 16, row): a[0] = (row g, cols 2t, 2t+1), a[1] = (row g+8, same
 *     cols), a[2] = (row g, cols 2t+8, 2t+9), a[3] = (row g+8, cols 2t+8, 2t+9)
 *   B (16 x 8, col): b0 = (rows k = 2t, 2t+1, col g), b1 = (k = 2t+8, 2t+9, col g)
 *   C (16 x 8 fp32): c[0], c[1] = (row g, cols 2t, 2t+1), c[2], c[3] = (row g+8, same)
 *   ldmatrix, each 8 x 8 matrix M (row i at the address lane 8j + i gave):
 *     plain: (M[g][2t], M[g][2t+1]); .trans: (M[2t][g], M[2t+1][g])
 * (the lower column or row in the low half). So two adjacent n-tiles of C,
 * rounded pairwise to bf16, are exactly an A fragment of the next product
 * (FlashAttention-2's way of feeding P to P V without shared memory).
 *
 * Every wrapper is warp-collective: all 32 lanes call it together
 * (converged), each ldmatrix row address 16-byte aligned in shared memory.
 * The host-kernel tests define these same functions in
 * tests/gpu/host_mma.h (emulated from the layouts above, those rules
 * asserted) and include it first, which turns the definitions below off. */
#ifndef KN_MMA_CUH
#define KN_MMA_CUH

#include <stdint.h>

#ifndef KN_HOST_MMA_H

static __device__ __forceinline__ void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0,
                                                      uint32_t b1)
{
#ifdef __CUDA_ARCH__
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* The "memory" clobber keeps the compiler from moving the loads across
 * the plain stores that staged the tile (the barrier orders the threads,
 * the clobber the compiler). */
static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *p)
{
#ifdef __CUDA_ARCH__
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
#endif
}

static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *p)
{
#ifdef __CUDA_ARCH__
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
#endif
}

static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi)
{
    uint32_t r = 0;
#ifdef __CUDA_ARCH__
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo)); /* d = {hi, lo} */
#endif
    return r;
}

#endif /* KN_HOST_MMA_H */
#endif /* KN_MMA_CUH */
