// LoRA forward, up-projection: out (M,N) += scale · u (M,R) · bᵀ, b (N,R), added onto the base layer's output.
// The reduction is only R ≤ 64 deep, so the cost is the read-modify-write of out: a workgroup owns a TILE_ROWS ×
// TILE_COLS block of out, with one column per thread (coalesced along N) and ROWS_PER_THREAD rows in registers, and
// stages u and b in R_CHUNK slices (a single slice when R ≤ R_CHUNK).

struct Params { M: u32, N: u32, R: u32, scale: f32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> u: array<f32>;        // (M,R)
@group(0) @binding(2) var<storage, read> b: array<f32>;        // (N,R)
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // (M,N)

override TILE_COLS: u32 = 64;  // threads along N
override WG_ROWS: u32 = 4;     // threads along M
override R_CHUNK: u32 = 16;

const ROWS_PER_THREAD = 8u;
override TILE_ROWS = WG_ROWS * ROWS_PER_THREAD;  // derived; not set by the wrapper

var<workgroup> u_tile: array<f32, R_CHUNK * TILE_ROWS>;  // (R_CHUNK, TILE_ROWS): transposed
var<workgroup> b_tile: array<f32, R_CHUNK * TILE_COLS>;  // (R_CHUNK, TILE_COLS): transposed

@compute @workgroup_size(TILE_COLS, WG_ROWS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) lindex: u32) {
  let M = params.M;
  let N = params.N;
  let R = params.R;
  let row0 = wid.y * TILE_ROWS;
  let col0 = wid.x * TILE_COLS;
  let threads = TILE_COLS * WG_ROWS;

  var acc: array<f32, ROWS_PER_THREAD>;
  for (var r0 = 0u; r0 < R; r0 += R_CHUNK) {
    // u and b are both (·,R): their rows are contiguous over r.
    for (var e = lindex; e < TILE_ROWS * R_CHUNK; e += threads) {
      let row = e / R_CHUNK;
      let rr = e % R_CHUNK;
      var v = 0.0;
      if (row0 + row < M && r0 + rr < R) { v = u[(row0 + row) * R + r0 + rr]; }
      u_tile[rr * TILE_ROWS + row] = v;
    }
    for (var e = lindex; e < TILE_COLS * R_CHUNK; e += threads) {
      let c = e / R_CHUNK;
      let rr = e % R_CHUNK;
      var v = 0.0;
      if (col0 + c < N && r0 + rr < R) { v = b[(col0 + c) * R + r0 + rr]; }
      b_tile[rr * TILE_COLS + c] = v;
    }
    workgroupBarrier();
    let depth = min(R_CHUNK, R - r0);
    for (var rr = 0u; rr < depth; rr++) {
      let w = b_tile[rr * TILE_COLS + lid.x];
      for (var i = 0u; i < ROWS_PER_THREAD; i++) {
        acc[i] = fma(u_tile[rr * TILE_ROWS + lid.y + i * WG_ROWS], w, acc[i]);
      }
    }
    workgroupBarrier();
  }

  let col = col0 + lid.x;
  for (var i = 0u; i < ROWS_PER_THREAD; i++) {
    let row = row0 + lid.y + i * WG_ROWS;
    if (row < M && col < N) { out[row * N + col] += params.scale * acc[i]; }
  }
}
