// Linear layer backward, bias gradient: dbias (N) += column sums of dout (M,N). Parameter gradients accumulate.
// A workgroup owns COLS columns; its LANES rows of threads stride down M (consecutive threads read consecutive
// columns), then the LANES partial sums of each column are added in workgroup memory.

struct Params { M: u32, N: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> dout: array<f32>;       // (M,N)
@group(0) @binding(2) var<storage, read_write> dbias: array<f32>; // (N)

override COLS: u32 = 64;
override LANES: u32 = 4;

var<workgroup> partial: array<f32, LANES * COLS>;  // (LANES, COLS)

@compute @workgroup_size(COLS, LANES)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u,
        @builtin(local_invocation_id) lid: vec3u) {
  let M = params.M;
  let N = params.N;
  let col = (wid.x + wid.y * groups.x) * COLS + lid.x;
  var sum = 0.0;
  if (col < N) {
    for (var m = lid.y; m < M; m += LANES) { sum += dout[m * N + col]; }
  }
  partial[lid.y * COLS + lid.x] = sum;
  workgroupBarrier();
  if (lid.y == 0u && col < N) {
    var total = 0.0;
    for (var lane = 0u; lane < LANES; lane++) { total += partial[lane * COLS + lid.x]; }
    dbias[col] += total;
  }
}
