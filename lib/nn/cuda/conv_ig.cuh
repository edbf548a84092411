/* conv_ig.cuh: the implicit-GEMM convolution kernels of conv.cu and the
 * host-side sizing they share (no launches: conv.cu launches them), in a
 * header of their own so that tests/gpu/test_conv_ig_host.cpp can compile
 * the same source on the host, with stand-ins for the CUDA built-ins (each
 * block's threads as fibers switched at __syncthreads, WMMA emulated by its
 * documented layouts), and check it against a direct convolution on
 * machines without a GPU. Included once, by conv.cu, after cuda_int.cuh
 * and <mma.h>. */
#ifndef KN_CONV_IG_CUH
#define KN_CONV_IG_CUH

/* ------------------------------------------------------------ implicit GEMM
 *
 * The three products of a convolution as GEMMs whose operands are gathered
 * from the NCHW tensors while a tile is staged in shared memory (the column
 * matrix exists only tile by tile), KP = OH OW, KK = K K:
 *
 *   forward  out (OC, B KP)    = w (OC, C KK)   x col (C KK, B KP)   + bias
 *   dinp     dinp (C, B H W)  += w' (C, OC KK)  x dcol' (OC KK, B H W)
 *   dweight  dw (OC, C KK)    += dout (OC, B KP) x col' (B KP, C KK)
 *
 * where col[(c, kh, kw), (b, oh, ow)] = inp[b, c, oh S - pad + kh,
 * ow S - pad + kw] (0 outside), w'[c, (o, kh, kw)] = w[o, c, kh, kw], and
 * dcol'[(o, kh, kw), (b, ih, iw)] = dout[b, o, oh, ow] where ih + pad - kh
 * = oh S and iw + pad - kw = ow S with the output pixel in range, else 0
 * (the input gradient gathers: each element is written by one thread).
 *
 * Every kernel: a block of 256 threads computes a 64 x 64 tile of the
 * product, walking K in steps of 16: each thread loads 4 elements of the
 * A tile and 4 of the B tile (zeros outside; layers of 32 or fewer output
 * rows, like the CNNs' first conv and second input gradient, fill half a
 * tile: a 32-row variant is left for when a GPU says it matters), rounded to the precision
 * (tf32: round-to-nearest-even as kn_round_tf32; bf16: __float2bfloat16_rn
 * as kn_round_bf16, so the device and the CPU's emulation round alike),
 * into shared memory, k-major (As[k][m], Bs[k][n]); then
 *   fp32: each thread a 4 x 4 block of the tile (float4 reads, FMA);
 *   tf32: 8 warps of 16 x 32, WMMA m16n16k8 (tf32 in, fp32 accumulate);
 *   bf16: the same with WMMA m16n16k16 (bf16 in, fp32 accumulate);
 * the accumulators go through shared memory (Cs, over As and Bs) to an
 * epilogue in which each thread owns one column n of the tile (decoded
 * once) and 16 rows, so stores along n are coalesced.
 * Four blocks an SM (__launch_bounds__: <= 64 registers, 17.4-17.8 KB of
 * shared memory a block; no spills, nvcc -Xptxas -v). No register prefetch
 * of the next K step: the other blocks on the SM hide the loads' latency.
 * Index arithmetic is 32-bit (ig_fits says when: else the im2col path); a
 * thread's fixed column (forward, dinp) or row-of-k (dweight) is decoded
 * once per block or per K step, and the (c, kh, kw) or (o, kh, kw) of the
 * tile's 16 k values by 16 threads into a double-buffered table (ktab),
 * written for step t + 1 during step t: two barriers a step.
 * dweight has few output tiles (64 x 800 at the CNN's second conv) and a
 * long K (B OH OW), so K is split into G groups (blockIdx.z) whose fp32
 * partial tiles are added in group order by kn_cu_col_partials_add
 * (deterministic, no atomics); G = 1 adds into dw directly. Its blocks of
 * the first column tile also sum the rows of dout they stage, in fp32
 * before rounding (as docs/nn.md says bias gradients are), each thread its
 * own k lane, then the 16 lanes of a row in a fixed xor tree: the bias
 * gradient comes out of the same pass over dout. */

#define IG_BM      64
#define IG_BN      64
#define IG_BK      16
#define IG_THREADS 256
#define IG_LDC     (IG_BN + 4) /* fp32 rows of Cs: ldm a multiple of 4, off the banks */

/* Staged element type and row strides (elements) per precision: 0 fp32,
 * 1 tf32 (stored as float), 2 bf16; WMMA wants ldm a multiple of 4 (32-bit)
 * or 8 (16-bit) and every fragment pointer 32-byte aligned. */
template <int PREC> struct ig_elt {
    typedef float T;
    static const int LDA = IG_BM + 4, LDB = IG_BN + 4;
};
template <> struct ig_elt<2> {
    typedef __nv_bfloat16 T;
    static const int LDA = IG_BM + 8, LDB = IG_BN + 8;
};

/* Shared memory: the A and B tiles during the K loop, then Cs (64 x 68
 * floats, 17 KB), the larger. */
#define IG_SMEM_FLOATS (IG_BM * IG_LDC)

static __device__ __forceinline__ float ig_round_tf32(float x) /* = kn_round_tf32 */
{
    unsigned u = __float_as_uint(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        u = (u | 0x00400000u) & 0xFFFFE000u;
    else
        u = (u + 0xFFFu + ((u >> 13) & 1u)) & 0xFFFFE000u;
    return __uint_as_float(u);
}

template <int PREC> static __device__ __forceinline__ typename ig_elt<PREC>::T ig_round(float x);
template <> __device__ __forceinline__ float ig_round<0>(float x) { return x; }
template <> __device__ __forceinline__ float ig_round<1>(float x) { return ig_round_tf32(x); }
template <> __device__ __forceinline__ __nv_bfloat16 ig_round<2>(float x)
{
    return __float2bfloat16_rn(x);
}

/* The tile's accumulators: zero(), step() over one staged K step, store()
 * into Cs (IG_BM x IG_BN, row stride IG_LDC). */
template <int PREC> struct ig_acc;

template <> struct ig_acc<0> { /* thread (ty, tx): rows 4 ty .. +3, columns 4 tx .. +3 */
    float v[4][4];
    __device__ __forceinline__ void zero()
    {
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                v[i][j] = 0.0f;
    }
    __device__ __forceinline__ void step(const float *As, const float *Bs)
    {
        const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
        for (int k = 0; k < IG_BK; k++) {
            const float4 a = *(const float4 *)(As + k * ig_elt<0>::LDA + ty * 4);
            const float4 b = *(const float4 *)(Bs + k * ig_elt<0>::LDB + tx * 4);
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    v[i][j] = fmaf(av[i], bv[j], v[i][j]);
        }
    }
    __device__ __forceinline__ void store(float *Cs)
    {
        const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
        for (int i = 0; i < 4; i++)
            *(float4 *)(Cs + (ty * 4 + i) * IG_LDC + tx * 4) =
                make_float4(v[i][0], v[i][1], v[i][2], v[i][3]);
    }
};

/* WMMA: warp w owns rows 16 (w % 4) .. +15 and columns 32 (w / 4) .. +31
 * (two 16 x 16 accumulators); KS is the MMA's k (8 tf32, 16 bf16). */
template <int PREC, int KS, typename FT> struct ig_acc_wmma {
    wmma::fragment<wmma::accumulator, 16, 16, KS, float> c[2];
    __device__ __forceinline__ void zero()
    {
        wmma::fill_fragment(c[0], 0.0f);
        wmma::fill_fragment(c[1], 0.0f);
    }
    __device__ __forceinline__ void step(const typename ig_elt<PREC>::T *As,
                                         const typename ig_elt<PREC>::T *Bs)
    {
        const int w = threadIdx.x / 32, wm = w % 4, wn = w / 4;
        const int LDA = ig_elt<PREC>::LDA, LDB = ig_elt<PREC>::LDB;
#pragma unroll 1 /* unrolled, the tf32 kernels took 98-118 registers */
        for (int kk = 0; kk < IG_BK; kk += KS) {
            wmma::fragment<wmma::matrix_a, 16, 16, KS, FT, wmma::col_major> fa;
            wmma::load_matrix_sync(fa, As + kk * LDA + wm * 16, LDA);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                wmma::fragment<wmma::matrix_b, 16, 16, KS, FT, wmma::row_major> fb;
                wmma::load_matrix_sync(fb, Bs + kk * LDB + wn * 32 + j * 16, LDB);
                wmma::mma_sync(c[j], fa, fb, c[j]);
            }
        }
    }
    __device__ __forceinline__ void store(float *Cs)
    {
        const int w = threadIdx.x / 32, wm = w % 4, wn = w / 4;
        for (int j = 0; j < 2; j++)
            wmma::store_matrix_sync(Cs + wm * 16 * IG_LDC + wn * 32 + j * 16, c[j], IG_LDC,
                                    wmma::mem_row_major);
    }
};
/* the staged values are already tf32 (ig_round<1>): exact in the MMA */
template <> struct ig_acc<1> : ig_acc_wmma<1, 8, wmma::precision::tf32> {};
template <> struct ig_acc<2> : ig_acc_wmma<2, 16, __nv_bfloat16> {};

struct ig_geo {
    int B, C, H, W, OC, K, S, pad, OH, OW;
    int KK, CKK, HW, CHW, KP, OCKP; /* K K, C K K, H W, C H W, OH OW, OC OH OW */
};

static ig_geo geo_of(const kn_conv_shape *s)
{
    const int KK = s->K * s->K, HW = s->H * s->W, KP = s->OH * s->OW;
    ig_geo g = {s->B,  s->C,        s->H,         s->W,      s->OC,      s->K,
                s->stride, s->pad,  s->OH,        s->OW,     KK,         s->C * KK,
                HW,    s->C * HW,   KP,           s->OC * KP};
    return g;
}

/* Every index the kernels form fits an int, and the grids are not empty
 * (an empty batch takes the im2col path, whose loops do nothing). */
static int ig_fits(const kn_conv_shape *s)
{
    const double lim = 2147483647.0 - 4.0 * IG_BN;
    const double B = s->B, in = B * s->C * s->H * s->W, out = B * s->OC * s->OH * s->OW;
    const double wn = (double)s->OC * s->C * s->K * s->K;
    return s->B > 0 && s->OH > 0 && s->OW > 0 && in < lim && out < lim && wn < lim &&
           B * s->H * s->W < lim && B * s->OH * s->OW < lim && (double)s->K < 32768;
}

#define IG_SHARED(PREC)                                                                            \
    typedef typename ig_elt<PREC>::T T;                                                            \
    const int LDA = ig_elt<PREC>::LDA, LDB = ig_elt<PREC>::LDB;                                    \
    __shared__ __align__(128) float smem[IG_SMEM_FLOATS];                                          \
    T *As = (T *)smem, *Bs = As + IG_BK * LDA;                                                     \
    float *Cs = smem;                                                                              \
    const int t = threadIdx.x

/* The epilogue of the forward and input-gradient kernels: thread (bk, bn)
 * takes column bn of the block's C tile in Cs, rows bk + 4 i, to dst[m
 * stride] for the rows m = m0 + ... below M: added to (ADD) or set, plus
 * bias[m] where bias is given. */
template <bool ADD>
static __device__ __forceinline__ void ig_write_column(float *dst, int stride, const float *Cs,
                                                       int m0, int M, int bk, int bn,
                                                       const float *bias)
{
#pragma unroll 4
    for (int i = 0; i < IG_BM / 4; i++) {
        const int ml = bk + 4 * i, m = m0 + ml;
        if (m >= M) continue;
        const float v = Cs[ml * IG_LDC + bn];
        if (ADD)
            dst[m * stride] += v;
        else
            dst[m * stride] = v + (bias ? bias[m] : 0.0f);
    }
}

/* Forward: M = OC, N = B OH OW, K = C K K. ktab[k] = (c H W + kh W + kw,
 * kh << 16 | kw). The thread's B column n = (b, oh, ow) is fixed. */
template <int PREC>
__global__ void __launch_bounds__(IG_THREADS, 4)
    k_conv_fwd_ig(float *out, const float *inp, const float *w, const float *bias, ig_geo g)
{
    IG_SHARED(PREC);
    __shared__ int ktab[2][IG_BK][2];
    const int M = g.OC, N = g.B * g.KP, Kd = g.CKK;
    const int m0 = blockIdx.y * IG_BM, n0 = blockIdx.x * IG_BN;
    const int ak = t % IG_BK, am = t / IG_BK; /* A: column ak, rows am + 16 i */
    const int bn = t % IG_BN, bk = t / IG_BN; /* B: column bn, rows bk + 4 i */
    const int n = n0 + bn, nok = n < N;
    int b = 0, p = 0, ih0 = 0, iw0 = 0;
    if (nok) {
        b = n / g.KP, p = n - b * g.KP;
        const int oh = p / g.OW, ow = p - oh * g.OW;
        ih0 = oh * g.S - g.pad, iw0 = ow * g.S - g.pad;
    }
    const int nbase = b * g.CHW + ih0 * g.W + iw0; /* used only where in range */
    if (t < IG_BK) {
        const int k = t, c = k / g.KK, r = k - c * g.KK, kh = r / g.K, kw = r - kh * g.K;
        ktab[0][t][0] = c * g.HW + kh * g.W + kw, ktab[0][t][1] = kh << 16 | kw;
    }
    __syncthreads();
    ig_acc<PREC> acc;
    acc.zero();
    const int steps = (Kd + IG_BK - 1) / IG_BK;
    for (int st = 0; st < steps; st++) {
        const int k0 = st * IG_BK, cur = st & 1;
#pragma unroll
        for (int i = 0; i < IG_BM / 16; i++) {
            const int m = m0 + am + 16 * i, k = k0 + ak;
            As[ak * LDA + am + 16 * i] = ig_round<PREC>(m < M && k < Kd ? w[m * Kd + k] : 0.0f);
        }
#pragma unroll
        for (int i = 0; i < IG_BK / 4; i++) {
            const int kl = bk + 4 * i, k = k0 + kl, hw = ktab[cur][kl][1];
            const int ih = ih0 + (hw >> 16), iw = iw0 + (hw & 0xFFFF);
            float v = 0.0f;
            if (nok && k < Kd && (unsigned)ih < (unsigned)g.H && (unsigned)iw < (unsigned)g.W)
                v = inp[nbase + ktab[cur][kl][0]];
            Bs[kl * LDB + bn] = ig_round<PREC>(v);
        }
        if (t < IG_BK) { /* the next step's table (k past Kd: masked above) */
            const int k = k0 + IG_BK + t, c = k / g.KK, r = k - c * g.KK, kh = r / g.K,
                      kw = r - kh * g.K;
            ktab[cur ^ 1][t][0] = c * g.HW + kh * g.W + kw, ktab[cur ^ 1][t][1] = kh << 16 | kw;
        }
        __syncthreads();
        acc.step(As, Bs);
        __syncthreads();
    }
    acc.store(Cs);
    __syncthreads();
    if (nok) ig_write_column<false>(out + b * g.OCKP + p, g.KP, Cs, m0, M, bk, bn, bias);
}

/* Input gradient: M = C, N = B H W, K = OC K K. ktab[k] = (o C K K + kh K +
 * kw: w's offset, less c K K; o OH OW: dout's; kh << 16 | kw). The thread's
 * B column n = (b, ih, iw) is fixed. dinp is added to. */
template <int PREC>
__global__ void __launch_bounds__(IG_THREADS, 4)
    k_conv_dinp_ig(float *dinp, const float *dout, const float *w, ig_geo g)
{
    IG_SHARED(PREC);
    __shared__ int ktab[2][IG_BK][3];
    const int M = g.C, N = g.B * g.HW, Kd = g.OC * g.KK;
    const int m0 = blockIdx.y * IG_BM, n0 = blockIdx.x * IG_BN;
    const int ak = t % IG_BK, am = t / IG_BK;
    const int bn = t % IG_BN, bk = t / IG_BN;
    const int n = n0 + bn, nok = n < N;
    int b = 0, pix = 0, th0 = 0, tw0 = 0;
    if (nok) {
        b = n / g.HW, pix = n - b * g.HW;
        const int ih = pix / g.W, iw = pix - ih * g.W;
        th0 = ih + g.pad, tw0 = iw + g.pad;
    }
    const int nbase = b * g.OCKP;
    if (t < IG_BK) {
        const int k = t, o = k / g.KK, r = k - o * g.KK, kh = r / g.K, kw = r - kh * g.K;
        ktab[0][t][0] = o * g.CKK + r, ktab[0][t][1] = o * g.KP, ktab[0][t][2] = kh << 16 | kw;
    }
    __syncthreads();
    ig_acc<PREC> acc;
    acc.zero();
    const int steps = (Kd + IG_BK - 1) / IG_BK;
    for (int st = 0; st < steps; st++) {
        const int k0 = st * IG_BK, cur = st & 1;
        const int ka = k0 + ak, aoff = ktab[cur][ak][0];
#pragma unroll
        for (int i = 0; i < IG_BM / 16; i++) {
            const int m = m0 + am + 16 * i;
            As[ak * LDA + am + 16 * i] =
                ig_round<PREC>(m < M && ka < Kd ? w[aoff + m * g.KK] : 0.0f);
        }
#pragma unroll
        for (int i = 0; i < IG_BK / 4; i++) {
            const int kl = bk + 4 * i, k = k0 + kl, hw = ktab[cur][kl][2];
            const int th = th0 - (hw >> 16), tw = tw0 - (hw & 0xFFFF);
            int oh = th, ow = tw, ok = nok && k < Kd;
            if (g.S != 1) {
                ok = ok && th >= 0 && tw >= 0 && th % g.S == 0 && tw % g.S == 0;
                oh = th / g.S, ow = tw / g.S;
            }
            float v = 0.0f;
            if (ok && (unsigned)oh < (unsigned)g.OH && (unsigned)ow < (unsigned)g.OW)
                v = dout[nbase + ktab[cur][kl][1] + oh * g.OW + ow];
            Bs[kl * LDB + bn] = ig_round<PREC>(v);
        }
        if (t < IG_BK) {
            const int k = k0 + IG_BK + t, o = k / g.KK, r = k - o * g.KK, kh = r / g.K,
                      kw = r - kh * g.K;
            ktab[cur ^ 1][t][0] = o * g.CKK + r, ktab[cur ^ 1][t][1] = o * g.KP;
            ktab[cur ^ 1][t][2] = kh << 16 | kw;
        }
        __syncthreads();
        acc.step(As, Bs);
        __syncthreads();
    }
    acc.store(Cs);
    __syncthreads();
    if (nok) ig_write_column<true>(dinp + b * g.CHW + pix, g.HW, Cs, m0, M, bk, bn, NULL);
}

/* Weight gradient: M = OC, N = C K K, K = B OH OW, group blockIdx.z of G
 * takes k in [z kchunk, min(Kd, (z + 1) kchunk)). Every thread stages k
 * lane ak = t % 16 of rows (A) and columns (B) r + 16 i, r = t / 16, so one
 * decode of k = (b, oh, ow) a step serves both tiles, and consecutive lanes
 * read consecutive pixels. G = 1: dw and dbias are added to; else the
 * group's partials go to dwp[z M N ..] and dbp[z M ..]. dwp NULL: no
 * weight gradient (the grid is then one column tile); dbp NULL: no bias. */
template <int PREC>
__global__ void __launch_bounds__(IG_THREADS, 4)
    k_conv_dw_ig(float *dwp, float *dbp, const float *dout, const float *inp, ig_geo g, int G,
                 int kchunk)
{
    IG_SHARED(PREC);
    const int M = g.OC, N = g.CKK, Kd = g.B * g.KP;
    const int m0 = blockIdx.y * IG_BM, n0 = blockIdx.x * IG_BN, z = blockIdx.z;
    const int kb = z * kchunk, ke = kb + kchunk < Kd ? kb + kchunk : Kd;
    const int ak = t % IG_BK, r = t / IG_BK;
    int noff[IG_BN / 16], nhw[IG_BN / 16]; /* B columns r + 16 i: (c, kh, kw); -1: past N */
#pragma unroll
    for (int i = 0; i < IG_BN / 16; i++) {
        const int nn = n0 + r + 16 * i, c = nn / g.KK, q = nn - c * g.KK, kh = q / g.K;
        noff[i] = c * g.HW + kh * g.W + (q - kh * g.K);
        nhw[i] = nn < N ? kh << 16 | (q - kh * g.K) : -1;
    }
    const int sum_bias = dbp && blockIdx.x == 0; /* uniform over the block */
    float bsum[IG_BM / 16] = {};
    ig_acc<PREC> acc;
    acc.zero();
    for (int k0 = kb; k0 < ke; k0 += IG_BK) {
        const int k = k0 + ak, kok = k < ke;
        int abase = 0, ibase = 0, ih0 = 0, iw0 = 0;
        if (kok) {
            const int b = k / g.KP, p = k - b * g.KP, oh = p / g.OW, ow = p - oh * g.OW;
            ih0 = oh * g.S - g.pad, iw0 = ow * g.S - g.pad;
            abase = b * g.OCKP + p, ibase = b * g.CHW + ih0 * g.W + iw0;
        }
#pragma unroll
        for (int i = 0; i < IG_BM / 16; i++) {
            const int m = m0 + r + 16 * i;
            const float v = kok && m < M ? dout[abase + m * g.KP] : 0.0f;
            bsum[i] += v;
            As[ak * LDA + r + 16 * i] = ig_round<PREC>(v);
        }
#pragma unroll
        for (int i = 0; i < IG_BN / 16; i++) {
            const int ih = ih0 + (nhw[i] >> 16), iw = iw0 + (nhw[i] & 0xFFFF);
            float v = 0.0f;
            if (kok && nhw[i] >= 0 && (unsigned)ih < (unsigned)g.H && (unsigned)iw < (unsigned)g.W)
                v = inp[ibase + noff[i]];
            Bs[ak * LDB + r + 16 * i] = ig_round<PREC>(v);
        }
        __syncthreads();
        acc.step(As, Bs);
        __syncthreads();
    }
    if (sum_bias) { /* row r + 16 i: the 16 lanes of its half-warp, fixed tree */
#pragma unroll
        for (int i = 0; i < IG_BM / 16; i++) {
            float s = bsum[i];
            for (int off = 8; off > 0; off >>= 1)
                s += __shfl_xor_sync(0xffffffffu, s, off);
            const int m = m0 + r + 16 * i;
            if (ak == 0 && m < M) {
                if (G == 1)
                    dbp[m] += s;
                else
                    dbp[z * M + m] = s;
            }
        }
    }
    if (!dwp) return;
    acc.store(Cs);
    __syncthreads();
    const int bn = t % IG_BN, bk = t / IG_BN, n = n0 + bn;
    if (n >= N) return;
#pragma unroll 4
    for (int i = 0; i < IG_BM / 4; i++) {
        const int ml = bk + 4 * i, m = m0 + ml;
        if (m >= M) continue;
        const float v = Cs[ml * IG_LDC + bn];
        if (G == 1)
            dwp[m * N + n] += v;
        else
            dwp[(size_t)z * M * N + m * N + n] = v;
    }
}

/* The weight gradient's K split: G groups of kchunk (a multiple of IG_BK)
 * for about four blocks per SM (as many as fit) over the output tiles, at
 * least 4 K steps a group, at most IG_GROUPS_MAX; G never grows with a
 * smaller B, so the scratch sized at the model's largest batch holds every
 * call's partials. */
#define IG_GROUPS_MAX 256

static int ig_groups_max(const kn_conv_shape *s)
{
    const int tiles = ((s->OC + IG_BM - 1) / IG_BM) * ((s->C * s->K * s->K + IG_BN - 1) / IG_BN);
    int want = 4 * kn_cu_sms() / tiles;
    return want < 1 ? 1 : want > IG_GROUPS_MAX ? IG_GROUPS_MAX : want;
}

static int ig_groups(const kn_conv_shape *s, int *kchunk)
{
    const int steps = (s->B * s->OH * s->OW + IG_BK - 1) / IG_BK;
    int g = ig_groups_max(s);
    if (g > steps / 4) g = steps / 4 > 1 ? steps / 4 : 1;
    const int per = (steps + g - 1) / g; /* K steps a group */
    *kchunk = per * IG_BK;
    return (steps + per - 1) / per;
}

static size_t ig_scratch(const kn_conv_shape *s)
{
    return (size_t)ig_groups_max(s) * ((size_t)s->OC * s->C * s->K * s->K + s->OC);
}

#endif
