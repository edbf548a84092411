/* flash.cuh: the flash-attention kernels of flash.cu (no launches: flash.cu
 * launches them; the design is in flash.cu's header comment), in a header
 * of their own so that tests/gpu/test_flash_host.cpp can compile the same
 * source on the host with stand-ins for the CUDA built-ins (each block's
 * threads as fibers switched at barriers, WMMA emulated by its documented
 * layouts, with the WMMA alignment and leading-dimension rules and the
 * shared-memory bounds asserted) and check it against the CPU backend's
 * attention on machines without a GPU. Included once, by flash.cu, after
 * cuda_int.cuh, <mma.h> and `using namespace nvcuda`. */
#ifndef KN_FLASH_CUH
#define KN_FLASH_CUH

#define FA_TILE  64  /* queries and keys a tile */
#define FA_WARPS 4   /* 16 rows each */
#define FA_LDS   (FA_TILE + 4) /* fp32 score rows (ldm a multiple of 4, off the banks) */
#define FA_LDP   (FA_TILE + 8) /* bf16 P rows (a multiple of 8) */

typedef __nv_bfloat16 bf16;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b_row;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_b_col;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

/* An input element as bf16 or as fp32, the input being fp32
 * (attention_fused_fwd/bwd) or bf16 as the model stored it
 * (attention_fused_*_bf16): rounding a bf16 value to bf16 again is the
 * identity, so both stage the same tiles from the same values. */
static __device__ __forceinline__ bf16 in_bf16(float x) { return __float2bfloat16(x); }
static __device__ __forceinline__ bf16 in_bf16(bf16 x) { return x; }
static __device__ __forceinline__ float in_float(float x) { return x; }
static __device__ __forceinline__ float in_float(bf16 x) { return __bfloat162float(x); }
/* The forward's output element: fp32, or bf16 as to_bf16 would store the
 * fp32 value (round to nearest even: attention_fused_fwd_to_bf16) */
static __device__ __forceinline__ void put_out(float *dst, float v)
{
    *dst = v;
}
static __device__ __forceinline__ void put_out(bf16 *dst, float v)
{
    *dst = __float2bfloat16_rn(v);
}

/* Stages rows [r0, r0 + 64) of one head's q, k or v (column offset col in
 * the (B, T, 3C) qkv row: C3 = 3C), or of a (B, T, C) tensor's head
 * (dout: C3 = C), as bf16, D columns (hs real, the rest 0), rows past T 0.
 * ld is the tile's row stride in elements; X, the input's element, float
 * or bf16. */
template <int D, typename X>
static __device__ __forceinline__ void stage(bf16 *tile, int ld, const X *src, int b, int r0,
                                             int T, int C3, int col, int hs)
{
    for (int e = threadIdx.x; e < FA_TILE * D; e += blockDim.x) {
        const int r = e / D, d = e % D, t = r0 + r;
        /* X() is +0 (value-initialised): float's 0, bf16's zero bits */
        const X x = t < T && d < hs ? src[((size_t)b * T + t) * C3 + col + d] : X();
        tile[r * ld + d] = in_bf16(x);
    }
}

/* Out (16 x 64, fp32, ld FA_LDS) = A (16 x D rows of a, ld lda) times the
 * transpose of B (64 x D rows of b, ld ldb): scores from row-major tiles. */
template <int D>
static __device__ __forceinline__ void mm_abt(float *out, const bf16 *a, int lda, const bf16 *b,
                                              int ldb)
{
#pragma unroll
    for (int n = 0; n < FA_TILE / 16; n++) {
        frag_c acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < D / 16; k++) {
            frag_a fa;
            frag_b_col fb;
            wmma::load_matrix_sync(fa, a + k * 16, lda);
            wmma::load_matrix_sync(fb, b + n * 16 * ldb + k * 16, ldb);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(out + n * 16, acc, FA_LDS, wmma::mem_row_major);
    }
}

/* acc[j] (16 x 16 column block j of a 16 x D result) += P (16 x 64 bf16,
 * ld FA_LDP) times V (64 x D rows, ld ldv). */
template <int D>
static __device__ __forceinline__ void mm_pv(frag_c *acc, const bf16 *p, const bf16 *v, int ldv)
{
#pragma unroll
    for (int k = 0; k < FA_TILE / 16; k++) {
        frag_a fa;
        wmma::load_matrix_sync(fa, p + k * 16, FA_LDP);
#pragma unroll
        for (int j = 0; j < D / 16; j++) {
            frag_b_row fb;
            wmma::load_matrix_sync(fb, v + k * 16 * ldv + j * 16, ldv);
            wmma::mma_sync(acc[j], fa, fb, acc[j]);
        }
    }
}

/* Whether key j is visible from query i (both absolute). */
static __device__ __forceinline__ bool visible(int i, int j, int T, int causal)
{
    return i < T && j < T && (!causal || j <= i);
}

/* ------------------------------------------------------------ forward */

template <int D>
struct fwd_smem {
    bf16 q[FA_TILE][D + 8], k[FA_TILE][D + 8], v[FA_TILE][D + 8];
    float s[FA_TILE][FA_LDS];   /* scores, each warp its 16 rows */
    bf16 p[FA_TILE][FA_LDP];    /* probabilities (unnormalised) */
    float o[FA_TILE][D + 4];    /* output accumulator */
};

template <int D, typename X, typename O = float>
__global__ void __launch_bounds__(FA_WARPS * 32)
    k_flash_fwd(O *out, float *lse, const X *qkv, int B, int T, int C, int NH, int causal)
{
    extern __shared__ __align__(128) unsigned char smem_raw[];
    fwd_smem<D> &sm = *reinterpret_cast<fwd_smem<D> *>(smem_raw);
    const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, q0 = qt * FA_TILE;
    const int hs = C / NH, C3 = 3 * C, w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int r = 16 * w + lane / 2, half = lane % 2, i = q0 + r; /* this lane's row */
    const float scale = 1.0f / sqrtf((float)hs);
    const int LD = D + 8, LO = D + 4;

    stage<D>(&sm.q[0][0], LD, qkv, b, q0, T, C3, h * hs, hs);
    for (int e = threadIdx.x; e < FA_TILE * D; e += blockDim.x)
        sm.o[e / D][e % D] = 0.0f;
    float m = -FLT_MAX, l = 0.0f;
    const int kend = causal ? min(T, q0 + FA_TILE) : T;
    for (int k0 = 0; k0 < kend; k0 += FA_TILE) {
        __syncthreads(); /* the previous tile's K, V are read by every warp */
        stage<D>(&sm.k[0][0], LD, qkv, b, k0, T, C3, C + h * hs, hs);
        stage<D>(&sm.v[0][0], LD, qkv, b, k0, T, C3, 2 * C + h * hs, hs);
        __syncthreads();
        mm_abt<D>(&sm.s[16 * w][0], &sm.q[16 * w][0], LD, &sm.k[0][0], LD);
        __syncwarp();
        /* online softmax over this lane's half row (32 columns) */
        float tmax = -FLT_MAX;
#pragma unroll 4
        for (int c = half * 32; c < half * 32 + 32; c++)
            if (visible(i, k0 + c, T, causal)) tmax = fmaxf(tmax, sm.s[r][c] * scale);
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        const float mn = fmaxf(m, tmax), alpha = expf(m - mn);
        float sum = 0.0f;
#pragma unroll 4
        for (int c = half * 32; c < half * 32 + 32; c++) {
            const float p = visible(i, k0 + c, T, causal) ? expf(sm.s[r][c] * scale - mn) : 0.0f;
            sm.p[r][c] = __float2bfloat16(p);
            sum += p;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * alpha + sum;
        m = mn;
        for (int d = half * (D / 2); d < half * (D / 2) + D / 2; d++)
            sm.o[r][d] *= alpha;
        __syncwarp();
        frag_c acc[D / 16];
#pragma unroll
        for (int j = 0; j < D / 16; j++)
            wmma::load_matrix_sync(acc[j], &sm.o[16 * w][j * 16], LO, wmma::mem_row_major);
        mm_pv<D>(acc, &sm.p[16 * w][0], &sm.v[0][0], LD);
#pragma unroll
        for (int j = 0; j < D / 16; j++)
            wmma::store_matrix_sync(&sm.o[16 * w][j * 16], acc[j], LO, wmma::mem_row_major);
        __syncwarp();
    }
    if (i >= T) return;
    const float inv = 1.0f / l;
    O *o = out + ((size_t)b * T + i) * C + h * hs;
    for (int d = half; d < hs; d += 2)
        put_out(&o[d], sm.o[r][d] * inv);
    if (!half) lse[((size_t)b * NH + h) * T + i] = m + logf(l);
}

/* ------------------------------------------------------------ backward */

/* delta[(b, h, t)] = dout . out over the head's hs columns, one warp a
 * row; out (the forward's) fp32 or as stored in bf16 (X). */
template <typename X>
__global__ void k_flash_delta(float *delta, const float *dout, const X *out, int B, int T, int C,
                              int NH)
{
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= B * NH * T) return;
    const int t = row % T, h = (row / T) % NH, b = row / (T * NH), hs = C / NH;
    const size_t at = ((size_t)b * T + t) * C + h * hs;
    float s = 0.0f;
    for (int d = lane; d < hs; d += 32)
        s += dout[at + d] * in_float(out[at + d]);
    s = warp_sum(s);
    if (!lane) delta[row] = s;
}

/* g[d] += the warp's 16 x D result (fragments acc) row rr, d < hs, through
 * the warp's 16 x FA_LDS fp32 staging rows st; two lanes a row. */
template <int D>
static __device__ __forceinline__ void add_frags(float *g, const frag_c *acc, float *st, int rr,
                                                 int half, int hs, bool valid)
{
    __syncwarp();
#pragma unroll
    for (int n = 0; n < D / 16; n++)
        wmma::store_matrix_sync(st + n * 16, acc[n], FA_LDS, wmma::mem_row_major);
    __syncwarp();
    if (valid)
        for (int d = half; d < hs; d += 2)
            g[d] += st[rr * FA_LDS + d];
}

template <int D>
struct bwd_smem {
    bf16 mine_a[FA_TILE][D + 8], mine_b[FA_TILE][D + 8];   /* the block's own tile (2 tensors) */
    bf16 walk_a[FA_TILE][D + 8], walk_b[FA_TILE][D + 8];   /* the tile walked over (2 tensors) */
    float s[FA_TILE][FA_LDS];   /* scores */
    float dp[FA_TILE][FA_LDS];  /* dP, then (key tile) dS */
    bf16 ds[FA_TILE][FA_LDP];   /* (key tile) P, then dS (bf16, MMA operand) */
    float lse[FA_TILE], delta[FA_TILE];
};

/* The dynamic shared memory as bwd_smem<D> (both backward kernels). */
template <int D>
static __device__ __forceinline__ bwd_smem<D> &bwd_view()
{
    extern __shared__ __align__(128) unsigned char smem_raw[];
    return *reinterpret_cast<bwd_smem<D> *>(smem_raw);
}

/* Where a backward block and lane are: the block's tile of 64 rows (keys
 * for k_flash_bwd_kv, queries for k_flash_bwd_q) starting at t0 of head h
 * of image b; warp w owns tile rows 16 w .. 16 w + 15, two lanes a row:
 * this lane's row r of the tile (own = t0 + r), columns half * 32 ..
 * half * 32 + 31 of the scores; bh is (b, h)'s first row of lse and delta. */
struct bwd_place {
    int t0, h, b, hs, C3, w, r, half, own;
    float scale;
    size_t bh;
};

static __device__ __forceinline__ bwd_place bwd_open(int T, int C, int NH)
{
    bwd_place P;
    P.t0 = blockIdx.x * FA_TILE, P.h = blockIdx.y, P.b = blockIdx.z;
    P.hs = C / NH, P.C3 = 3 * C, P.w = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    P.r = 16 * P.w + lane / 2, P.half = lane % 2, P.own = P.t0 + P.r;
    P.scale = 1.0f / sqrtf((float)P.hs);
    P.bh = ((size_t)P.b * NH + P.h) * T;
    return P;
}

/* The score block both backward kernels recompute for a tile walked over
 * (its first row walk0): the warp's 16 rows of S = mine_a walk_a^T and
 * dP = mine_b walk_b^T (S = Q K^T and dP = dO V^T for a query tile; their
 * transposes, rows keys and columns queries, for a key tile: ROWS_ARE_KEYS),
 * then for this lane's 32 columns P = exp(S scale - lse) where the key is
 * visible from the query, else 0, and dS = P (dP - Delta) scale, lse and
 * Delta being the query's (sm.lse, sm.delta: the row's or the column's).
 * Out: sm.ds = bf16 dS, or for a key tile bf16 P (the operand of dV +=
 * P^T dO) with fp32 dS in sm.dp (bf16 once dV is done). The warp's own
 * rows only: __syncwarp on both sides. */
template <int D, bool ROWS_ARE_KEYS>
static __device__ __forceinline__ void bwd_scores(bwd_smem<D> &sm, const bwd_place &P, int walk0,
                                                  int T, int causal)
{
    const int LD = D + 8, w = P.w, r = P.r;
    mm_abt<D>(&sm.s[16 * w][0], &sm.mine_a[16 * w][0], LD, &sm.walk_a[0][0], LD);
    mm_abt<D>(&sm.dp[16 * w][0], &sm.mine_b[16 * w][0], LD, &sm.walk_b[0][0], LD);
    __syncwarp();
    const float z_row = ROWS_ARE_KEYS ? 0.0f : sm.lse[r]; /* a query row's lse and Delta */
    const float dl_row = ROWS_ARE_KEYS ? 0.0f : sm.delta[r];
#pragma unroll 4
    for (int c = P.half * 32; c < P.half * 32 + 32; c++) {
        const int i = ROWS_ARE_KEYS ? walk0 + c : P.own; /* the query */
        const int j = ROWS_ARE_KEYS ? P.own : walk0 + c; /* the key */
        const float z = ROWS_ARE_KEYS ? sm.lse[c] : z_row;
        const float dl = ROWS_ARE_KEYS ? sm.delta[c] : dl_row;
        const float p = visible(i, j, T, causal) ? expf(sm.s[r][c] * P.scale - z) : 0.0f;
        const float ds = p * (sm.dp[r][c] - dl) * P.scale;
        if (ROWS_ARE_KEYS)
            sm.ds[r][c] = __float2bfloat16(p), sm.dp[r][c] = ds;
        else
            sm.ds[r][c] = __float2bfloat16(ds);
    }
    __syncwarp();
}

/* dK, dV of the key tile blockIdx.x: warps own 16 keys each, the scores
 * transposed (rows keys, columns queries). mine = K, V; walk = Q, dO. */
template <int D, typename X>
__global__ void __launch_bounds__(FA_WARPS * 32)
    k_flash_bwd_kv(float *dqkv, const float *dout, const X *qkv, const float *lse_g,
                   const float *delta_g, int B, int T, int C, int NH, int causal)
{
    bwd_smem<D> &sm = bwd_view<D>();
    const bwd_place P = bwd_open(T, C, NH);
    const int k0 = P.t0, h = P.h, b = P.b, hs = P.hs, C3 = P.C3, w = P.w, r = P.r, half = P.half;
    const int j = P.own; /* this lane's key */
    const int LD = D + 8;
    const size_t bh = P.bh;

    stage<D>(&sm.mine_a[0][0], LD, qkv, b, k0, T, C3, C + h * hs, hs);      /* K */
    stage<D>(&sm.mine_b[0][0], LD, qkv, b, k0, T, C3, 2 * C + h * hs, hs);  /* V */
    frag_c dk[D / 16], dv[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; n++)
        wmma::fill_fragment(dk[n], 0.0f), wmma::fill_fragment(dv[n], 0.0f);
    for (int q0 = causal ? k0 : 0; q0 < T; q0 += FA_TILE) {
        __syncthreads();
        stage<D>(&sm.walk_a[0][0], LD, qkv, b, q0, T, C3, h * hs, hs);   /* Q */
        stage<D>(&sm.walk_b[0][0], LD, dout, b, q0, T, C, h * hs, hs); /* dO */
        for (int e = threadIdx.x; e < FA_TILE; e += blockDim.x) {
            sm.lse[e] = q0 + e < T ? lse_g[bh + q0 + e] : 0.0f;
            sm.delta[e] = q0 + e < T ? delta_g[bh + q0 + e] : 0.0f;
        }
        __syncthreads();
        /* P^T, dS^T (16 keys x 64 queries a warp) */
        bwd_scores<D, true>(sm, P, q0, T, causal);
        /* dV += P^T dO */
        mm_pv<D>(dv, &sm.ds[16 * w][0], &sm.walk_b[0][0], LD);
        __syncwarp();
#pragma unroll 4
        for (int c = half * 32; c < half * 32 + 32; c++)
            sm.ds[r][c] = __float2bfloat16(sm.dp[r][c]);
        __syncwarp();
        /* dK += scale dS^T Q */
        mm_pv<D>(dk, &sm.ds[16 * w][0], &sm.walk_a[0][0], LD);
    }
    /* add the fragments to dqkv through this warp's score rows (16 x D fits in 16 x FA_LDS) */
    add_frags<D>(dqkv + ((size_t)b * T + j) * C3 + C + h * hs, dk, &sm.s[16 * w][0], r - 16 * w,
                 half, hs, j < T);
    add_frags<D>(dqkv + ((size_t)b * T + j) * C3 + 2 * C + h * hs, dv, &sm.s[16 * w][0],
                 r - 16 * w, half, hs, j < T);
}

/* dQ of the query tile blockIdx.x: warps own 16 queries each. mine = Q,
 * dO; walk = K, V. */
template <int D, typename X>
__global__ void __launch_bounds__(FA_WARPS * 32)
    k_flash_bwd_q(float *dqkv, const float *dout, const X *qkv, const float *lse_g,
                  const float *delta_g, int B, int T, int C, int NH, int causal)
{
    bwd_smem<D> &sm = bwd_view<D>();
    const bwd_place P = bwd_open(T, C, NH);
    const int q0 = P.t0, h = P.h, b = P.b, hs = P.hs, C3 = P.C3, w = P.w, r = P.r, half = P.half;
    const int i = P.own; /* this lane's query */
    const int LD = D + 8;
    const size_t bh = P.bh;

    stage<D>(&sm.mine_a[0][0], LD, qkv, b, q0, T, C3, h * hs, hs);       /* Q */
    stage<D>(&sm.mine_b[0][0], LD, dout, b, q0, T, C, h * hs, hs);   /* dO */
    for (int e = threadIdx.x; e < FA_TILE; e += blockDim.x) {
        sm.lse[e] = q0 + e < T ? lse_g[bh + q0 + e] : 0.0f;
        sm.delta[e] = q0 + e < T ? delta_g[bh + q0 + e] : 0.0f;
    }
    frag_c dq[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; n++)
        wmma::fill_fragment(dq[n], 0.0f);
    const int kend = causal ? min(T, q0 + FA_TILE) : T;
    for (int k0 = 0; k0 < kend; k0 += FA_TILE) {
        __syncthreads();
        stage<D>(&sm.walk_a[0][0], LD, qkv, b, k0, T, C3, C + h * hs, hs);      /* K */
        stage<D>(&sm.walk_b[0][0], LD, qkv, b, k0, T, C3, 2 * C + h * hs, hs);  /* V */
        __syncthreads();
        /* dS (16 queries x 64 keys a warp) */
        bwd_scores<D, false>(sm, P, k0, T, causal);
        /* dQ += scale dS K */
        mm_pv<D>(dq, &sm.ds[16 * w][0], &sm.walk_a[0][0], LD);
    }
    add_frags<D>(dqkv + ((size_t)b * T + i) * C3 + h * hs, dq, &sm.s[16 * w][0], r - 16 * w, half,
                 hs, i < T);
}

#endif /* KN_FLASH_CUH */
