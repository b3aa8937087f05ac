// Shared register tiling of the eight tiled matmul kernels (matmul_forward, _backward_input, _backward_weight, each
// with scalar and vec4 loads, and matmul_forward_f16w, matmul_backward_input_f16w). Not a kernel on its own: WGSL has
// no #include, so registry.ts `withMatmulTiles` appends this file to each kernel's own .wgsl, which holds the Params
// struct, the bindings, the tile strides (A_STRIDE4, B_STRIDE4), `reduction_length`, the operands' load jobs
// (fetch_a/stash_a, fetch_b/stash_b) and `store_chunk`.
// Every kernel computes an output block (rows, cols) = Σ over a reduction of a (row, depth) · b (depth, col):
// forward: out (M,N), reduction K; backward input: dinp (M,K), reduction N; backward weight: dweight (K,N),
// reduction M. The kernels differ only in how they fill the two tiles and in their store.
// - A workgroup owns a TILE_ROWS × TILE_COLS block of the output (default 128 × 128) and walks the reduction
//   TILE_DEPTH at a time (default 8). Each step stages the two operand blocks in workgroup memory, both depth-major,
//   a_tile (depth, row) and b_tile (depth, col), as arrays of vec4, so the inner loop reads 4 consecutive rows or
//   columns in one access.
// - Each thread keeps a THREAD_ROWS × THREAD_COLS block of outputs in registers (default 8 × 8: 16 × 16 = 256
//   threads), as up to 2 × 2 chunks of 4 × 4: rows ty·4 + {0..3} of each of THREAD_ROWS/4 row bands (tile halves),
//   columns tx·4 + {0..3} of each of THREAD_COLS/4 column bands. Per depth step it reads THREAD_ROWS/4 +
//   THREAD_COLS/4 vec4 from workgroup memory for THREAD_ROWS·THREAD_COLS multiply-adds, so arithmetic, not workgroup
//   memory, is the limit; neighbouring tx read neighbouring 16 bytes (no bank conflicts) and write neighbouring
//   columns (coalesced stores). The chunks are four mat4x4f, updated as values (an outer product per chunk), and the
//   band branches test override constants only: every pipeline is straight-line code whose accumulators stay in
//   registers without relying on a compiler to unroll loops over an indexed array.
// - Why 128 × 128 × 8, 8 × 8 per thread: the classic f32 SGEMM shape on desktop GPUs; 64 accumulators fit in
//   registers on NVIDIA, AMD, Apple and Intel (SIMD8), and the two tiles take 8.3 KB, so several workgroups share a
//   compute unit and hide each other's barriers. The host gives smaller outputs smaller tiles (64 × 64 with 4 × 4
//   per thread, 16 × 64 and 4 × 128 for few rows), because 128 × 128 tiles would leave most of a large GPU idle.
// - Tiles are written only as whole vec4 (a thread gathers 4 values, or transposes a 4 × 4 block of loaded vec4 in
//   registers, then stores once): a store to one component of a shared vec4 is a read-modify-write of the whole vec4
//   on some backends (Tint's FXC/HLSL output), which would race with the neighbouring thread's component.
// - A block read along the depth lands transposed, with a row stride of TILE_ROWS + 4 (or TILE_COLS + 4) floats so
//   that the stores of neighbouring threads hit distinct banks; each kernel sets its strides to match its loads.
// - Only edges are guarded: rows and columns past the output read the last valid one (clamped addresses; their
//   results are never stored); depths past the reduction exist only in the last, partial depth tile, whose loads
//   alone are masked (`partial` is a constant at each call, so full tiles compile without checks). `store_chunk`
//   checks the output's edges.
//
// The kernel part provides the tile strides, the reduction's length, and each operand's load as jobs: job e (0 ≤ e <
// A_JOBS) of a depth step reads a few global values and yields a value of type AStaged (a vec4f, or a transposed
// block), which stash_a then writes into a_tile as whole vec4. Splitting the load in two lets the lib either store
// each job at once (load_tiles) or keep it in registers while the current tile is multiplied (PREFETCH).
//   override A_STRIDE4, B_STRIDE4                 vec4 per depth row of a_tile and b_tile
//   override A_JOBS, B_JOBS                       load jobs per depth step, shared by the workgroup's threads
//   alias AStaged, BStaged                        what one job yields
//   fn reduction_length() -> u32                  the reduction's length (a Params field)
//   fn fetch_a(row0, d0, e, partial) -> AStaged   job e's global loads for depths d0..d0+TILE_DEPTH-1
//   fn stash_a(e, value, base)                    writes job e's value into a_tile, base vec4 into it (a tile copy)
//   fn fetch_b(col0, d0, e, partial) -> BStaged, fn stash_b(e, value, base)   the same for b_tile
//   fn store_chunk(chunk, row, col)               writes output rows row..row+3, columns col..col+3
//
// PREFETCH (off by default; ops/matmul.ts turns it on per tile): without it every depth step is load (global →
// workgroup), barrier, multiply, barrier, so each step waits for its global loads with nothing to do. With it, a
// thread issues the NEXT step's loads into private registers (a_staged, b_staged: at most FETCH_SLOTS jobs per
// operand) before multiplying the current tiles, and writes them into workgroup memory only afterwards, so the
// loads' latency overlaps the arithmetic. With one copy of the tiles that write waits for a barrier (everyone done
// reading), two barriers per step; with DOUBLE_BUFFER (and room for it) the tiles have two copies, the write goes to
// the one not being read, and one barrier per step remains. A tile whose jobs do not fit FETCH_SLOTS per thread runs
// without prefetch (PIPELINED is false), so every setting is correct; the host (ops/matmul.ts `prefetchFits`) applies
// the same rule to the largest job counts of the eight kernels, so what it plans with PREFETCH does prefetch.
//
// Split-K (forward kernels only: their store_chunk adds `split_index`'s slab offset): with SPLIT_K > 1, workgroup z
// reduces only its share of the depths, a whole number of TILE_DEPTH steps, and stores a partial product into slab z
// of a (SPLIT_K, rows, cols) scratch that matmul_split_reduce.wgsl sums. For a small output with a long reduction
// (the tied LM head's dlnf = dlogits·wte, K = V), which would otherwise leave most of the GPU idle.

override TILE_ROWS: u32 = 128;  // output rows per workgroup, multiple of THREAD_ROWS
override TILE_COLS: u32 = 128;  // output columns per workgroup, multiple of THREAD_COLS
override TILE_DEPTH: u32 = 8;   // reduction step, multiple of 4
override THREAD_ROWS: u32 = 8;  // 4 or 8
override THREAD_COLS: u32 = 8;  // 4 or 8
override SPLIT_K: u32 = 1;      // depth splits, one per workgroup z
override PREFETCH: bool = false;       // load the next depth step into registers while multiplying (see above)
override DOUBLE_BUFFER: bool = false;  // with PREFETCH: two copies of the tiles, one barrier per step

// Derived; not set by the wrapper.
override WG_COLS = TILE_COLS / THREAD_COLS;
override WG_ROWS = TILE_ROWS / THREAD_ROWS;
override THREADS = WG_COLS * WG_ROWS;
override ROW_BANDS = THREAD_ROWS / 4u;
override COL_BANDS = THREAD_COLS / 4u;
override ROW_BAND4 = TILE_ROWS / ROW_BANDS / 4u;  // vec4 between a thread's row chunks
override COL_BAND4 = TILE_COLS / COL_BANDS / 4u;

// Prefetch: the most jobs per operand a thread keeps in registers (a private array needs a constant size;
// ops/matmul.ts MATMUL_PREFETCH_SLOTS is the same number). 4 covers every tile the host picks but the 4-row one.
const FETCH_SLOTS = 4u;
override A_FETCHES = (A_JOBS + THREADS - 1u) / THREADS;  // jobs per thread, per depth step
override B_FETCHES = (B_JOBS + THREADS - 1u) / THREADS;
override PIPELINED = PREFETCH && A_FETCHES <= FETCH_SLOTS && B_FETCHES <= FETCH_SLOTS;
override TILE_COPIES = select(1u, 2u, PIPELINED && DOUBLE_BUFFER);
override A_COPY4 = TILE_DEPTH * A_STRIDE4;  // vec4 per copy of a_tile
override B_COPY4 = TILE_DEPTH * B_STRIDE4;

// a_tile: the row operand, (TILE_COPIES, TILE_DEPTH, TILE_ROWS [+ 4]); b_tile: the column operand, (TILE_COPIES,
// TILE_DEPTH, TILE_COLS [+ 4]). Copy c of each starts at c · A_COPY4 (c · B_COPY4).
var<workgroup> a_tile: array<vec4f, TILE_COPIES * TILE_DEPTH * A_STRIDE4>;
var<workgroup> b_tile: array<vec4f, TILE_COPIES * TILE_DEPTH * B_STRIDE4>;
var<private> a_staged: array<AStaged, FETCH_SLOTS>;  // PREFETCH: this thread's jobs of the next depth step
var<private> b_staged: array<BStaged, FETCH_SLOTS>;

// A thread's outputs as up to 2 × 2 chunks of 4×4, acc<row band><column band>; column i of a chunk holds its row i.
// Named matrices rather than an indexed array, so no compiler has to unroll loops to keep them in registers.
var<private> acc00: mat4x4f;
var<private> acc01: mat4x4f;
var<private> acc10: mat4x4f;
var<private> acc11: mat4x4f;
var<private> split_index: u32; // workgroup z: which slab store_chunk writes when SPLIT_K > 1

// chunk + a ⊗ b: 4 rows a, 4 columns b.
fn outer(chunk: mat4x4f, a: vec4f, b: vec4f) -> mat4x4f {
  return mat4x4f(fma(vec4f(a.x), b, chunk[0]), fma(vec4f(a.y), b, chunk[1]),
                 fma(vec4f(a.z), b, chunk[2]), fma(vec4f(a.w), b, chunk[3]));
}

// Multiplies tile copy `copy` into the accumulators. The band branches test override constants only, so each pipeline
// compiles to straight-line code.
fn multiply_tiles(tx: u32, ty: u32, copy: u32) {
  let a_base = copy * A_COPY4;
  let b_base = copy * B_COPY4;
  for (var d = 0u; d < TILE_DEPTH; d++) {
    let a0 = a_tile[a_base + d * A_STRIDE4 + ty];
    let b0 = b_tile[b_base + d * B_STRIDE4 + tx];
    acc00 = outer(acc00, a0, b0);
    if (COL_BANDS > 1u) {
      let b1 = b_tile[b_base + d * B_STRIDE4 + COL_BAND4 + tx];
      acc01 = outer(acc01, a0, b1);
      if (ROW_BANDS > 1u) {
        let a1 = a_tile[a_base + d * A_STRIDE4 + ROW_BAND4 + ty];
        acc10 = outer(acc10, a1, b0);
        acc11 = outer(acc11, a1, b1);
      }
    } else if (ROW_BANDS > 1u) {
      let a1 = a_tile[a_base + d * A_STRIDE4 + ROW_BAND4 + ty];
      acc10 = outer(acc10, a1, b0);
    }
  }
}

// Fills copy 0 of both tiles with depths d0..d0+TILE_DEPTH-1, each job stored as soon as it is loaded.
fn load_tiles(row0: u32, col0: u32, d0: u32, lindex: u32, partial: bool) {
  for (var e = lindex; e < A_JOBS; e += THREADS) { stash_a(e, fetch_a(row0, d0, e, partial), 0u); }
  for (var e = lindex; e < B_JOBS; e += THREADS) { stash_b(e, fetch_b(col0, d0, e, partial), 0u); }
}

// PREFETCH: this thread's jobs (e = lindex + j·THREADS) of depths d0..d0+TILE_DEPTH-1 into a_staged and b_staged.
// The loop counts are constants of the pipeline (≤ FETCH_SLOTS), so the loops unroll and the staged values stay in
// registers; the `%` test is a constant too, and drops the bound check when the jobs divide evenly.
fn fetch_tiles(row0: u32, col0: u32, d0: u32, lindex: u32, partial: bool) {
  for (var j = 0u; j < min(A_FETCHES, FETCH_SLOTS); j++) {
    let e = lindex + j * THREADS;
    if (A_JOBS % THREADS == 0u || e < A_JOBS) { a_staged[j] = fetch_a(row0, d0, e, partial); }
  }
  for (var j = 0u; j < min(B_FETCHES, FETCH_SLOTS); j++) {
    let e = lindex + j * THREADS;
    if (B_JOBS % THREADS == 0u || e < B_JOBS) { b_staged[j] = fetch_b(col0, d0, e, partial); }
  }
}

// PREFETCH: the staged jobs into tile copy `copy`.
fn stash_tiles(lindex: u32, copy: u32) {
  for (var j = 0u; j < min(A_FETCHES, FETCH_SLOTS); j++) {
    let e = lindex + j * THREADS;
    if (A_JOBS % THREADS == 0u || e < A_JOBS) { stash_a(e, a_staged[j], copy * A_COPY4); }
  }
  for (var j = 0u; j < min(B_FETCHES, FETCH_SLOTS); j++) {
    let e = lindex + j * THREADS;
    if (B_JOBS % THREADS == 0u || e < B_JOBS) { stash_b(e, b_staged[j], copy * B_COPY4); }
  }
}

// Depths [begin, end) one step at a time: load, barrier, multiply, barrier. A partial step can only be the last.
fn reduce_in_steps(row0: u32, col0: u32, begin: u32, end: u32, tx: u32, ty: u32, lindex: u32) {
  var d0 = begin;
  for (; d0 + TILE_DEPTH <= end; d0 += TILE_DEPTH) {
    load_tiles(row0, col0, d0, lindex, false);
    workgroupBarrier();
    multiply_tiles(tx, ty, 0u);
    workgroupBarrier();
  }
  if (d0 < end) {
    load_tiles(row0, col0, d0, lindex, true);  // depths past the reduction are zeros
    workgroupBarrier();
    multiply_tiles(tx, ty, 0u);
  }
}

// PREFETCH: the step at d0 into registers, masked only if it is the partial last one (`partial` stays a constant at
// each fetch_tiles call, as in reduce_in_steps).
fn fetch_step(row0: u32, col0: u32, d0: u32, end: u32, lindex: u32) {
  if (d0 + TILE_DEPTH <= end) {
    fetch_tiles(row0, col0, d0, lindex, false);
  } else {
    fetch_tiles(row0, col0, d0, lindex, true);
  }
}

// Depths [begin, end) with the next step's global loads in flight during each multiply (see the header).
fn reduce_pipelined(row0: u32, col0: u32, begin: u32, end: u32, tx: u32, ty: u32, lindex: u32) {
  if (begin >= end) { return; }
  fetch_step(row0, col0, begin, end, lindex);
  stash_tiles(lindex, 0u);
  workgroupBarrier();
  var copy = 0u;
  var d0 = begin;
  loop {
    let next = d0 + TILE_DEPTH;
    let more = next < end;
    if (more) { fetch_step(row0, col0, next, end, lindex); }
    multiply_tiles(tx, ty, copy);
    if (!more) { break; }
    if (TILE_COPIES == 1u) {
      workgroupBarrier();  // the only copy: every thread must be done reading it before it is overwritten
    } else {
      copy = 1u - copy;    // the other copy was last read before the previous step's barrier
    }
    stash_tiles(lindex, copy);
    workgroupBarrier();
    d0 = next;
  }
}

@compute @workgroup_size(WG_COLS, WG_ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lindex: u32) {
  let depth = reduction_length();
  let row0 = wid.y * TILE_ROWS;
  let col0 = wid.x * TILE_COLS;
  split_index = wid.z;
  // This split's depths [begin, end): whole TILE_DEPTH steps, so a partial step can only be the reduction's last.
  let share = ((depth + SPLIT_K - 1u) / SPLIT_K + TILE_DEPTH - 1u) / TILE_DEPTH * TILE_DEPTH;
  let begin = min(depth, wid.z * share);
  let end = min(depth, begin + share);
  if (PIPELINED) {
    reduce_pipelined(row0, col0, begin, end, lid.x, lid.y, lindex);
  } else {
    reduce_in_steps(row0, col0, begin, end, lid.x, lid.y, lindex);
  }

  let row_a = row0 + lid.y * 4u;  // first rows of the thread's two row bands
  let row_b = row_a + ROW_BAND4 * 4u;
  let col_a = col0 + lid.x * 4u;  // first columns of the thread's two column bands
  let col_b = col_a + COL_BAND4 * 4u;
  store_chunk(acc00, row_a, col_a);
  if (COL_BANDS > 1u) { store_chunk(acc01, row_a, col_b); }
  if (ROW_BANDS > 1u) { store_chunk(acc10, row_b, col_a); }
  if (ROW_BANDS > 1u && COL_BANDS > 1u) { store_chunk(acc11, row_b, col_b); }
}
