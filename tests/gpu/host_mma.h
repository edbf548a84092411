/* host_mma.h: lib/nn/cuda/mma.cuh's wrappers (mma.sync m16n8k16 bf16,
 * ldmatrix .x4 and .x4.trans, cvt.rn.bf16x2.f32) emulated for the
 * host-kernel tests, on top of host_cuda.h (include that first, and this
 * before the kernels: mma.cuh then leaves its own definitions out).
 *
 * Each is warp-collective as on the device: every lane writes what it
 * brings (its registers, or its row address) to a per-warp exchange, a
 * warp barrier (host_cuda.h's __syncwarp: the scheduler runs every lane to
 * it), then each lane reads what the PTX ISA's fragment layouts say it
 * receives ("Matrix Fragments for mma.m16n8k16 with floating point type",
 * "Warp-level matrix load instruction: ldmatrix"; summarised in mma.cuh):
 * a wrong row or column in a kernel's addressing or its use of the
 * fragments changes the result as it would on the device. Asserted, each
 * counted in mma_faults (the first five on stderr): all 32 lanes of the
 * warp take part in the same call (same instruction, same place in the
 * sequence of collectives), and every ldmatrix row address is 16-byte
 * aligned and its 16 bytes inside the dynamic shared memory the launch
 * asked for. The products are exact bf16 x bf16 in fp32, summed in k
 * order onto the accumulator (the hardware's order inside an mma is not
 * specified; the tests compare by norm).
 *
 * The exchange takes host_cuda.h's shuffle sequence numbers (shfl_seq,
 * reset for each block), so shuffles and these interleave as on the
 * device, and two buffers used alternately as the shuffles do. */
#ifndef KN_HOST_MMA_H
#define KN_HOST_MMA_H

#ifndef KN_HOST_CUDA_H
#error "include host_cuda.h before host_mma.h"
#endif

static int mma_faults; /* mma / ldmatrix rules broken */

enum { MMA_OP_MMA = 1, MMA_OP_LDM, MMA_OP_LDM_T };

struct mma_slot {
    unsigned seq; /* the lane's shfl_seq at the call */
    int op;
    const uint16_t *p; /* ldmatrix: the row address this lane gives */
    uint32_t a[4], b[2]; /* mma: this lane's A and B fragments */
};
static mma_slot mma_buf[2][MAX_THREADS];
static int mma_arrived[2][MAX_THREADS / 32], mma_read[2][MAX_THREADS / 32];

static void mma_fault(const char *fmt, const char *what, int v)
{
    if (mma_faults++ < 5) {
        fprintf(stderr, "MMA fault (block %u,%u,%u thread %d): ", blockIdx.x, blockIdx.y,
                blockIdx.z, cur_thread);
        fprintf(stderr, fmt, what, v);
        fprintf(stderr, "\n");
    }
}

/* Writes this lane's slot, waits for the warp, checks that all 32 lanes
 * wrote the same call; returns the warp's 32 slots. The last lane to read
 * clears the arrival count (before any lane can write this buffer again:
 * that needs the next collective's barrier, which every lane reaches only
 * after its read here). */
static const mma_slot *mma_exchange(mma_slot mine)
{
    const int t = cur_thread, base = t - t % 32, w = t / 32;
    const unsigned seq = shfl_seq[t]++;
    const int k = (int)(seq & 1);
    mine.seq = seq;
    mma_buf[k][t] = mine;
    mma_arrived[k][w]++;
    __syncwarp();
    const char *name = mine.op == MMA_OP_MMA ? "mma" : mine.op == MMA_OP_LDM ? "ldmatrix"
                                                                            : "ldmatrix.trans";
    if (mma_arrived[k][w] != 32 || base + 32 > nthreads)
        mma_fault("%s: %d lanes of the warp take part (all 32 must)", name, mma_arrived[k][w]);
    else
        for (int l = 0; l < 32; l++)
            if (mma_buf[k][base + l].seq != seq || mma_buf[k][base + l].op != mine.op) {
                mma_fault("%s: lane %d is at another collective", name, l);
                break;
            }
    if (++mma_read[k][w] >= mma_arrived[k][w]) mma_arrived[k][w] = 0, mma_read[k][w] = 0;
    return &mma_buf[k][base];
}

static inline float mma_bf16_at(uint32_t r, int hi)
{
    return u2f((hi ? r >> 16 : r & 0xFFFFu) << 16);
}

/* c (16 x 8 fp32) += a (16 x 16 bf16, row) b (16 x 8 bf16, col) */
static inline void mma_bf16_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    mma_slot mine = {};
    mine.op = MMA_OP_MMA;
    memcpy(mine.a, a, sizeof mine.a);
    mine.b[0] = b0, mine.b[1] = b1;
    const mma_slot *s = mma_exchange(mine);
    const int lane = cur_thread % 32, g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; i++) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float acc = c[i];
        for (int k = 0; k < 16; k++) {
            /* A (row, k): lane 4 (row % 8) + (k % 8) / 2, register (row >= 8) + 2 (k >= 8) */
            const float x = mma_bf16_at(s[4 * (row % 8) + (k % 8) / 2].a[(row >= 8) + 2 * (k >= 8)],
                                        k & 1);
            /* B (k, col): lane 4 col + (k % 8) / 2, register k >= 8 */
            const float y = mma_bf16_at(s[4 * col + (k % 8) / 2].b[k >= 8], k & 1);
            acc += x * y;
        }
        c[i] = acc;
    }
}

/* element e of a row another lane gave: a NaN where that row was outside
 * the shared memory (already counted as a fault), never a wild read */
static inline uint16_t ldm_elem(const uint16_t *row, int e)
{
    const uintptr_t a = (uintptr_t)(row + e), lo = (uintptr_t)smem_raw, hi = lo + smem_bytes;
    return a >= lo && a + 2 <= hi ? row[e] : (uint16_t)0xFFFFu;
}

/* ldmatrix .x4 (trans: each 8 x 8 matrix transposed): matrix j's row i is
 * the 8 bf16 at the address lane 8 j + i gave; r[j] = (M[g][2t], M[g][2t+1])
 * plain, (M[2t][g], M[2t+1][g]) transposed, the first in the low half. */
static inline void host_ldmatrix(uint32_t r[4], const void *p, int trans)
{
    mma_slot mine = {};
    mine.op = trans ? MMA_OP_LDM_T : MMA_OP_LDM;
    mine.p = (const uint16_t *)p;
    const uintptr_t a = (uintptr_t)p, lo = (uintptr_t)smem_raw, hi = lo + smem_bytes;
    const char *name = trans ? "ldmatrix.trans" : "ldmatrix";
    if (a % 16) mma_fault("%s: row address %% 16 = %d (16-byte rows)", name, (int)(a % 16));
    if (a < lo || a + 16 > hi)
        mma_fault("%s: row outside the dynamic shared memory (%d bytes asked)", name,
                  (int)smem_bytes);
    const mma_slot *s = mma_exchange(mine);
    const int lane = cur_thread % 32, g = lane / 4, t = lane % 4;
    for (int j = 0; j < 4; j++) {
        uint16_t e0, e1;
        if (trans)
            e0 = ldm_elem(s[8 * j + 2 * t].p, g), e1 = ldm_elem(s[8 * j + 2 * t + 1].p, g);
        else
            e0 = ldm_elem(s[8 * j + g].p, 2 * t), e1 = ldm_elem(s[8 * j + g].p, 2 * t + 1);
        r[j] = (uint32_t)e0 | (uint32_t)e1 << 16;
    }
}
static inline void ldmatrix_x4(uint32_t r[4], const void *p) { host_ldmatrix(r, p, 0); }
static inline void ldmatrix_x4_trans(uint32_t r[4], const void *p) { host_ldmatrix(r, p, 1); }

/* cvt.rn.bf16x2.f32: RNE, NaN canonical (host_cuda.h's __float2bfloat16) */
static inline uint32_t pack_bf16x2(float lo, float hi)
{
    return (uint32_t)__float2bfloat16(lo).bits | (uint32_t)__float2bfloat16(hi).bits << 16;
}

#endif /* KN_HOST_MMA_H */
