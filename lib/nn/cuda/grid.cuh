/* grid.cuh: launch geometry shared by the kernels' launches (through
 * cuda_int.cuh) and tests/gpu's host tests (which include it directly). */
#ifndef KN_GRID_CUH
#define KN_GRID_CUH

/* Grid size for a grid-stride loop over n items (capped, at least 1). */
static inline unsigned blocks_for(size_t n, unsigned threads)
{
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65535u * 32u ? (b ? b : 1) : 65535u * 32u);
}

/* The per-plane elementwise kernels (conv_im2col.cuh, conv_bias.cuh,
 * pool.cuh, embedding.cuh's forwards) run on a 2-D grid: y over planes (a row of a column matrix, an
 * (image, channel) plane), x over the plane's elements, with 32-bit index
 * arithmetic within a plane (< 2^31 elements) and 64-bit plane offsets.
 * Their first versions decoded a flat 64-bit index with 64-bit divisions
 * per element (emulated on the GPU, tens of instructions each): im2col,
 * with six, was a quarter of the CNN B=256 step on the H200, about ten
 * times its memory-bound time. On this grid a block's plane is uniform
 * and an element costs one or two 32-bit divisions. */
static inline dim3 plane_grid(int per_plane, int planes)
{
    int x = (per_plane + 255) / 256;
    return dim3((unsigned)(x < 1024 ? (x ? x : 1) : 1024),
                (unsigned)(planes < 65535 ? planes : 65535));
}

#endif /* KN_GRID_CUH */
