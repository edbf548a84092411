/* flash_mma.cuh: the register-resident variant of flash.cuh's attention
 * kernels (KILN_CUDA_FLASH=mma selects it, flash.cu launches it), on raw
 * tensor-core instructions (mma.cuh: mma.sync m16n8k16 bf16 with fp32
 * accumulators, ldmatrix) instead of WMMA's opaque fragments, so that the
 * scores never leave registers: WMMA's kernels store every 16 x 64 score
 * tile to shared memory, run the softmax there and load P back (and in
 * the backward S, dP and dS too), which costs shared-memory bandwidth the
 * products do not need.
 *
 * Same tiles, semantics, roundings and outputs as flash.cuh (whose
 * stage(), visible(), FA_TILE, FA_WARPS and k_flash_delta it shares:
 * included after it): blocks of 4 warps over 64 rows, each warp 16 rows,
 * tiles of 64 keys (queries in dK/dV's kernel) staged in shared memory
 * as bf16 rows of D + 8 (16-byte aligned for ldmatrix, and 8 consecutive
 * rows fall on distinct banks: no conflicts), P and dS rounded to bf16
 * before their product, the row sum l of the unrounded p, lse = m + log l.
 *
 * A lane holds, of each 16-row result, rows g = lane / 4 and g + 8 and in
 * each n-tile of 8 columns the columns 2t, 2t + 1 (t = lane % 4): the
 * softmax reduces a row over the 4 lanes of a quad (__shfl_xor_sync 1, 2).
 *
 * Forward, per warp and key tile: S = Q K^T (Q's A fragments loaded once
 * and kept in registers, K's B fragments by ldmatrix from the [key][d]
 * rows), the mask only on tiles that need it (the causal diagonal, the
 * partial tiles past T), the online softmax on the accumulators, O scaled
 * by exp(m_old - m_new) in registers, P packed to bf16 pairs that are the
 * A fragments of P V directly, V's B fragments by ldmatrix.trans from the
 * [key][d] rows. No score goes to shared memory.
 *
 * Backward, the same two kernels as flash.cuh (deterministic, no
 * atomics): dK/dV per key tile (a warp's 16 keys: S^T = K Q^T and dP^T =
 * V dO^T with K's and V's A fragments kept in registers, P^T and dS^T =
 * P^T (dP^T - Delta) scale on the accumulators, then dV += P^T dO and
 * dK += dS^T Q with P^T, dS^T packed as A fragments and dO, Q read by
 * ldmatrix.trans), and dQ per query tile (S = Q K^T, dP = dO V^T, dS
 * in registers, dQ += dS K), each over the walked tile FM_BWD_N(D)
 * columns at a time (S and dP are live together: registers). The
 * transposes the backward needs are all on the staged operands
 * (ldmatrix.trans), never on a score tile, and the accumulator layout of
 * P^T, dS^T, dS is already the A layout of their products, so none of S,
 * P, dP, dS goes through shared memory either; the results are added to
 * dqkv straight from the accumulators (each element by one lane).
 *
 * Shared memory: 27 KB forward, 36.5 KB backward at hs = 64 (WMMA's: 70
 * and 79.5 KB). Registers (sm_90, ptxas, no spills): forward 77/91/128 at
 * D = 16/32/64, dK/dV 95/128/163, dQ 78/102/118. */
#ifndef KN_FLASH_MMA_CUH
#define KN_FLASH_MMA_CUH

#include "nn/cuda/mma.cuh"

#ifndef KN_FLASH_CUH
#error "include flash.cuh before flash_mma.cuh"
#endif

#define FM_NT (FA_TILE / 8) /* n-tiles of 8 columns in a 64-wide score tile */
/* The backward's score columns a step (of the 64 a tile): fewer than the
 * forward's 64 since S and dP are live together, and dK/dV's kernel holds
 * two D-wide accumulators. At D = 64, 16 columns keep k_flash_mma_bwd_kv
 * at 163 registers (3 blocks an SM; 189 with 32, 238 with 64: 2 blocks);
 * at D <= 32, 32 columns (more independent MMAs in flight) still fit 4
 * blocks. */
#define FM_BWD_N(D) ((D) > 32 ? 16 : 32)

/* ------------------------------------------------------------ fragments */

/* A fragment of the 16 x 16 block at (r0, c0) of a row-major bf16 tile
 * (ld elements a row): matrix j of ldmatrix is rows r0 + 8 (j % 2), cols
 * c0 + 8 (j / 2), as a[j] wants. */
static __device__ __forceinline__ void ld_a(uint32_t a[4], const bf16 *tile, int ld, int r0, int c0)
{
    const int lane = threadIdx.x % 32;
    ldmatrix_x4(a, tile + (r0 + (lane & 7) + (lane & 8)) * ld + c0 + (lane >> 4) * 8);
}

/* B fragments of two n-tiles (n0, n0 + 8) for k = k0 .. k0 + 15, from a
 * tile stored [n][k] (K for Q K^T): matrices (n0, k0), (n0, k0 + 8),
 * (n0 + 8, k0), (n0 + 8, k0 + 8); b[0], b[1] the first n-tile, b[2], b[3]
 * the second. */
static __device__ __forceinline__ void ld_b_nk(uint32_t b[4], const bf16 *tile, int ld, int n0,
                                               int k0)
{
    const int lane = threadIdx.x % 32;
    ldmatrix_x4(b, tile + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + (lane & 8));
}

/* The same from a tile stored [k][n] (V for P V), transposed by ldmatrix:
 * matrices (k0, n0), (k0 + 8, n0), (k0, n0 + 8), (k0 + 8, n0 + 8). */
static __device__ __forceinline__ void ld_b_kn(uint32_t b[4], const bf16 *tile, int ld, int k0,
                                               int n0)
{
    const int lane = threadIdx.x % 32;
    ldmatrix_x4_trans(b, tile + (k0 + (lane & 7) + (lane & 8)) * ld + n0 + (lane >> 4) * 8);
}

/* s (16 x N, N / 8 n-tiles) = A (16 x D, D / 16 fragments in registers)
 * times the transpose of the N x D rows of tile: scores. */
template <int D, int N>
static __device__ __forceinline__ void mm_abt_reg(float s[N / 8][4], const uint32_t a[D / 16][4],
                                                  const bf16 *tile, int ld)
{
#pragma unroll
    for (int n = 0; n < N / 8; n++)
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int k = 0; k < D / 16; k++)
#pragma unroll
        for (int n = 0; n < N / 8; n += 2) {
            uint32_t b[4];
            ld_b_nk(b, tile, ld, 8 * n, 16 * k);
            mma_bf16_16816(s[n], a[k], b[0], b[1]);
            mma_bf16_16816(s[n + 1], a[k], b[2], b[3]);
        }
}

/* p (16 x N scores in accumulator layout) rounded to bf16 as the A
 * fragments of a product over its N columns: k-step k is n-tiles 2k
 * (a[k][0], a[k][1]) and 2k + 1 (a[k][2], a[k][3]). */
template <int N>
static __device__ __forceinline__ void to_a(uint32_t a[N / 16][4], const float p[N / 8][4])
{
#pragma unroll
    for (int k = 0; k < N / 16; k++) {
        a[k][0] = pack_bf16x2(p[2 * k][0], p[2 * k][1]);
        a[k][1] = pack_bf16x2(p[2 * k][2], p[2 * k][3]);
        a[k][2] = pack_bf16x2(p[2 * k + 1][0], p[2 * k + 1][1]);
        a[k][3] = pack_bf16x2(p[2 * k + 1][2], p[2 * k + 1][3]);
    }
}

/* acc (16 x D, D / 8 n-tiles) += P (16 x N, A fragments) times the N x D
 * rows of tile (stored [k][n]). */
template <int D, int N>
static __device__ __forceinline__ void mm_pv_reg(float acc[D / 8][4], const uint32_t p[N / 16][4],
                                                 const bf16 *tile, int ld)
{
#pragma unroll
    for (int k = 0; k < N / 16; k++)
#pragma unroll
        for (int n = 0; n < D / 8; n += 2) {
            uint32_t b[4];
            ld_b_kn(b, tile, ld, 16 * k, 8 * n);
            mma_bf16_16816(acc[n], p[k], b[0], b[1]);
            mma_bf16_16816(acc[n + 1], p[k], b[2], b[3]);
        }
}

/* g (one row of a (.., C3) tensor at the head's column) += this lane's
 * half of row r (0: g, 1: g + 8) of a 16 x D accumulator, columns < hs. */
template <int D>
static __device__ __forceinline__ void add_row(float *g, const float acc[D / 8][4], int r, int hs)
{
    const int c = 2 * (threadIdx.x % 4);
#pragma unroll
    for (int n = 0; n < D / 8; n++) {
        if (8 * n + c < hs) g[8 * n + c] += acc[n][2 * r];
        if (8 * n + c + 1 < hs) g[8 * n + c + 1] += acc[n][2 * r + 1];
    }
}

/* Whether a 64 x 64 tile of (rows r0.., columns c0..) needs the mask:
 * past T on either side, or (causal) a column right of some row. Rows are
 * the queries, columns the keys. */
static __device__ __forceinline__ bool tile_edge(int q0, int k0, int T, int causal)
{
    return q0 + FA_TILE > T || k0 + FA_TILE > T || (causal && k0 + FA_TILE - 1 > q0);
}

/* ------------------------------------------------------------ forward */

template <int D>
struct fmma_fwd_smem {
    bf16 q[FA_TILE][D + 8], k[FA_TILE][D + 8], v[FA_TILE][D + 8];
};

template <int D, typename X, typename O = float>
__global__ void __launch_bounds__(FA_WARPS * 32)
    k_flash_mma_fwd(O *out, float *lse, const X *qkv, int B, int T, int C, int NH, int causal)
{
    extern __shared__ __align__(128) unsigned char smem_raw[];
    fmma_fwd_smem<D> &sm = *reinterpret_cast<fmma_fwd_smem<D> *>(smem_raw);
    const int q0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    const int hs = C / NH, C3 = 3 * C, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int c2 = 2 * (lane % 4);                                 /* this lane's first column */
    const int row[2] = {q0 + 16 * w + lane / 4, q0 + 16 * w + lane / 4 + 8}; /* its queries */
    const float scale = 1.0f / sqrtf((float)hs);
    const int LD = D + 8;

    stage<D>(&sm.q[0][0], LD, qkv, b, q0, T, C3, h * hs, hs);
    __syncthreads();
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int k = 0; k < D / 16; k++)
        ld_a(qa[k], &sm.q[0][0], LD, 16 * w, 16 * k);
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    /* m: the rows' running max (scaled units); l: this lane's part of the
     * running sum (its 16 columns of each tile; the quad's sum at the end) */
    float m[2] = {-FLT_MAX, -FLT_MAX}, l[2] = {0.0f, 0.0f};
    const int kend = causal ? min(T, q0 + FA_TILE) : T;
    for (int k0 = 0; k0 < kend; k0 += FA_TILE) {
        __syncthreads(); /* the previous tile's K, V are read by every warp */
        stage<D>(&sm.k[0][0], LD, qkv, b, k0, T, C3, C + h * hs, hs);
        stage<D>(&sm.v[0][0], LD, qkv, b, k0, T, C3, 2 * C + h * hs, hs);
        __syncthreads();
        float s[FM_NT][4];
        mm_abt_reg<D, FA_TILE>(s, qa, &sm.k[0][0], LD);
        const bool edge = tile_edge(q0, k0, T, causal);
        float mx[2] = {-FLT_MAX, -FLT_MAX};
#pragma unroll
        for (int n = 0; n < FM_NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[n][e] * scale;
                if (edge && !visible(row[e / 2], k0 + 8 * n + c2 + e % 2, T, causal))
                    x = -INFINITY; /* exp gives exactly 0 against a finite max */
                s[n][e] = x;
                mx[e / 2] = fmaxf(mx[e / 2], x);
            }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mn = fmaxf(m[r], mx[r]);
            alpha[r] = expf(m[r] - mn);
            m[r] = mn;
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int n = 0; n < FM_NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float p = expf(s[n][e] - m[e / 2]);
                s[n][e] = p;
                l[e / 2] += p;
            }
#pragma unroll
        for (int n = 0; n < D / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                o[n][e] *= alpha[e / 2];
        uint32_t pa[FA_TILE / 16][4];
        to_a<FA_TILE>(pa, s);
        mm_pv_reg<D, FA_TILE>(o, pa, &sm.v[0][0], LD);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        if (row[r] >= T) continue;
        const float inv = 1.0f / l[r];
        O *dst = out + ((size_t)b * T + row[r]) * C + h * hs;
#pragma unroll
        for (int n = 0; n < D / 8; n++) {
            if (8 * n + c2 < hs) put_out(&dst[8 * n + c2], o[n][2 * r] * inv);
            if (8 * n + c2 + 1 < hs) put_out(&dst[8 * n + c2 + 1], o[n][2 * r + 1] * inv);
        }
        if (!c2) lse[((size_t)b * NH + h) * T + row[r]] = m[r] + logf(l[r]);
    }
}

/* ------------------------------------------------------------ backward */

template <int D>
struct fmma_bwd_smem {
    bf16 mine_a[FA_TILE][D + 8], mine_b[FA_TILE][D + 8]; /* the block's own tile (2 tensors) */
    bf16 walk_a[FA_TILE][D + 8], walk_b[FA_TILE][D + 8]; /* the tile walked over (2 tensors) */
    float lse[FA_TILE], delta[FA_TILE];                  /* the walked queries' (dK/dV) */
};

/* dK, dV of the key tile blockIdx.x: warps own 16 keys each, the scores
 * transposed (rows keys, columns queries). mine = K, V; walk = Q, dO. */
template <int D, typename X>
__global__ void __launch_bounds__(FA_WARPS * 32)
    k_flash_mma_bwd_kv(float *dqkv, const float *dout, const X *qkv, const float *lse_g,
                       const float *delta_g, int B, int T, int C, int NH, int causal)
{
    extern __shared__ __align__(128) unsigned char smem_raw[];
    fmma_bwd_smem<D> &sm = *reinterpret_cast<fmma_bwd_smem<D> *>(smem_raw);
    const int k0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    const int hs = C / NH, C3 = 3 * C, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int c2 = 2 * (lane % 4);
    const int key[2] = {k0 + 16 * w + lane / 4, k0 + 16 * w + lane / 4 + 8};
    const float scale = 1.0f / sqrtf((float)hs);
    const int LD = D + 8;
    const size_t bh = ((size_t)b * NH + h) * T;
    enum { NB = FM_BWD_N(D) };

    stage<D>(&sm.mine_a[0][0], LD, qkv, b, k0, T, C3, C + h * hs, hs);     /* K */
    stage<D>(&sm.mine_b[0][0], LD, qkv, b, k0, T, C3, 2 * C + h * hs, hs); /* V */
    __syncthreads();
    uint32_t ka[D / 16][4], va[D / 16][4];
#pragma unroll
    for (int k = 0; k < D / 16; k++) {
        ld_a(ka[k], &sm.mine_a[0][0], LD, 16 * w, 16 * k);
        ld_a(va[k], &sm.mine_b[0][0], LD, 16 * w, 16 * k);
    }
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dk[n][e] = dv[n][e] = 0.0f;
    for (int q0 = causal ? k0 : 0; q0 < T; q0 += FA_TILE) {
        __syncthreads(); /* the previous Q, dO, lse, Delta are read by every warp */
        stage<D>(&sm.walk_a[0][0], LD, qkv, b, q0, T, C3, h * hs, hs);  /* Q */
        stage<D>(&sm.walk_b[0][0], LD, dout, b, q0, T, C, h * hs, hs); /* dO */
        for (int e = threadIdx.x; e < FA_TILE; e += blockDim.x) {
            sm.lse[e] = q0 + e < T ? lse_g[bh + q0 + e] : 0.0f;
            sm.delta[e] = q0 + e < T ? delta_g[bh + q0 + e] : 0.0f;
        }
        __syncthreads();
        const bool edge = tile_edge(q0, k0, T, causal);
        for (int c0 = 0; c0 < FA_TILE; c0 += NB) { /* NB queries at a time */
            const bf16 *q = &sm.walk_a[c0][0], *go = &sm.walk_b[c0][0];
            /* S^T = K Q^T, dP^T = V dO^T (16 keys x NB queries a warp) */
            float s[NB / 8][4], dp[NB / 8][4];
            mm_abt_reg<D, NB>(s, ka, q, LD);
            mm_abt_reg<D, NB>(dp, va, go, LD);
#pragma unroll
            for (int n = 0; n < NB / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int c = c0 + 8 * n + c2 + e % 2; /* the query's column in the tile */
                    const float p = !edge || visible(q0 + c, key[e / 2], T, causal)
                                        ? expf(s[n][e] * scale - sm.lse[c])
                                        : 0.0f;
                    s[n][e] = p;
                    dp[n][e] = p * (dp[n][e] - sm.delta[c]) * scale; /* dS^T */
                }
            uint32_t pa[NB / 16][4];
            to_a<NB>(pa, s);
            mm_pv_reg<D, NB>(dv, pa, go, LD); /* dV += P^T dO */
            to_a<NB>(pa, dp);
            mm_pv_reg<D, NB>(dk, pa, q, LD); /* dK += scale dS^T Q (scale in dS) */
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (key[r] >= T) continue;
        float *g = dqkv + ((size_t)b * T + key[r]) * C3 + h * hs;
        add_row<D>(g + C, dk, r, hs);
        add_row<D>(g + 2 * C, dv, r, hs);
    }
}

/* dQ of the query tile blockIdx.x: warps own 16 queries each. mine = Q,
 * dO; walk = K, V. */
template <int D, typename X>
__global__ void __launch_bounds__(FA_WARPS * 32)
    k_flash_mma_bwd_q(float *dqkv, const float *dout, const X *qkv, const float *lse_g,
                      const float *delta_g, int B, int T, int C, int NH, int causal)
{
    extern __shared__ __align__(128) unsigned char smem_raw[];
    fmma_bwd_smem<D> &sm = *reinterpret_cast<fmma_bwd_smem<D> *>(smem_raw);
    const int q0 = blockIdx.x * FA_TILE, h = blockIdx.y, b = blockIdx.z;
    const int hs = C / NH, C3 = 3 * C, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int c2 = 2 * (lane % 4);
    const int row[2] = {q0 + 16 * w + lane / 4, q0 + 16 * w + lane / 4 + 8};
    const float scale = 1.0f / sqrtf((float)hs);
    const int LD = D + 8;
    const size_t bh = ((size_t)b * NH + h) * T;
    enum { NB = FM_BWD_N(D) };

    stage<D>(&sm.mine_a[0][0], LD, qkv, b, q0, T, C3, h * hs, hs);  /* Q */
    stage<D>(&sm.mine_b[0][0], LD, dout, b, q0, T, C, h * hs, hs); /* dO */
    __syncthreads();
    uint32_t qa[D / 16][4], da[D / 16][4];
#pragma unroll
    for (int k = 0; k < D / 16; k++) {
        ld_a(qa[k], &sm.mine_a[0][0], LD, 16 * w, 16 * k);
        ld_a(da[k], &sm.mine_b[0][0], LD, 16 * w, 16 * k);
    }
    float z[2], dl[2]; /* the rows' lse and Delta */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        z[r] = row[r] < T ? lse_g[bh + row[r]] : 0.0f;
        dl[r] = row[r] < T ? delta_g[bh + row[r]] : 0.0f;
    }
    float dq[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++)
        dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
    const int kend = causal ? min(T, q0 + FA_TILE) : T;
    for (int k0 = 0; k0 < kend; k0 += FA_TILE) {
        __syncthreads(); /* the previous K, V are read by every warp */
        stage<D>(&sm.walk_a[0][0], LD, qkv, b, k0, T, C3, C + h * hs, hs);     /* K */
        stage<D>(&sm.walk_b[0][0], LD, qkv, b, k0, T, C3, 2 * C + h * hs, hs); /* V */
        __syncthreads();
        const bool edge = tile_edge(q0, k0, T, causal);
        for (int c0 = 0; c0 < FA_TILE; c0 += NB) { /* NB keys at a time */
            const bf16 *k = &sm.walk_a[c0][0], *v = &sm.walk_b[c0][0];
            /* S = Q K^T, dP = dO V^T (16 queries x NB keys a warp) */
            float s[NB / 8][4], dp[NB / 8][4];
            mm_abt_reg<D, NB>(s, qa, k, LD);
            mm_abt_reg<D, NB>(dp, da, v, LD);
#pragma unroll
            for (int n = 0; n < NB / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e / 2, j = k0 + c0 + 8 * n + c2 + e % 2;
                    const float p = !edge || visible(row[r], j, T, causal)
                                        ? expf(s[n][e] * scale - z[r])
                                        : 0.0f;
                    dp[n][e] = p * (dp[n][e] - dl[r]) * scale; /* dS */
                }
            uint32_t pa[NB / 16][4];
            to_a<NB>(pa, dp);
            mm_pv_reg<D, NB>(dq, pa, k, LD); /* dQ += scale dS K (scale in dS) */
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++)
        if (row[r] < T) add_row<D>(dqkv + ((size_t)b * T + row[r]) * C3 + h * hs, dq, r, hs);
}

#endif /* KN_FLASH_MMA_CUH */
